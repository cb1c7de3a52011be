// Name maps (--name-map FILE): module path patterns -> TransformerLens names.
#include "../../lib/src/hooks/names.h"
#include "fuzz_common.h"

INTERP_FUZZ_TARGET({
  const std::string path = interp::fuzz::scratch("map.json");
  interp::fuzz::write_file(path, data, size);
  (void)interp::detail::NameMap::from_json_file(path);
})
