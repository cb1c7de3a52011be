// safetensors: header JSON, dtypes, shapes and offsets against the file's size; every tensor read.
#include <ATen/ATen.h>

#include "fuzz_common.h"
#include "interp/safetensors.h"

INTERP_FUZZ_TARGET({
  auto f = interp::safetensors_parse(std::string(reinterpret_cast<const char*>(data), size), "input.safetensors");
  for (const auto& [name, t] : f.tensors)
    if (t.numel() > 0) (void)t.flatten()[t.numel() - 1].item<double>();  // the last element is in bounds
})
