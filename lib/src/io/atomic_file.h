// Internal: write a file under a temporary name and rename it into place on commit(), so readers
// never see a half-written file and a failure leaves the old file (if any) untouched. Only a
// regular file (or nothing) at the final path is replaced: a folder, link, FIFO or device there is
// an interp::Error. A program that writes big files should ignore SIGXFSZ (the CLI does), so a
// file-size limit is a write error here rather than a kill.
#pragma once

#include <cstddef>
#include <string>

#include "interp/util.h"

namespace interp {

// What is at `path` must be nothing or a regular file: renaming over a device node, a FIFO, a
// folder or a symbolic link would replace it (as root, /dev/null would become a file). Throws
// interp::Error saying which it is.
void check_replaceable(const std::string& path);

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);  // opens PATH.tmp.PID; throws interp::Error (also: PATH not a regular file)
  ~AtomicFile();                          // removes the temporary file unless committed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);  // throws interp::Error (disk full, ...)
  void commit();                           // flush, fsync, rename over PATH
  uint64_t xxh64() const { return hash_.digest(); }  // of everything written so far

 private:
  Xxh64 hash_;
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace interp
