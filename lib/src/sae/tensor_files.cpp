// Activations made by other tools: plain safetensors or .npy files holding one [rows, d_in] (or
// [n, ctx, d_in]) tensor, streamed in chunks (memory bounded by the shuffle buffer), shuffled with a
// seeded buffer, epochs repeating. Only headers are parsed up front.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "interp/error.h"
#include "interp/sae_train.h"
#include "interp/util.h"
#include "sae/buffered_source.h"

namespace interp {
namespace fs = std::filesystem;

namespace {

struct TensorFile {
  std::string path;
  uint64_t offset = 0;       // first byte of the data
  at::ScalarType dtype = at::kFloat;
  int64_t rows = 0, d = 0;   // viewed as [rows, d]
};

at::ScalarType safetensors_dtype(const std::string& s, const std::string& where) {
  if (s == "F32") return at::kFloat;
  if (s == "F16") return at::kHalf;
  if (s == "BF16") return at::kBFloat16;
  if (s == "F64") return at::kDouble;
  throw Error(fmt::format("{}: dtype {} is not a float type; activations are F32, F16, BF16 or F64", where, s));
}

void set_shape(TensorFile& t, const std::vector<int64_t>& shape, const std::string& where) {
  if (shape.size() != 2 && shape.size() != 3)
    throw Error(fmt::format("{}: the tensor is [{}]; activations are [rows, d_in] or [n, ctx, d_in]", where,
                            fmt::join(shape, ", ")));
  t.d = shape.back();
  t.rows = shape[0] * (shape.size() == 3 ? shape[1] : 1);
  if (t.d < 1 || t.rows < 1) throw Error(fmt::format("{}: the tensor is empty ([{}])", where, fmt::join(shape, ", ")));
}

TensorFile read_safetensors_header(const std::string& path, const std::string& name) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot read", path));
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  const auto size = fs::file_size(path);
  if (!in || n > size - 8 || n > (uint64_t{100} << 20))
    throw Error(fmt::format("{}: not a safetensors file (header length {})", path, n));
  std::string header(n, '\0');
  in.read(header.data(), static_cast<std::streamsize>(n));
  nlohmann::json j = nlohmann::json::parse(header, nullptr, false);
  if (!in || !j.is_object()) throw Error(fmt::format("{}: not a safetensors file (bad header)", path));
  std::vector<std::string> names;
  for (const auto& [k, v] : j.items())
    if (k != "__metadata__") names.push_back(k);
  std::string pick = name;
  if (pick.empty()) {
    if (names.size() != 1)
      throw Error(fmt::format("{} holds {} tensors ({}); name the activations with --hook", path, names.size(),
                              fmt::join(names, ", ")));
    pick = names[0];
  }
  if (!j.contains(pick))
    throw Error(fmt::format("{} has no tensor '{}' (it holds {})", path, pick, fmt::join(names, ", ")));
  const auto& t = j[pick];
  TensorFile f;
  f.path = path;
  try {
    f.dtype = safetensors_dtype(t.at("dtype").get<std::string>(), path);
    set_shape(f, t.at("shape").get<std::vector<int64_t>>(), path + ": " + pick);
    auto off = t.at("data_offsets").get<std::vector<uint64_t>>();
    if (off.size() != 2) throw Error(fmt::format("{}: bad data_offsets for '{}'", path, pick));
    f.offset = 8 + n + off[0];
    const uint64_t bytes = static_cast<uint64_t>(f.rows * f.d) * c10::elementSize(f.dtype);
    if (off[1] - off[0] != bytes || f.offset + bytes > size)
      throw Error(fmt::format("{}: '{}' does not fit its data offsets or the file", path, pick));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: bad header entry for '{}' ({})", path, pick, e.what()));
  }
  return f;
}

// .npy (format 1.0/2.0/3.0): magic, version, header length, a Python dict literal
// {'descr': '<f4', 'fortran_order': False, 'shape': (n, d), }.
TensorFile read_npy_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot read", path));
  char magic[8];
  in.read(magic, 8);
  if (!in || std::string(magic, 6) != "\x93NUMPY")
    throw Error(fmt::format("{}: not a .npy file (no \\x93NUMPY magic)", path));
  uint32_t hlen = 0;
  const int major = static_cast<unsigned char>(magic[6]);
  if (major == 1) {
    uint16_t h16 = 0;
    in.read(reinterpret_cast<char*>(&h16), 2);
    hlen = h16;
  } else {
    in.read(reinterpret_cast<char*>(&hlen), 4);
  }
  if (!in || hlen > (1u << 20)) throw Error(fmt::format("{}: bad .npy header length", path));
  std::string h(hlen, '\0');
  in.read(h.data(), hlen);
  if (!in) throw Error(fmt::format("{}: truncated .npy header", path));
  auto field = [&](const std::string& key) -> std::string {
    auto at = h.find("'" + key + "'");
    if (at == std::string::npos) throw Error(fmt::format("{}: .npy header lacks '{}'", path, key));
    auto colon = h.find(':', at);
    if (colon == std::string::npos) throw Error(fmt::format("{}: bad .npy header", path));
    return h.substr(colon + 1);
  };
  std::string descr = field("descr");
  auto q1 = descr.find('\''), q2 = descr.find('\'', q1 + 1);
  if (q1 == std::string::npos || q2 == std::string::npos) throw Error(fmt::format("{}: bad .npy descr", path));
  descr = descr.substr(q1 + 1, q2 - q1 - 1);
  TensorFile f;
  f.path = path;
  if (descr == "<f4") f.dtype = at::kFloat;
  else if (descr == "<f2") f.dtype = at::kHalf;
  else if (descr == "<f8") f.dtype = at::kDouble;
  else throw Error(fmt::format("{}: .npy dtype '{}' is not little-endian float (<f4, <f2, <f8)", path, descr));
  std::string fortran = field("fortran_order");
  if (fortran.find("True") < fortran.find(','))
    throw Error(fmt::format("{}: Fortran-ordered .npy; save it C-ordered (np.ascontiguousarray)", path));
  std::string shape = field("shape");
  auto o = shape.find('('), c = shape.find(')');
  if (o == std::string::npos || c == std::string::npos || c < o) throw Error(fmt::format("{}: bad .npy shape", path));
  std::vector<int64_t> dims;
  std::string inside = shape.substr(o + 1, c - o - 1);
  for (size_t p = 0; p < inside.size();) {
    size_t e = inside.find(',', p);
    std::string part = inside.substr(p, e == std::string::npos ? std::string::npos : e - p);
    part.erase(std::remove(part.begin(), part.end(), ' '), part.end());
    if (!part.empty()) {
      try {
        dims.push_back(std::stoll(part));
      } catch (const std::exception&) {
        throw Error(fmt::format("{}: bad .npy shape '{}'", path, inside));
      }
    }
    if (e == std::string::npos) break;
    p = e + 1;
  }
  set_shape(f, dims, path);
  f.offset = static_cast<uint64_t>(in.tellg());
  if (f.offset + static_cast<uint64_t>(f.rows * f.d) * c10::elementSize(f.dtype) > fs::file_size(path))
    throw Error(fmt::format("{}: the .npy data is shorter than its shape says", path));
  return f;
}

class TensorFilesSource final : public sae_detail::BufferedSource {
 public:
  TensorFilesSource(std::vector<TensorFile> files, std::string what, uint64_t seed, int64_t buffer, int64_t chunk)
      : files_(std::move(files)), what_(std::move(what)), rng_(seed), buffer_(std::max<int64_t>(buffer, 1)),
        chunk_(std::max<int64_t>(chunk, 1)) {
    for (size_t i = 0; i < files_.size(); ++i) {
      if (files_[i].d != files_[0].d)
        throw Error(fmt::format("{} has d_in {} but {} has {}; the files of one source must agree", files_[i].path,
                                files_[i].d, files_[0].path, files_[0].d));
      total_ += files_[i].rows;
    }
  }
  int64_t d_in() const override { return files_[0].d; }
  std::string describe() const override {
    return fmt::format("{} ({} file{}, {} rows of {})", what_, files_.size(), files_.size() == 1 ? "" : "s", total_,
                       files_[0].d);
  }

 private:
  // The next window of up to `buffer_` rows, shuffled: chunks in a seeded order per epoch.
  at::Tensor fill() override {
    std::vector<at::Tensor> parts;
    int64_t have = 0;
    while (have < buffer_) {
      if (next_chunk_ >= chunks_.size()) {
        if (have > 0) break;  // an epoch ends a window
        start_epoch();
      }
      auto [fi, start] = chunks_[next_chunk_++];
      at::Tensor rows = read_rows(files_[fi], start, std::min(chunk_, files_[fi].rows - start));
      have += rows.size(0);
      parts.push_back(rows);
    }
    at::Tensor all = parts.size() == 1 ? parts[0] : at::cat(parts);
    std::vector<int64_t> perm = rng_.permutation(all.size(0));
    return all.index_select(0, at::tensor(perm, at::kLong));
  }

  void start_epoch() {
    chunks_.clear();
    for (size_t f = 0; f < files_.size(); ++f)
      for (int64_t s = 0; s < files_[f].rows; s += chunk_) chunks_.emplace_back(f, s);
    rng_.shuffle(chunks_);
    next_chunk_ = 0;
  }

  static at::Tensor read_rows(const TensorFile& f, int64_t start, int64_t n) {
    std::ifstream in(f.path, std::ios::binary);
    const size_t es = c10::elementSize(f.dtype);
    in.seekg(static_cast<std::streamoff>(f.offset + static_cast<uint64_t>(start * f.d) * es));
    at::Tensor t = at::empty({n, f.d}, at::TensorOptions().dtype(f.dtype));
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(n * f.d * static_cast<int64_t>(es)));
    if (!in) throw Error(fmt::format("{}: read failed at row {}", f.path, start));
    return t.to(at::kFloat);
  }

  std::vector<TensorFile> files_;
  std::string what_;
  Rng rng_;
  int64_t buffer_, chunk_, total_ = 0;
  std::vector<std::pair<size_t, int64_t>> chunks_;
  size_t next_chunk_ = 0;
};

bool is_tensor_file(const fs::path& p) { return p.extension() == ".safetensors" || p.extension() == ".npy"; }

}  // namespace

std::unique_ptr<ActivationSource> tensor_files_source(const std::string& path, const std::string& tensor_name,
                                                      uint64_t seed, int64_t shuffle_buffer, int64_t chunk_rows) {
  std::error_code ec;
  std::vector<fs::path> paths;
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::directory_iterator(path, ec))
      if (e.is_regular_file() && is_tensor_file(e.path())) paths.push_back(e.path());
    std::sort(paths.begin(), paths.end());
    if (paths.empty())
      throw Error(fmt::format("{}: no .safetensors or .npy files here (and no manifest.json: not an activation store)",
                              path));
  } else if (fs::is_regular_file(path, ec)) {
    if (!is_tensor_file(path))
      throw Error(fmt::format("{}: activations are an activation store folder, a .safetensors or .npy file, or a "
                              "folder of them",
                              path));
    paths.push_back(path);
  } else {
    throw Error(fmt::format("{}: no such file or folder", path));
  }
  std::vector<TensorFile> files;
  for (const auto& p : paths)
    files.push_back(p.extension() == ".npy" ? read_npy_header(p.string()) : read_safetensors_header(p.string(), tensor_name));
  return std::make_unique<TensorFilesSource>(std::move(files), path, seed, shuffle_buffer, chunk_rows);
}

}  // namespace interp
