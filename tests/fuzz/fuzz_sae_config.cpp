// An SAELens cfg.json, loaded as an SAE folder beside valid weights (tests/fixtures/sae/topk).
#include "fuzz_common.h"
#include "interp/sae.h"

#ifndef INTERP_FIXTURES
#error "INTERP_FIXTURES must name tests/fixtures"
#endif

INTERP_FUZZ_TARGET({
  const std::string dir = interp::fuzz::folder_with("sae", INTERP_FIXTURES, "sae/topk/sae_weights.safetensors", "cfg.json", data, size);
  (void)interp::SAEConfig::from_json(std::string(reinterpret_cast<const char*>(data), size), "cfg.json");
  interp::SAE sae = interp::SAE::load(dir);
  (void)sae.config().d_sae;
})
