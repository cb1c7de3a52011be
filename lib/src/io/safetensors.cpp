#include "interp/safetensors.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "interp/error.h"
#include "io/atomic_file.h"

namespace interp {
namespace {

struct DtypeName {
  at::ScalarType type;
  const char* name;
};
constexpr DtypeName kDtypes[] = {
    {at::kFloat, "F32"}, {at::kHalf, "F16"}, {at::kBFloat16, "BF16"}, {at::kDouble, "F64"},
    {at::kLong, "I64"},  {at::kInt, "I32"},  {at::kShort, "I16"},     {at::kChar, "I8"},
    {at::kByte, "U8"},   {at::kBool, "BOOL"},
};

const char* dtype_name(at::ScalarType t, const std::string& tensor) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  throw Error(fmt::format("safetensors: tensor '{}' has dtype {}, which safetensors cannot store; "
                          "convert it (e.g. to float32) first",
                          tensor, c10::toString(t)));
}

}  // namespace

uint64_t safetensors_save(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  std::vector<at::Tensor> blobs;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") throw Error("safetensors: '__metadata__' is reserved; rename that tensor");
    if (!t.defined()) throw Error(fmt::format("safetensors: tensor '{}' is undefined", name));
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    uint64_t nbytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", dtype_name(c.scalar_type(), name)},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    blobs.push_back(c);
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');

  AtomicFile out(path);
  uint64_t n = h.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
  out.write(len, 8);
  out.write(h.data(), h.size());
  for (const auto& b : blobs) out.write(b.data_ptr(), static_cast<size_t>(b.numel()) * b.element_size());
  out.commit();
  return out.xxh64();
}

SafetensorsFile safetensors_parse(const std::string& bytes, const std::string& what) {
  auto bad = [&](const std::string& why) {
    return Error(fmt::format("{}: not a valid safetensors file: {}", what, why));
  };
  if (bytes.size() < 8) throw bad(fmt::format("{} bytes, shorter than the 8-byte header length", bytes.size()));
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  if (n > bytes.size() - 8)
    throw bad(fmt::format("header length {} runs past the end of the file ({} bytes); truncated?", n, bytes.size()));
  if (n > (uint64_t{100} << 20))  // the format's own limit: a header is JSON of names and offsets
    throw bad(fmt::format("header length {} is over the format's limit of 100 MB", n));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  } catch (const nlohmann::json::exception& e) {
    throw bad(fmt::format("header is not JSON ({})", e.what()));
  }
  if (!header.is_object()) throw bad("header is not a JSON object");
  const uint64_t data_size = bytes.size() - 8 - n;
  const char* data = bytes.data() + 8 + n;

  SafetensorsFile file;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::vector<std::pair<uint64_t, std::string>> starts;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) throw bad("__metadata__ is not an object");
      for (const auto& [k, v] : info.items()) {
        if (!v.is_string()) throw bad(fmt::format("__metadata__ value of '{}' is not a string", k));
        file.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    if (!info.is_object() || !info.contains("dtype") || !info.contains("shape") || !info.contains("data_offsets"))
      throw bad(fmt::format("entry '{}' needs dtype, shape and data_offsets", name));
    const auto& jd = info["dtype"];
    const auto& js = info["shape"];
    const auto& jo = info["data_offsets"];
    if (!jd.is_string()) throw bad(fmt::format("entry '{}': dtype is not a string", name));
    std::string dname = jd.get<std::string>();
    const DtypeName* dt = nullptr;
    for (const auto& d : kDtypes)
      if (dname == d.name) dt = &d;
    if (!dt) throw bad(fmt::format("entry '{}': unsupported dtype '{}'", name, dname));
    if (!js.is_array()) throw bad(fmt::format("entry '{}': shape is not an array", name));
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const auto& d : js) {
      if (!d.is_number_unsigned()) throw bad(fmt::format("entry '{}': shape has a non-integer or negative dim", name));
      uint64_t v = d.get<uint64_t>();
      if (v > (uint64_t{1} << 48) || (v && numel > std::numeric_limits<uint64_t>::max() / v))
        throw bad(fmt::format("entry '{}': shape too large", name));
      numel *= v;
      shape.push_back(static_cast<int64_t>(v));
    }
    if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() || !jo[1].is_number_unsigned())
      throw bad(fmt::format("entry '{}': data_offsets must be two non-negative integers", name));
    uint64_t begin = jo[0].get<uint64_t>(), end = jo[1].get<uint64_t>();
    const uint64_t esize = c10::elementSize(dt->type);
    if (begin > end || end > data_size)
      throw bad(fmt::format("entry '{}': data_offsets [{}, {}] outside the {} data bytes; truncated?", name, begin,
                            end, data_size));
    if (numel > (end - begin) / esize || numel * esize != end - begin)
      throw bad(fmt::format("entry '{}': shape needs {} bytes of {} but data_offsets give {}", name,
                            numel * esize, dname, end - begin));
    ranges.emplace_back(begin, end);
    starts.emplace_back(begin, name);
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dt->type));
    if (end > begin) std::memcpy(t.data_ptr(), data + begin, end - begin);
    file.tensors[name] = t;
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) throw bad("two tensors' data_offsets overlap");
  std::sort(starts.begin(), starts.end());
  for (auto& s : starts) file.order.push_back(s.second);
  return file;
}

SafetensorsFile safetensors_load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open ({}); check the path", path, std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  return safetensors_parse(ss.str(), path);
}

}  // namespace interp
