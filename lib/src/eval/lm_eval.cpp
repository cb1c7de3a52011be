// Next-token loss and accuracy of a model on packed contexts.
#include "interp/lm_eval.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>

#include "interp/error.h"
#include "interp/util.h"

namespace interp {

std::string LmEval::to_json() const {
  nlohmann::json j = {{"loss", loss},         {"perplexity", std::exp(loss)}, {"accuracy", accuracy},
                      {"tokens", tokens},     {"contexts", contexts},        {"seconds", seconds}};
  return j.dump(2) + "\n";
}

LmEval evaluate_lm(const HookedModel& model, const PackedContexts& contexts, const LmEvalOptions& o) {
  if (o.batch < 1) throw Error("evaluate_lm: batch must be at least 1");
  auto t0 = std::chrono::steady_clock::now();
  if (o.max_contexts < 0) throw Error(fmt::format("evaluate_lm: max_contexts must be 0 (all) or more (got {})", o.max_contexts));
  const int64_t n = o.max_contexts > 0 ? std::min(o.max_contexts, contexts.size()) : contexts.size();
  if (n < 1 || contexts.ctx() < 2)  // no predicted token: a loss of 0/0, not a result
    throw Error(fmt::format("evaluate_lm: no context of {} tokens to evaluate (the corpus is too small, or every "
                            "document was held out); give a larger corpus or a smaller --ctx",
                            contexts.ctx()));
  LmEval e;
  double loss_sum = 0;
  int64_t correct = 0;
  Progress prog(n, "eval-lm contexts", o.progress);
  for (int64_t i = 0; i < n; i += o.batch) {
    const int64_t count = std::min(o.batch, n - i);
    at::Tensor x = contexts.batch(i, count).to(model.device());
    at::Tensor logits = model.forward(x).narrow(1, 0, x.size(1) - 1).to(at::kFloat);  // predicts x[:, 1:]
    at::Tensor next = x.narrow(1, 1, x.size(1) - 1);
    at::Tensor lp = logits.log_softmax(-1).gather(2, next.unsqueeze(-1)).squeeze(-1);
    loss_sum -= lp.to(at::kDouble).sum().item<double>();
    correct += (logits.argmax(-1) == next).sum().item<int64_t>();
    e.tokens += next.numel();
    prog.update(i + count);
  }
  prog.finish();
  e.contexts = n;
  e.loss = loss_sum / static_cast<double>(e.tokens);
  e.accuracy = static_cast<double>(correct) / static_cast<double>(e.tokens);
  e.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return e;
}

at::Tensor generate_greedy(const HookedModel& model, const at::Tensor& tokens, int64_t n,
                           const std::vector<std::pair<std::string, HookFn>>& hooks) {
  if (n < 0) throw Error(fmt::format("generate: {} tokens asked for; give 0 or more", n));
  at::Tensor out = (tokens.dim() == 1 ? tokens.unsqueeze(0) : tokens).to(at::kCPU, at::kLong);
  const int64_t ctx = model.info().n_ctx;
  for (int64_t i = 0; i < n; ++i) {
    at::Tensor in = ctx > 0 && out.size(1) > ctx ? out.narrow(1, out.size(1) - ctx, ctx) : out;
    at::Tensor logits = hooks.empty() ? model.forward(in) : model.run_with_hooks(in, hooks);
    at::Tensor next = logits.select(1, logits.size(1) - 1).argmax(-1).to(at::kCPU, at::kLong);  // [batch]
    out = at::cat({out, next.unsqueeze(1)}, 1);
  }
  return out;
}

}  // namespace interp
