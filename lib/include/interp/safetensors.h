// interp/safetensors.h: read and write safetensors files.
//
// Format (https://huggingface.co/docs/safetensors): 8-byte little-endian header length N, N bytes of
// UTF-8 JSON {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
// "__metadata__": {"key": "value"}}, then the tensor bytes (little-endian, row-major). Offsets are
// relative to the first byte after the header. Writes pad the header with spaces to 8 bytes, write
// to a temporary file and rename it into place, so a failed write never leaves a partial file.
// Reads validate everything (sizes, offsets inside the file, no overlaps, known dtypes) and throw
// interp::Error naming the file and the problem.
//
//   interp::safetensors_save("out.safetensors", {{"x", torch::ones({2, 3})}}, {{"source", "demo"}});
//   auto file = interp::safetensors_load("out.safetensors");
//   at::Tensor x = file.tensors.at("x");
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

namespace interp {

struct SafetensorsFile {
  std::map<std::string, at::Tensor> tensors;        // CPU tensors
  std::map<std::string, std::string> metadata;      // "__metadata__"
  std::vector<std::string> order;                   // tensor names in data-offset order
};

// Tensors may live on any device and be non-contiguous; they are written as they are, in name order.
// Returns the XXH64 of the file's bytes (a checksum that costs no second read).
uint64_t safetensors_save(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

SafetensorsFile safetensors_load(const std::string& path);
// Parses an in-memory file image (what safetensors_load reads); `what` names it in errors.
SafetensorsFile safetensors_parse(const std::string& bytes, const std::string& what);

}  // namespace interp
