// interp/metrics.h: what a patched run is scored by.
//
// A metric is a plain callable on logits, with the positions it reads, so patching, circuit
// discovery and SAE evaluation all score runs the same way:
//   auto m = interp::logit_diff(answers, wrong);          // logit[answer] - logit[wrong] at the last token
//   at::Tensor per_prompt = m.fn(logits.select(1, -1).unsqueeze(1));
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace interp {

// A metric reads the logits at `positions` (empty: all) and returns one value per prompt ([batch])
// or one scalar; a variant's value is the mean over its prompts. Plain callables: write your own.
struct Metric {
  std::string name;
  std::vector<int64_t> positions;  // negative: from the end
  // logits: [batch, positions.size() (or pos when empty), d_vocab], float
  std::function<at::Tensor(const at::Tensor& logits)> fn;
};

// logit[answer] - logit[wrong] at `position` (default: the last).
Metric logit_diff(const at::Tensor& answers, const at::Tensor& wrong, int64_t position = -1);
// softmax probability of the answer token at `position`.
Metric answer_prob(const at::Tensor& answers, int64_t position = -1);
// cross-entropy of the answer token at `position` (lower is better).
Metric answer_loss(const at::Tensor& answers, int64_t position = -1);
// KL(clean || run) of the next-token distributions at `positions` (empty: all), summed over positions.
// clean_logits: [batch, pos, d_vocab] of the clean run.
Metric kl_to(const at::Tensor& clean_logits, std::vector<int64_t> positions = {-1});
// Mean next-token loss over the sequence (reads all positions).
Metric sequence_loss(const at::Tensor& tokens);

}  // namespace interp
