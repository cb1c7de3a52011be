#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "interp/error.h"

namespace interp {

void check_replaceable(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;  // nothing there (or unreachable: open() will say)
  if (S_ISREG(st.st_mode)) return;
  const char* what = S_ISDIR(st.st_mode)    ? "a folder"
                     : S_ISLNK(st.st_mode)  ? "a symbolic link"
                     : S_ISFIFO(st.st_mode) ? "a FIFO"
                     : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device"
                     : S_ISSOCK(st.st_mode) ? "a socket"
                                            : "not a regular file";
  throw Error(fmt::format("{}: is {}; interp writes its outputs as regular files and replaces only regular files: "
                          "choose another path",
                          path, what));
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  check_replaceable(path_);
  tmp_ = fmt::format("{}.tmp.{}", path_, ::getpid());
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw Error(fmt::format("{}: cannot create ({}); check that the folder exists and is writable", tmp_,
                            std::strerror(errno)));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
  hash_.update(data, n);
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      throw Error(fmt::format("{}: write failed ({}){}; nothing was written to {}", tmp_, std::strerror(e),
                              e == ENOSPC || e == EFBIG || e == EDQUOT ? ": the disk, quota or file-size limit is full" : "",
                              path_));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void AtomicFile::commit() {
  if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
    fd_ = -1;
    throw Error(fmt::format("{}: flush failed ({}); nothing was written to {}", tmp_, std::strerror(errno), path_));
  }
  fd_ = -1;
  check_replaceable(path_);  // again: something may have appeared there while we wrote
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
    throw Error(fmt::format("{}: cannot rename into place ({})", path_, std::strerror(errno)));
  committed_ = true;
}

}  // namespace interp
