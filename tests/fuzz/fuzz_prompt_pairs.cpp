// Prompt-pair files (patch, ablate, circuit) with token ids (no tokenizer).
#include <ATen/ATen.h>

#include "fuzz_common.h"
#include "interp/prompts.h"

INTERP_FUZZ_TARGET({
  const std::string path = interp::fuzz::scratch("pairs.json");
  interp::fuzz::write_file(path, data, size);
  interp::PromptPairs p = interp::load_prompt_pairs(path, nullptr);
  interp::check_token_ids(p, 50, path);
})
