// interp/prompts.h: clean / corrupted prompt pairs from a JSON file, for patching and circuits.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace interp {

class Tokenizer;

// A JSON file of clean / corrupted prompt pairs:
//   {"pairs": [{"clean": "When Mary and John ...", "corrupted": "When Mary and John ...",
//               "answer": " Mary", "wrong": " John"},
//              {"clean_tokens": [5, 17, 9], "corrupted_tokens": [5, 21, 9], "answer": 12, "wrong": 40}],
//    "prepend_bos": true, "position": -1}
// Text goes through the tokenizer (BOS prepended when the tokenizer has one, unless prepend_bos is
// false); answers are a token id or a text that is exactly one token. "corrupted" and "wrong" may be
// left out where nothing needs them (ablation, answer_prob). All prompts must have one length.
// "position" (optional) is where the metric reads the logits (negative: from the end).
struct PromptPairs {
  at::Tensor clean, corrupted;           // [n, pos] int64 (corrupted undefined if no pair has one)
  at::Tensor answers, wrong;             // [n] int64 (undefined if absent)
  std::vector<std::string> pos_labels;   // the first clean prompt's tokens, for pictures
  std::optional<int64_t> position;       // the metric's position, if the file names one
};
PromptPairs load_prompt_pairs(const std::string& path, const Tokenizer* tokenizer);
// Throws interp::Error naming the pair and field ("pair 2 'answer' 999 ...") if any id of clean,
// corrupted, answers or wrong is outside [0, d_vocab): before any run, whatever the metric.
void check_token_ids(const PromptPairs& pairs, int64_t d_vocab, const std::string& where);

}  // namespace interp
