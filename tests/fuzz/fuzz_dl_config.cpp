// A dictionary_learning config.json, loaded beside a valid ae.pt
// (tests/fixtures/sae_formats/dictionary_learning/topk/ae.pt).
#include "fuzz_common.h"
#include "interp/sae.h"

#ifndef INTERP_FIXTURES
#error "INTERP_FIXTURES must name tests/fixtures"
#endif

INTERP_FUZZ_TARGET({
  const std::string dir = interp::fuzz::folder_with("dl_config", INTERP_FIXTURES, "sae_formats/dictionary_learning/topk/ae.pt", "config.json", data, size);
  interp::SAE sae = interp::SAE::load(dir);
  (void)sae.config().d_sae;
})
