// Token files (interp tokenize): safetensors with a token tensor, document offsets, tags, metadata.
#include "fuzz_common.h"
#include "interp/data.h"

INTERP_FUZZ_TARGET({
  const std::string path = interp::fuzz::scratch("tokens.safetensors");
  interp::fuzz::write_file(path, data, size);
  auto tc = interp::token_file_load(path);
  (void)tc.tokens.size();
})
