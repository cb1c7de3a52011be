#include "interp/sae_eval.h"
#include "interp/util.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "interp/error.h"
#include "interp/metrics.h"

namespace interp {
namespace {

// The patching metrics (interp/metrics.h) on whole runs: mean next-token cross-entropy of logits
// [B, T, V] on tokens [B, T], and the mean over positions of KL(p || q).
double next_token_ce(const at::Tensor& logits, const at::Tensor& tokens) {
  return sequence_loss(tokens).fn(logits).mean().item<double>();
}

double mean_kl(const at::Tensor& p_logits, const at::Tensor& q_logits) {
  return kl_to(p_logits, {}).fn(q_logits).mean().item<double>() / static_cast<double>(p_logits.size(1));
}

}  // namespace

SAEEval evaluate_sae(const SAE& sae, const HookedModel& model, const PackedContexts& contexts,
                     const SAEEvalOptions& o) {
  at::NoGradGuard no_grad;
  SAEEval e;
  e.hook = o.hook.empty() ? sae.config().hook_name : o.hook;
  if (e.hook.empty()) throw Error("eval-sae: the SAE's cfg.json names no hook_name; pass --hook");
  const HookPoint& point = model.find_point(e.hook);
  e.hook = point.name;  // "layers.1" (sparsify) is "blocks.1.hook_resid_post" here
  if (point.shape.empty() || point.shape.back() != sae.config().d_in)
    throw Error(fmt::format("eval-sae: hook '{}' has shape {} but the SAE's d_in is {}", e.hook, point.shape_str(),
                            sae.config().d_in));
  if (o.tokens < 1 || o.batch < 1)
    throw Error(fmt::format("eval-sae: tokens ({}) and batch ({}) must be at least 1", o.tokens, o.batch));
  const int64_t ctx = contexts.ctx();
  const int64_t n_ctx = std::min(contexts.size(), (o.tokens + ctx - 1) / ctx);
  if (n_ctx < 1)  // no rows: every score would be a division by zero, not a result
    throw Error(fmt::format("eval-sae: the corpus holds no context of {} tokens; give a larger corpus or a smaller --ctx",
                            ctx));
  const int64_t d = sae.config().d_in, m = sae.config().d_sae;
  at::Tensor fires = at::zeros({m}, at::kLong);
  double sum_err = 0, sum_l0 = 0, ce_clean = 0, ce_sae = 0, ce_zero = 0, kl_sae = 0, kl_zero = 0;
  at::Tensor sum_x = at::zeros({d}, at::kDouble), sum_x2 = at::zeros({}, at::kDouble);
  int64_t rows = 0, batches = 0;
  Progress progress(n_ctx, "eval-sae contexts", o.progress);
  for (int64_t first = 0; first < n_ctx; first += o.batch) {
    int64_t n = std::min(o.batch, n_ctx - first);
    progress.update(first);
    at::Tensor tokens = contexts.batch(first, n);
    auto [logits, cache] = model.run_with_cache(tokens, names_filter(std::vector<std::string>{point.name}));
    at::Tensor x = cache[point.name];
    at::Tensor flat = x.reshape({-1, d}).to(at::kFloat);
    at::Tensor h = sae.encode(flat);
    at::Tensor x_hat = sae.decode(h, flat);
    sum_err += (x_hat - flat).pow(2).sum().item<double>();
    sum_l0 += (h > 0).sum().item<double>();
    fires += (h > 0).sum(0).to(at::kLong).cpu();
    sum_x += flat.to(at::kDouble).sum(0).cpu();
    sum_x2 += flat.to(at::kDouble).pow(2).sum().cpu();
    rows += flat.size(0);
    at::Tensor spliced = x_hat.reshape(x.sizes()).to(x.scalar_type());
    at::Tensor l_sae = model.run_with_hooks(tokens, {{point.name, [&](at::Tensor& a, const std::string&) { a = spliced; }}});
    at::Tensor l_zero =
        model.run_with_hooks(tokens, {{point.name, [](at::Tensor& a, const std::string&) { a = at::zeros_like(a); }}});
    ce_clean += next_token_ce(logits, tokens);
    ce_sae += next_token_ce(l_sae, tokens);
    ce_zero += next_token_ce(l_zero, tokens);
    kl_sae += mean_kl(logits, l_sae);
    kl_zero += mean_kl(logits, l_zero);
    ++batches;
  }
  progress.update(n_ctx);
  progress.finish();
  const double R = static_cast<double>(rows), B = static_cast<double>(batches);
  e.tokens = rows;
  e.l0 = sum_l0 / R;
  e.mse = sum_err / R;
  double total_var = sum_x2.item<double>() - (sum_x.pow(2).sum().item<double>() / R);
  e.fvu = total_var > 0 ? sum_err / total_var : 0;
  at::Tensor density = fires.to(at::kDouble) / R;
  e.dead_fraction = (fires == 0).to(at::kDouble).mean().item<double>();
  e.dense_fraction = (density > o.dense_threshold).to(at::kDouble).mean().item<double>();
  for (double edge = -8; edge <= 0.001; edge += 0.5) e.density_edges.push_back(edge);
  e.density_counts.assign(e.density_edges.size() - 1, 0);
  auto dens = density.accessor<double, 1>();
  for (int64_t i = 0; i < m; ++i) {
    if (dens[i] <= 0) continue;
    double l = std::log10(dens[i]);
    auto bin = static_cast<size_t>(std::clamp((l + 8) / 0.5, 0.0, static_cast<double>(e.density_counts.size() - 1)));
    ++e.density_counts[bin];
  }
  e.ce_clean = ce_clean / B;
  e.ce_sae = ce_sae / B;
  e.ce_zero = ce_zero / B;
  e.ce_loss_recovered = e.ce_zero != e.ce_clean ? (e.ce_zero - e.ce_sae) / (e.ce_zero - e.ce_clean) : 1.0;
  e.kl_sae = kl_sae / B;
  e.kl_zero = kl_zero / B;
  return e;
}

std::string SAEEval::to_json() const {
  nlohmann::ordered_json j = {{"hook", hook},
                              {"tokens", tokens},
                              {"l0", l0},
                              {"mse", mse},
                              {"fvu", fvu},
                              {"explained_variance", 1 - fvu},
                              {"dead_fraction", dead_fraction},
                              {"dense_fraction", dense_fraction},
                              {"ce_clean", ce_clean},
                              {"ce_sae", ce_sae},
                              {"ce_zero_ablation", ce_zero},
                              {"ce_loss_recovered", ce_loss_recovered},
                              {"kl_sae", kl_sae},
                              {"kl_zero_ablation", kl_zero},
                              {"density_histogram", {{"log10_edges", density_edges}, {"counts", density_counts}}}};
  return j.dump(2) + "\n";
}

std::string SAEEval::summary() const {
  return fmt::format(
      "{} over {} tokens\n  L0 {:.2f}   MSE {:.4f}   FVU {:.4f} (explained variance {:.4f})\n"
      "  dead latents {:.2f}%   dense (> 10% of tokens) {:.2f}%\n"
      "  CE clean {:.4f}   with SAE {:.4f}   zero-ablated {:.4f}   CE loss recovered {:.4f}\n"
      "  KL(clean || SAE) {:.4f}   KL(clean || zero) {:.4f} nats/token\n",
      hook, tokens, l0, mse, fvu, 1 - fvu, 100 * dead_fraction, 100 * dense_fraction, ce_clean, ce_sae, ce_zero,
      ce_loss_recovered, kl_sae, kl_zero);
}

}  // namespace interp
