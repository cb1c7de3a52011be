// interp/lm_eval.h: how well a model predicts a corpus (mean next-token loss and accuracy), and
// greedy continuation.
//
//   interp::PackOptions po;
//   po.shuffle = false;
//   interp::PackedContexts contexts(interp::select_documents(tc, held_out), po);
//   interp::LmEval e = interp::evaluate_lm(model, contexts);   // e.loss, e.accuracy
#pragma once

#include <cstdint>
#include <string>

#include "interp/data.h"
#include "interp/hooks.h"

namespace interp {

struct LmEvalOptions {
  int64_t batch = 16;         // contexts per forward
  int64_t max_contexts = 0;   // 0: all
  bool progress = false;      // progress with rate and ETA on stderr
};

struct LmEval {
  double loss = 0;       // mean cross-entropy (nats) of every next token after each context's first
  double accuracy = 0;   // fraction of those whose argmax is right
  int64_t tokens = 0;    // tokens predicted
  int64_t contexts = 0;
  double seconds = 0;
  std::string to_json() const;
};

LmEval evaluate_lm(const HookedModel& model, const PackedContexts& contexts, const LmEvalOptions& options = {});

// Appends `n` tokens to each sequence of `tokens` ([batch, pos]), each the argmax of the next-token
// logits (a full forward per token; the model sees the last n_ctx tokens). Returns [batch, pos + n].
// `hooks` run in every forward (e.g. a steering hook, interp/steer.h).
at::Tensor generate_greedy(const HookedModel& model, const at::Tensor& tokens, int64_t n,
                           const std::vector<std::pair<std::string, HookFn>>& hooks = {});

}  // namespace interp
