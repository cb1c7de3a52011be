// The metrics of interp/metrics.h, and how the engines evaluate one on a run.
#include "interp/metrics.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "interp/error.h"
#include "patch/internal.h"

namespace interp {
namespace detail {

at::Tensor metric_on(const Metric& metric, const at::Tensor& logits_at_positions) {
  at::Tensor v = metric.fn(logits_at_positions);
  if (!v.defined() || v.dim() > 1 || (v.dim() == 1 && v.size(0) != logits_at_positions.size(0)))
    throw Error(fmt::format("metric '{}' returned a tensor of the wrong shape; return [batch] or a scalar", metric.name));
  return v.to(at::kDouble).mean();
}

at::Tensor metric_on_run(const Metric& metric, const at::Tensor& logits) {
  if (metric.positions.empty()) return metric_on(metric, logits);
  auto u = normalize_positions(metric.positions, logits.size(1), fmt::format("metric '{}'", metric.name));
  return metric_on(metric, logits.index_select(1, at::tensor(u, at::kLong).to(logits.device())));
}

}  // namespace detail

namespace {
at::Tensor ids_for(const at::Tensor& ids, const at::Tensor& logits, const char* what) {
  if (ids.dim() != 1 || ids.size(0) != logits.size(0))
    throw Error(fmt::format("metric: {} has shape {} but the run has {} prompts; give one token id per prompt", what,
                            detail::shape_of(ids.sizes()), logits.size(0)));
  const int64_t vocab = logits.size(-1);
  const at::Tensor bad = ((ids < 0) | (ids >= vocab)).nonzero();
  if (bad.numel() > 0) {
    const int64_t i = bad[0][0].item<int64_t>();
    throw Error(fmt::format("metric: {} of prompt {} is token id {}, outside the model's vocabulary of {} (ids 0..{})",
                            what, i + 1, ids[i].item<int64_t>(), vocab, vocab - 1));
  }
  return ids.to(logits.device(), at::kLong).unsqueeze(1);
}
}  // namespace

Metric logit_diff(const at::Tensor& answers, const at::Tensor& wrong, int64_t position) {
  return {"logit_diff", {position}, [answers, wrong](const at::Tensor& logits) {
            at::Tensor l = logits.select(1, 0).to(at::kFloat);
            return (l.gather(1, ids_for(answers, logits, "answers")) - l.gather(1, ids_for(wrong, logits, "wrong")))
                .squeeze(1);
          }};
}

Metric answer_prob(const at::Tensor& answers, int64_t position) {
  return {"prob", {position}, [answers](const at::Tensor& logits) {
            at::Tensor l = logits.select(1, 0).to(at::kFloat).softmax(-1);
            return l.gather(1, ids_for(answers, logits, "answers")).squeeze(1);
          }};
}

Metric answer_loss(const at::Tensor& answers, int64_t position) {
  return {"loss", {position}, [answers](const at::Tensor& logits) {
            at::Tensor l = logits.select(1, 0).to(at::kFloat).log_softmax(-1);
            return -l.gather(1, ids_for(answers, logits, "answers")).squeeze(1);
          }};
}

Metric kl_to(const at::Tensor& clean_logits, std::vector<int64_t> positions) {
  if (clean_logits.dim() != 3) throw Error("kl_to: clean logits must be [batch, pos, d_vocab]");
  std::vector<int64_t> norm = detail::normalize_positions(positions, clean_logits.size(1), "kl_to");
  at::Tensor at_positions =  // no positions: all of them, like every metric
      norm.empty() ? clean_logits : clean_logits.index_select(1, at::tensor(norm, at::kLong).to(clean_logits.device()));
  at::Tensor clean_lp = at_positions.to(at::kFloat).log_softmax(-1);
  return {"kl", norm, [clean_lp](const at::Tensor& logits) {
            at::Tensor lp = logits.to(at::kFloat).log_softmax(-1);
            at::Tensor c = clean_lp.to(lp.device());
            if (c.size(0) != lp.size(0))
              throw Error(fmt::format("kl_to: clean logits have {} prompts, the run has {}", c.size(0), lp.size(0)));
            return (c.exp() * (c - lp)).sum({1, 2});
          }};
}

Metric sequence_loss(const at::Tensor& tokens) {
  at::Tensor t = tokens.dim() == 1 ? tokens.unsqueeze(0) : tokens;
  return {"sequence_loss", {}, [t](const at::Tensor& logits) {
            at::Tensor lp = logits.narrow(1, 0, logits.size(1) - 1).to(at::kFloat).log_softmax(-1);
            at::Tensor next = t.narrow(1, 1, t.size(1) - 1).to(logits.device(), at::kLong).unsqueeze(-1);
            if (next.size(0) != lp.size(0)) throw Error("sequence_loss: tokens and run differ in prompts");
            return -lp.gather(2, next).squeeze(-1).mean(1);
          }};
}

}  // namespace interp
