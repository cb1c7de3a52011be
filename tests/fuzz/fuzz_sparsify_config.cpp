// A sparsify cfg.json, loaded as a sparsify folder beside valid weights
// (tests/fixtures/sae_formats/sparsify/layers.0/sae.safetensors).
#include "fuzz_common.h"
#include "interp/sae.h"

#ifndef INTERP_FIXTURES
#error "INTERP_FIXTURES must name tests/fixtures"
#endif

INTERP_FUZZ_TARGET({
  const std::string dir = interp::fuzz::scratch("sparsify");
  static const bool ready = [&] {
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(std::string(INTERP_FIXTURES) + "/sae_formats/sparsify/layers.0/sae.safetensors",
                               dir + "/sae.safetensors", std::filesystem::copy_options::overwrite_existing);
    return true;
  }();
  (void)ready;
  interp::fuzz::write_file(dir + "/cfg.json", data, size);
  interp::SAE sae = interp::SAE::load(dir);
  (void)sae.config().d_sae;
})
