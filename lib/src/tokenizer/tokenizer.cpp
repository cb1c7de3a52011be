#include "interp/tokenizer.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <filesystem>
#include <mutex>

#include "interp/error.h"
#include "interp/util.h"

// AddressSanitizer refuses RTLD_DEEPBIND (it would bypass its interceptors), and without it the
// shim's protobuf binds to LibTorch's and crashes on load. Sanitizer builds load the shim into a
// link namespace of its own instead (dlmopen(LM_ID_NEWLM)): its libraries, protobuf and C++ runtime
// are separate copies there, not instrumented; the C interface passes only plain data and buffers
// the shim frees itself (see docs/reliability.md).
#if defined(__SANITIZE_ADDRESS__)
#define INTERP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define INTERP_ASAN 1
#endif
#endif
#ifndef INTERP_ASAN
constexpr int kDeepBind = RTLD_DEEPBIND;
#endif

namespace interp {
namespace {

// The shim's C interface (lib/src/tokenizer/spm_shim.cpp).
struct Shim {
  int (*abi_version)();
  void* (*load)(const char*, char*, int);
  void (*free_model)(void*);
  int (*info)(void*, int);
  int (*encode)(void*, const char*, size_t, int**, unsigned**, unsigned**);
  int (*decode)(void*, const int*, int, char**, char*, int);
  int (*piece)(void*, int, char**);
  void (*free_buf)(void*);
};

template <class F>
void bind(void* lib, const char* name, F& f, const std::string& path) {
  void* sym = dlsym(lib, name);
  if (!sym) throw Error(fmt::format("{}: missing symbol {}; rebuild interp", path, name));
  f = reinterpret_cast<F>(sym);
}

const Shim& shim() {
  static std::once_flag once;
  static Shim s;
  static std::string failure;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("INTERP_SPM_SHIM")) candidates.push_back(env);
    candidates.push_back(INTERP_SPM_BUILD_PATH);
    candidates.push_back(INTERP_SPM_INSTALL_PATH);
    std::vector<std::string> tried;
    for (const auto& path : candidates) {
      std::error_code ec;
      if (!std::filesystem::exists(path, ec)) {
        tried.push_back(path + " (absent)");
        continue;
      }
      // RTLD_DEEPBIND: the shim and libsentencepiece resolve symbols in their own dependencies
      // first, not in LibTorch's protobuf already loaded in this process.
#ifdef INTERP_ASAN
      void* lib = dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
#else
      void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | kDeepBind);
#endif
      if (!lib) {
        tried.push_back(fmt::format("{} ({})", path, dlerror()));
        continue;
      }
      try {
        bind(lib, "interp_spm_abi_version", s.abi_version, path);
        bind(lib, "interp_spm_load", s.load, path);
        bind(lib, "interp_spm_free", s.free_model, path);
        bind(lib, "interp_spm_info", s.info, path);
        bind(lib, "interp_spm_encode", s.encode, path);
        bind(lib, "interp_spm_decode", s.decode, path);
        bind(lib, "interp_spm_piece", s.piece, path);
        bind(lib, "interp_spm_free_buf", s.free_buf, path);
      } catch (const Error& e) {
        tried.push_back(e.what());
        continue;
      }
      if (s.abi_version() == 1) return;
      tried.push_back(path + " (another interp version)");
    }
    failure = fmt::format(
        "sentencepiece support library libinterp_spm.so not found or not loadable; tried: {}. Set "
        "INTERP_SPM_SHIM=/path/to/libinterp_spm.so",
        fmt::join(tried, "; "));
  });
  if (!failure.empty()) throw Error(failure);
  return s;
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw Error(fmt::format("{}: no such tokenizer file; train one with `interp tokenizer train`", path));
  const Shim& s = shim();
  char err[1024] = {0};
  void* h = s.load(path.c_str(), err, sizeof err);
  if (!h) throw Error(fmt::format("{}: not a sentencepiece model ({})", path, err));
  Tokenizer t;
  t.handle_ = std::shared_ptr<void>(h, [free = s.free_model](void* p) { free(p); });
  t.path_ = path;
  t.hash_ = hex64(xxh64_file(path));
  t.vocab_size_ = s.info(h, 0);
  t.bos_ = s.info(h, 1);
  t.eos_ = s.info(h, 2);
  t.pad_ = s.info(h, 3);
  t.unk_ = s.info(h, 4);
  return t;
}

std::vector<Tokenizer::Piece> Tokenizer::encode_with_offsets(std::string_view text) const {
  const Shim& s = shim();
  int* ids = nullptr;
  unsigned *begins = nullptr, *ends = nullptr;
  int n = s.encode(handle_.get(), text.data(), text.size(), &ids, &begins, &ends);
  std::vector<Piece> out(static_cast<size_t>(std::max(n, 0)));
  for (int i = 0; i < n; ++i) out[static_cast<size_t>(i)] = {ids[i], begins[i], ends[i]};
  s.free_buf(ids);
  s.free_buf(begins);
  s.free_buf(ends);
  return out;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  for (const auto& p : encode_with_offsets(text)) ids.push_back(p.id);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  for (int32_t id : ids)
    if (id < 0 || id >= vocab_size_)
      throw Error(fmt::format("token id {} is outside the vocabulary of {} ({})", id, vocab_size_, path_));
  const Shim& s = shim();
  char* out = nullptr;
  char err[1024] = {0};
  int n = s.decode(handle_.get(), ids.data(), static_cast<int>(ids.size()), &out, err, sizeof err);
  if (n < 0) throw Error(fmt::format("{}: decode failed ({})", path_, err));
  std::string text(out, static_cast<size_t>(n));
  s.free_buf(out);
  return text;
}

std::string Tokenizer::piece(int32_t id) const {
  if (id < 0 || id >= vocab_size_)
    throw Error(fmt::format("token id {} is outside the vocabulary of {} ({})", id, vocab_size_, path_));
  const Shim& s = shim();
  char* out = nullptr;
  int n = s.piece(handle_.get(), id, &out);
  std::string p(out, static_cast<size_t>(n));
  s.free_buf(out);
  return p;
}

void tokenizer_train(const TokenizerTrainOptions& o) {
  if (o.inputs.empty()) throw Error("tokenizer train: no input files");
  for (const auto& in : o.inputs) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(in, ec)) throw Error(fmt::format("{}: no such input file", in));
  }
  if (o.model_prefix.empty()) throw Error("tokenizer train: no output prefix");
  if (o.vocab_size < 16) throw Error(fmt::format("tokenizer train: vocabulary size {} is too small", o.vocab_size));
  // Debian's spm_train (package sentencepiece) in a subprocess; see spm_shim.cpp for why.
  std::vector<std::string> args = {
      "spm_train",
      fmt::format("--input={}", fmt::join(o.inputs, ",")),
      fmt::format("--model_prefix={}", o.model_prefix),
      fmt::format("--vocab_size={}", o.vocab_size),
      fmt::format("--model_type={}", o.model_type),
      fmt::format("--character_coverage={}", o.character_coverage),
      fmt::format("--input_sentence_size={}", o.input_sentence_size),
      "--shuffle_input_sentence=true",
      fmt::format("--num_threads={}", o.threads),
      fmt::format("--random_seed={}", o.seed),
      "--unk_id=0", "--bos_id=1", "--eos_id=2", "--pad_id=-1", "--byte_fallback=true", "--minloglevel=1"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string log = o.model_prefix + ".train.log";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid;
  int rc = posix_spawnp(&pid, "spm_train", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0)
    throw Error(fmt::format("cannot run spm_train ({}); install Debian's sentencepiece package", std::strerror(rc)));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  std::remove(log.c_str());
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string out = text.str();
    if (out.size() > 1500) out = "..." + out.substr(out.size() - 1500);
    throw Error(fmt::format("spm_train failed (exit {}):\n{}", WIFEXITED(status) ? WEXITSTATUS(status) : -1, out));
  }
}

}  // namespace interp
