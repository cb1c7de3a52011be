// A dictionary_learning config.json, loaded beside a valid ae.pt
// (tests/fixtures/sae_formats/dictionary_learning/topk/ae.pt).
#include "fuzz_common.h"
#include "interp/sae.h"

#ifndef INTERP_FIXTURES
#error "INTERP_FIXTURES must name tests/fixtures"
#endif

INTERP_FUZZ_TARGET({
  const std::string dir = interp::fuzz::scratch("dl_config");
  static const bool ready = [&] {
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(std::string(INTERP_FIXTURES) + "/sae_formats/dictionary_learning/topk/ae.pt",
                               dir + "/ae.pt", std::filesystem::copy_options::overwrite_existing);
    return true;
  }();
  (void)ready;
  interp::fuzz::write_file(dir + "/config.json", data, size);
  interp::SAE sae = interp::SAE::load(dir);
  (void)sae.config().d_sae;
})
