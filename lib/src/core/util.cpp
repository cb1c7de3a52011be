#include "interp/util.h"

#include <atomic>
#include <cstring>
#include <sstream>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <unistd.h>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include "interp/error.h"
#include "io/atomic_file.h"

namespace interp {
namespace {

constexpr uint64_t P1 = 11400714785074694791ULL, P2 = 14029467366897019727ULL, P3 = 1609587929392839161ULL,
                   P4 = 9650029242287828579ULL, P5 = 2870177450012600261ULL;

inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t read64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;  // little-endian hosts (x86-64, aarch64)
}
inline uint32_t read32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t round(uint64_t acc, uint64_t input) { return rotl(acc + input * P2, 31) * P1; }
inline uint64_t merge(uint64_t acc, uint64_t val) { return (acc ^ round(0, val)) * P1 + P4; }

}  // namespace

Xxh64::Xxh64(uint64_t seed) : v_{seed + P1 + P2, seed + P2, seed, seed - P1}, seed_(seed) {}

void Xxh64::update(const void* data, size_t n) {
  if (n == 0) return;  // (data may then be null: memcpy's arguments must not be)
  const auto* p = static_cast<const unsigned char*>(data);
  total_ += n;
  if (buffered_ + n < 32) {
    std::memcpy(buf_ + buffered_, p, n);
    buffered_ += n;
    return;
  }
  if (buffered_) {
    size_t take = 32 - buffered_;
    std::memcpy(buf_ + buffered_, p, take);
    for (int i = 0; i < 4; ++i) v_[i] = round(v_[i], read64(buf_ + 8 * i));
    p += take;
    n -= take;
    buffered_ = 0;
  }
  while (n >= 32) {
    for (int i = 0; i < 4; ++i) v_[i] = round(v_[i], read64(p + 8 * i));
    p += 32;
    n -= 32;
  }
  std::memcpy(buf_, p, n);
  buffered_ = n;
}

uint64_t Xxh64::digest() const {
  uint64_t h;
  if (total_ >= 32) {
    h = rotl(v_[0], 1) + rotl(v_[1], 7) + rotl(v_[2], 12) + rotl(v_[3], 18);
    for (int i = 0; i < 4; ++i) h = merge(h, v_[i]);
  } else {
    h = seed_ + P5;
  }
  h += total_;
  const unsigned char* p = buf_;
  size_t n = buffered_;
  while (n >= 8) {
    h ^= round(0, read64(p));
    h = rotl(h, 27) * P1 + P4;
    p += 8;
    n -= 8;
  }
  if (n >= 4) {
    h ^= static_cast<uint64_t>(read32(p)) * P1;
    h = rotl(h, 23) * P2 + P3;
    p += 4;
    n -= 4;
  }
  while (n--) {
    h ^= (*p++) * P5;
    h = rotl(h, 11) * P1;
  }
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  h *= P3;
  h ^= h >> 32;
  return h;
}

uint64_t xxh64(const void* data, size_t n, uint64_t seed) {
  Xxh64 h(seed);
  h.update(data, n);
  return h.digest();
}

uint64_t xxh64_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open ({})", path, std::strerror(errno)));
  Xxh64 h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(buf.data(), static_cast<size_t>(in.gcount()));
  }
  return h.digest();
}

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }

uint64_t Rng::next() {  // splitmix64
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Rng::below(uint64_t n) {
  uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do x = next();
  while (x >= limit);
  return x % n;
}

std::vector<int64_t> Rng::permutation(int64_t n) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = i;
  shuffle(p);
  return p;
}

namespace {
std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free, "request_stop must be async-signal-safe");
}  // namespace

void request_stop() { g_stop.store(true); }
bool stop_requested() { return g_stop.load(); }
void clear_stop_request() { g_stop.store(false); }

void write_text_file(const std::string& path, const std::string& text) {
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

Progress::Progress(int64_t total, std::string what, bool on) : total_(total), what_(std::move(what)), on_(on) {
  start_ = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void Progress::update(int64_t done) {
  if (!on_) return;
  double now = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  if (done < total_ && (now - last_ < 0.5 || now - start_ < 0.5)) return;  // no rate from a first instant
  // Not a terminal (a log, CI): a whole line per tenth of the way, not a `\r` every half second.
  const bool tty = isatty(fileno(stderr));
  const int64_t tenth = total_ > 0 ? done * 10 / total_ : 10;
  if (!tty && done < total_ && tenth <= shown_tenth_) return;
  shown_tenth_ = tenth;
  last_ = now;
  double rate = done / std::max(now - start_, 1e-9);
  std::fprintf(stderr, "%s%s: %lld/%lld  %.1f/s  ETA %.0fs%s", tty ? "\r" : "", what_.c_str(),
               static_cast<long long>(done), static_cast<long long>(total_), rate,
               (total_ - done) / std::max(rate, 1e-9), tty ? "   " : "\n");
  printed_ = tty;
}

void Progress::finish() {
  if (on_ && printed_) std::fprintf(stderr, "\n");
  printed_ = false;
}

std::string error_summary(const std::string& what, size_t max_chars) {
  std::string last;
  std::istringstream in(what);
  for (std::string line; std::getline(in, line);) {
    size_t a = line.find_first_not_of(" \t\r"), b = line.find_last_not_of(" \t\r");
    if (a != std::string::npos) last = line.substr(a, b - a + 1);
  }
  for (const char* prefix : {"RuntimeError: ", "Error: "})
    if (last.rfind(prefix, 0) == 0) last = last.substr(std::strlen(prefix));
  if (last.size() > max_chars) last = last.substr(0, max_chars - 3) + "...";
  return last;
}

}  // namespace interp
