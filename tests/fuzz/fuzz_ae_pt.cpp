// dictionary_learning's ae.pt (a torch.save pickle, read with LibTorch's unpickler), beside the
// config.json of tests/fixtures/sae_formats/dictionary_learning/topk.
#include "fuzz_common.h"
#include "interp/sae.h"

#ifndef INTERP_FIXTURES
#error "INTERP_FIXTURES must name tests/fixtures"
#endif

INTERP_FUZZ_TARGET({
  const std::string dir = interp::fuzz::folder_with("ae", INTERP_FIXTURES, "sae_formats/dictionary_learning/topk/config.json", "ae.pt", data, size);
  interp::SAE sae = interp::SAE::load(dir);
  (void)sae.config().d_sae;
})
