// An SAELens cfg.json, loaded as an SAE folder beside valid weights (tests/fixtures/sae/topk).
#include "fuzz_common.h"
#include "interp/sae.h"

#ifndef INTERP_FIXTURES
#error "INTERP_FIXTURES must name tests/fixtures"
#endif

INTERP_FUZZ_TARGET({
  const std::string dir = interp::fuzz::scratch("sae");
  static const bool ready = [&] {
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(std::string(INTERP_FIXTURES) + "/sae/topk/sae_weights.safetensors",
                               dir + "/sae_weights.safetensors", std::filesystem::copy_options::overwrite_existing);
    return true;
  }();
  (void)ready;
  interp::fuzz::write_file(dir + "/cfg.json", data, size);
  (void)interp::SAEConfig::from_json(std::string(reinterpret_cast<const char*>(data), size), "cfg.json");
  interp::SAE sae = interp::SAE::load(dir);
  (void)sae.config().d_sae;
})
