// The activation store's manifest.json, opened as a store (shard files absent: their checks run).
#include "fuzz_common.h"
#include "interp/store.h"

INTERP_FUZZ_TARGET({
  const std::string dir = interp::fuzz::scratch("store");
  std::filesystem::create_directories(dir);
  interp::fuzz::write_file(dir + "/manifest.json", data, size);
  auto s = interp::ActivationStore::open(dir);
  (void)s.n_tokens();
})
