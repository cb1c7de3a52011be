// interp/util.h: small deterministic building blocks shared by the data pipeline.
//
// xxh64: the XXH64 hash (checksums of shards, identities of model/tokenizer/corpus files).
// Rng: a seeded generator (splitmix64) whose sequence is the same on every platform, with
// shuffle() (Fisher-Yates): std::shuffle and std::uniform_int_distribution are implementation-
// defined, so a "deterministic by seed" data order cannot use them.
//
//   uint64_t h = interp::xxh64(bytes.data(), bytes.size());
//   interp::Rng rng(42); auto perm = rng.permutation(10);
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace interp {

uint64_t xxh64(const void* data, size_t n, uint64_t seed = 0);

// Streaming XXH64, for files too large to hold.
class Xxh64 {
 public:
  explicit Xxh64(uint64_t seed = 0);
  void update(const void* data, size_t n);
  uint64_t digest() const;

 private:
  uint64_t v_[4];
  uint64_t total_ = 0;
  unsigned char buf_[32];
  size_t buffered_ = 0;
  uint64_t seed_;
};

// One "\rwhat: done/total  rate/s  ETA" line on stderr, at most twice a second, on a terminal; a
// whole line per tenth of the way otherwise (logs, CI). Nothing when off.
class Progress {
 public:
  Progress(int64_t total, std::string what, bool on);
  void update(int64_t done);
  void finish();  // ends the line (if anything was printed)

 private:
  int64_t total_;
  std::string what_;
  bool on_, printed_ = false;
  double start_, last_ = -1;
  int64_t shown_tenth_ = -1;
};

// A stop asked for from outside the job (the CLI's SIGINT/SIGTERM handler, or a host program's
// thread): capture and SAE training check it at their safe points (a shard committed, a step done)
// and stop there with their state saved, throwing an interp::Error that says how to resume.
// request_stop() is async-signal-safe.
void request_stop();
bool stop_requested();
void clear_stop_request();

uint64_t xxh64_file(const std::string& path);  // throws interp::Error
std::string hex64(uint64_t v);                 // 16 lowercase hex digits

// One line of a long error message for a report: a TorchScript interpreter error ends with the
// error itself after its tracebacks ("RuntimeError: The size of tensor a (5) must match ..."), so
// the last non-empty line, without the "RuntimeError: " prefix, cut to `max_chars`.
std::string error_summary(const std::string& what, size_t max_chars = 200);

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next();
  uint64_t below(uint64_t n);  // uniform in [0, n), n > 0 (rejection sampling, no modulo bias)
  std::vector<int64_t> permutation(int64_t n);
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }

 private:
  uint64_t state_;
};

// Writes `text` to `path` atomically (temporary file, fsync, rename): readers never see half a file.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace interp
