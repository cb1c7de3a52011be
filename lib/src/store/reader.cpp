#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include "interp/error.h"
#include "interp/store.h"
#include "interp/util.h"
#include "store/manifest.h"

namespace interp {
namespace fs = std::filesystem;
using json = nlohmann::json;

ActivationStore ActivationStore::open(const std::string& dir) {
  const json m = store_detail::read_manifest(dir);  // validated: field types and integer ranges
  ActivationStore s;
  s.dir_ = dir;
  s.manifest_text_ = m.dump(2);
  try {
    using store_detail::json_int;
    s.ctx_ = json_int(m.at("ctx"), "ctx", 1);
    s.dtype_ = m.at("dtype").get<std::string>();
    if (s.dtype_ != "f32" && s.dtype_ != "f16" && s.dtype_ != "bf16")
      throw Error(fmt::format("{}/manifest.json: dtype '{}' is not f32, f16 or bf16", dir, s.dtype_));
    s.complete_ = m.at("complete").get<bool>();
    for (const auto& h : m.at("hooks")) {
      std::vector<int64_t> shape;
      for (const auto& d : h.at("shape")) shape.push_back(json_int(d, "a hook's shape entry"));
      s.hooks_.push_back({h.at("name").get<std::string>(), shape});
    }
    for (const auto& sh : m.at("shards"))
      s.shards_.push_back({sh.at("file").get<std::string>(), json_int(sh.at("first_context"), "first_context"),
                           json_int(sh.at("contexts"), "contexts", 1), json_int(sh.at("bytes"), "bytes"),
                           sh.at("xxh64").get<std::string>()});
    if (m.contains("tokenizer") && m.at("tokenizer").is_string()) s.tokenizer_ = m.at("tokenizer").get<std::string>();
    if (m.contains("tag_names")) s.tag_names_ = m.at("tag_names").get<std::vector<std::string>>();
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}/manifest.json: mismatched manifest: {}", dir, e.what()));
  }
  for (auto& h : s.hooks_) h.per_token = !h.shape.empty() && h.shape[0] == s.ctx_;
  for (const auto& sh : s.shards_) {
    std::error_code ec;
    fs::path p = fs::path(dir) / sh.file;
    if (!fs::exists(p, ec))
      throw Error(fmt::format("{}: shard {} is missing; the store is incomplete", dir, sh.file));
    auto size = static_cast<int64_t>(fs::file_size(p, ec));
    if (size != sh.bytes)
      throw Error(fmt::format("{}: shard {} has {} bytes but the manifest says {}; truncated or replaced", dir, sh.file,
                              size, sh.bytes));
  }
  return s;
}

const StoreHook& ActivationStore::hook(const std::string& name) const {
  for (const auto& h : hooks_)
    if (h.name == name) return h;
  std::vector<std::string> names;
  for (const auto& h : hooks_) names.push_back(h.name);
  throw Error(fmt::format("{}: the store has no hook '{}'; it holds {}", dir_, name, fmt::join(names, ", ")));
}

int64_t ActivationStore::n_contexts() const {
  int64_t n = 0;
  for (const auto& s : shards_) n += s.contexts;
  return n;
}

SafetensorsFile ActivationStore::read_shard(int64_t i, bool verify) const {
  if (i < 0 || i >= static_cast<int64_t>(shards_.size()))
    throw Error(fmt::format("{}: shard {} does not exist (the store has {})", dir_, i, shards_.size()));
  const StoreShard& sh = shards_[static_cast<size_t>(i)];
  const std::string path = (fs::path(dir_) / sh.file).string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open ({})", path, std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string bytes = ss.str();
  if (static_cast<int64_t>(bytes.size()) != sh.bytes)
    throw Error(fmt::format("{}: shard {} has {} bytes but the manifest says {}; truncated or replaced", dir_, sh.file,
                            bytes.size(), sh.bytes));
  if (verify) {
    std::string got = hex64(xxh64(bytes.data(), bytes.size()));
    if (got != sh.xxh64)
      throw Error(fmt::format("{}: shard {} is corrupt (xxh64 {} but the manifest says {})", dir_, sh.file, got, sh.xxh64));
  }
  SafetensorsFile f = safetensors_parse(bytes, path);
  // Shapes and dtypes as the manifest says: the loader copies rows as raw bytes of the manifest's
  // dtype, so another dtype would be read as wrong numbers, not an error.
  const at::ScalarType stored = dtype_ == "f16" ? at::kHalf : dtype_ == "bf16" ? at::kBFloat16 : at::kFloat;
  auto expect = [&](const std::string& name, std::vector<int64_t> shape, at::ScalarType dtype) {
    auto it = f.tensors.find(name);
    if (it == f.tensors.end()) throw Error(fmt::format("{}: shard lacks tensor '{}' that the manifest lists", path, name));
    shape.insert(shape.begin(), sh.contexts);
    if (it->second.sizes().vec() != shape)
      throw Error(fmt::format("{}: tensor '{}' has shape {} but the manifest implies [{}]", path, name,
                              fmt::format("{}", it->second.sizes()), fmt::join(shape, ", ")));
    if (it->second.scalar_type() != dtype)
      throw Error(fmt::format("{}: tensor '{}' is {} but the manifest says {}; the shard does not belong to this store",
                              path, name, c10::toString(it->second.scalar_type()), c10::toString(dtype)));
  };
  expect("tokens", {ctx_}, at::kInt);
  for (const auto& h : hooks_) expect(h.name, h.shape, stored);
  return f;
}

at::Tensor ActivationStore::shard_rows(int64_t i, const std::string& name, bool verify) const {
  const StoreHook& h = hook(name);
  if (!h.per_token)
    throw Error(fmt::format("{}: hook '{}' is stored per context with shape [{}]; it has no per-token rows", dir_, name,
                            fmt::join(h.shape, ", ")));
  at::Tensor t = read_shard(i, verify).tensors.at(name);
  std::vector<int64_t> rows = {t.size(0) * t.size(1)};
  for (int64_t d = 2; d < t.dim(); ++d) rows.push_back(t.size(d));
  return t.reshape(rows);
}

void ActivationStore::verify(const std::function<void(int64_t, int64_t)>& progress) const {
  for (size_t i = 0; i < shards_.size(); ++i) {
    read_shard(static_cast<int64_t>(i), true);
    if (progress) progress(static_cast<int64_t>(i) + 1, static_cast<int64_t>(shards_.size()));
  }
}

// ---------------------------------------------------------------------------------------------

struct ActivationLoader::State {
  const ActivationStore& store;
  std::string hook;
  LoaderOptions o;
  std::vector<int64_t> row_shape;
  at::ScalarType dtype = at::kFloat;
  size_t row_bytes = 0;
  int64_t cap = 1;
  // per epoch
  int epoch = 0;
  bool started = false;
  Rng rng{0};
  std::vector<int64_t> shard_order;
  size_t next_shard = 0;
  at::Tensor pending;  // rows of the shard being drawn from
  int64_t pending_pos = 0, pending_first = 0;
  std::vector<char> buf;
  std::vector<int64_t> buf_index;
  int64_t n = 0;

  State(const ActivationStore& s, std::string h, const LoaderOptions& opt) : store(s), hook(std::move(h)), o(opt) {}

  // Copies the next row of the epoch into dst; false when the epoch has no rows left.
  bool pull(char* dst, int64_t* index) {
    while (!pending.defined() || pending_pos == pending.size(0)) {
      if (next_shard == shard_order.size()) return false;
      int64_t s = shard_order[next_shard++];
      pending = store.shard_rows(s, hook, o.verify).contiguous();
      pending_pos = 0;
      pending_first = store.shards()[static_cast<size_t>(s)].first_context * store.ctx();
    }
    std::memcpy(dst, static_cast<const char*>(pending.data_ptr()) + pending_pos * row_bytes, row_bytes);
    *index = pending_first + pending_pos;
    ++pending_pos;
    return true;
  }
};

ActivationLoader::ActivationLoader(const ActivationStore& store, const std::string& hook, const LoaderOptions& o)
    : s_(std::make_unique<State>(store, hook, o)) {
  const StoreHook& h = store.hook(hook);
  if (!h.per_token)
    throw Error(fmt::format("{}: hook '{}' is stored per context with shape [{}]; the loader streams per-token rows",
                            store.dir(), hook, fmt::join(h.shape, ", ")));
  if (o.batch_size < 1) throw Error(fmt::format("loader: batch size {} must be at least 1", o.batch_size));
  if (o.epochs < 1) throw Error(fmt::format("loader: epochs {} must be at least 1", o.epochs));
  if (store.shards().empty()) throw Error(fmt::format("{}: the store has no shards", store.dir()));
  s_->row_shape.assign(h.shape.begin() + 1, h.shape.end());
  s_->dtype = store.dtype() == "f16" ? at::kHalf : store.dtype() == "bf16" ? at::kBFloat16 : at::kFloat;
  int64_t numel = 1;
  for (int64_t d : s_->row_shape) numel *= d;
  s_->row_bytes = static_cast<size_t>(numel) * c10::elementSize(s_->dtype);
  s_->cap = std::max<int64_t>(1, o.shuffle_buffer);
  s_->buf.resize(static_cast<size_t>(s_->cap) * s_->row_bytes);
  s_->buf_index.resize(static_cast<size_t>(s_->cap));
}

ActivationLoader::~ActivationLoader() = default;

int64_t ActivationLoader::rows_per_epoch() const { return s_->store.n_tokens(); }

std::optional<ActivationLoader::Batch> ActivationLoader::next() {
  State& s = *s_;
  while (s.epoch < s.o.epochs) {
    if (!s.started) {  // a new epoch: shard order and row draws from the seed and the epoch number
      const auto n_shards = static_cast<int64_t>(s.store.shards().size());
      s.rng = Rng(s.o.seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(s.epoch) + 1);
      s.shard_order.resize(static_cast<size_t>(n_shards));
      std::iota(s.shard_order.begin(), s.shard_order.end(), int64_t{0});
      if (s.o.shuffle_buffer > 0) s.rng.shuffle(s.shard_order);
      s.next_shard = 0;
      s.pending = at::Tensor();
      s.n = 0;
      while (s.n < s.cap && s.pull(s.buf.data() + s.n * s.row_bytes, &s.buf_index[static_cast<size_t>(s.n)])) ++s.n;
      s.started = true;
    }
    if (s.n == 0) {
      ++s.epoch;
      s.started = false;
      continue;
    }
    std::vector<int64_t> shape = {s.o.batch_size};
    shape.insert(shape.end(), s.row_shape.begin(), s.row_shape.end());
    at::Tensor out = at::empty(shape, at::TensorOptions().dtype(s.dtype));
    at::Tensor index = at::empty({s.o.batch_size}, at::kLong);
    auto* dst = static_cast<char*>(out.data_ptr());
    auto* idx = index.data_ptr<int64_t>();
    int64_t k = 0;
    const bool shuffle = s.o.shuffle_buffer > 0;
    while (k < s.o.batch_size && s.n > 0) {
      int64_t j = shuffle ? static_cast<int64_t>(s.rng.below(static_cast<uint64_t>(s.n))) : 0;
      char* slot = s.buf.data() + j * s.row_bytes;
      std::memcpy(dst + k * s.row_bytes, slot, s.row_bytes);
      idx[k] = s.buf_index[static_cast<size_t>(j)];
      ++k;
      if (!s.pull(slot, &s.buf_index[static_cast<size_t>(j)])) {  // nothing left to refill: shrink
        --s.n;
        std::memcpy(slot, s.buf.data() + s.n * s.row_bytes, s.row_bytes);
        s.buf_index[static_cast<size_t>(j)] = s.buf_index[static_cast<size_t>(s.n)];
      }
    }
    Batch b;
    b.acts = out.narrow(0, 0, k).to(at::kFloat);
    b.index = index.narrow(0, 0, k);
    b.epoch = s.epoch;
    return b;
  }
  return std::nullopt;
}

}  // namespace interp
