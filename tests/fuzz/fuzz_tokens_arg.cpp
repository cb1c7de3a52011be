// The --tokens "1,2,3;4,5,6" string of run, cache and steer.
#include <ATen/ATen.h>

#include "../../apps/common.h"
#include "fuzz_common.h"

INTERP_FUZZ_TARGET({
  at::Tensor t = interp::app::parse_tokens(std::string(reinterpret_cast<const char*>(data), size));
  (void)t.numel();
})
