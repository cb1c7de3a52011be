// A sparsify cfg.json, loaded as a sparsify folder beside valid weights
// (tests/fixtures/sae_formats/sparsify/layers.0/sae.safetensors).
#include "fuzz_common.h"
#include "interp/sae.h"

#ifndef INTERP_FIXTURES
#error "INTERP_FIXTURES must name tests/fixtures"
#endif

INTERP_FUZZ_TARGET({
  const std::string dir = interp::fuzz::folder_with("sparsify", INTERP_FIXTURES, "sae_formats/sparsify/layers.0/sae.safetensors", "cfg.json", data, size);
  interp::SAE sae = interp::SAE::load(dir);
  (void)sae.config().d_sae;
})
