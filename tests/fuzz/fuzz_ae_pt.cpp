// dictionary_learning's ae.pt (a torch.save pickle, read with LibTorch's unpickler), beside the
// config.json of tests/fixtures/sae_formats/dictionary_learning/topk.
#include "fuzz_common.h"
#include "interp/sae.h"

#ifndef INTERP_FIXTURES
#error "INTERP_FIXTURES must name tests/fixtures"
#endif

INTERP_FUZZ_TARGET({
  const std::string dir = interp::fuzz::scratch("ae");
  static const bool ready = [&] {
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(std::string(INTERP_FIXTURES) + "/sae_formats/dictionary_learning/topk/config.json",
                               dir + "/config.json", std::filesystem::copy_options::overwrite_existing);
    return true;
  }();
  (void)ready;
  interp::fuzz::write_file(dir + "/ae.pt", data, size);
  interp::SAE sae = interp::SAE::load(dir);
  (void)sae.config().d_sae;
})
