// Faithfulness curves under every ablation choice, and head scores (previous-token, induction, copying).
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "circuits/internal.h"
#include "interp/error.h"
#include "interp/patch.h"
#include "interp/util.h"
#include "patch/internal.h"

namespace interp {

FaithfulnessReport faithfulness(const HookedModel& model, const CircuitGraph& graph, const CircuitTask& task,
                                const CircuitScores& scores, std::vector<int64_t> sizes,
                                const std::vector<AblationChoice>& choices, const CircuitRunOptions& options) {
  detail::check_task(task);
  auto t0 = std::chrono::steady_clock::now();
  const int64_t U = graph.n_units();
  if (static_cast<int64_t>(scores.units.size()) != U)
    throw Error(fmt::format("faithfulness: the scores are for {} units, the graph has {}; score this graph",
                            scores.units.size(), U));
  if (sizes.empty()) {
    for (int64_t s : {0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000})
      if (s < U) sizes.push_back(s);
    sizes.push_back(U);
  }
  for (int64_t s : sizes)
    if (s < 0 || s > U) throw Error(fmt::format("faithfulness: circuit size {} outside 0..{}", s, U));
  std::vector<int64_t> rank = scores.ranking();
  std::vector<std::vector<bool>> keeps;
  keeps.emplace_back(static_cast<size_t>(U), true);   // full
  keeps.emplace_back(static_cast<size_t>(U), false);  // empty
  for (int64_t s : sizes) {
    std::vector<bool> k(static_cast<size_t>(U), false);
    for (int64_t i = 0; i < s; ++i) k[static_cast<size_t>(rank[static_cast<size_t>(i)])] = true;
    keeps.push_back(std::move(k));
  }
  FaithfulnessReport rep;
  rep.sizes = sizes;
  Progress prog(static_cast<int64_t>(choices.size()), "faithfulness", options.progress);
  for (const auto& c : choices) {
    CircuitRunOptions ro = options;
    ro.progress = false;
    at::Tensor m = run_circuits(model, graph, task, c, keeps, ro, &rep.forwards).contiguous();
    FaithfulnessCurve fc;
    fc.choice = c;
    fc.sizes = sizes;
    fc.full = m[0].item<double>();
    fc.empty = m[1].item<double>();
    const double denom = fc.full - fc.empty;
    for (size_t i = 0; i < sizes.size(); ++i) {
      double v = m[static_cast<int64_t>(i) + 2].item<double>();
      fc.metric.push_back(v);
      fc.normalized.push_back(std::abs(denom) > 1e-12 ? (v - fc.empty) / denom : std::numeric_limits<double>::quiet_NaN());
    }
    for (int pct : {80, 90, 95}) {
      fc.smallest[pct] = -1;
      for (size_t i = 0; i < sizes.size(); ++i)
        if (fc.normalized[i] >= pct / 100.0) {
          fc.smallest[pct] = sizes[i];
          break;
        }
    }
    rep.curves.push_back(std::move(fc));
    prog.update(static_cast<int64_t>(rep.curves.size()));
  }
  prog.finish();
  for (size_t i = 0; i < sizes.size(); ++i) {
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (const auto& c : rep.curves)
      if (!std::isnan(c.normalized[i])) lo = std::min(lo, c.normalized[i]), hi = std::max(hi, c.normalized[i]);
    rep.spread.push_back(hi >= lo ? hi - lo : std::numeric_limits<double>::quiet_NaN());
  }
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

HeadScores head_scores(const HookedModel& model, int64_t n, int64_t seg, uint64_t seed, int64_t bos) {
  const ModelInfo& info = model.info();
  if (info.n_layers <= 0 || info.n_heads <= 0) throw Error("head scores need attention heads (blocks.L.attn.hook_pattern)");
  if (info.n_ctx > 0) seg = std::min<int64_t>(seg, (info.n_ctx - 1) / 2);
  if (seg < 2 || n < 1) throw Error("head scores need n >= 1 sequences of a segment of >= 2 tokens");
  if (info.d_vocab < 3) throw Error("head scores need a vocabulary of at least 3 tokens");
  Rng rng(seed);
  at::Tensor tokens = at::empty({n, 1 + 2 * seg}, at::kLong);
  auto acc = tokens.accessor<int64_t, 2>();
  for (int64_t b = 0; b < n; ++b) {
    acc[b][0] = bos;
    for (int64_t i = 1; i <= seg; ++i) {
      int64_t t;
      do t = static_cast<int64_t>(rng.below(static_cast<uint64_t>(info.d_vocab)));
      while (t == bos);
      acc[b][i] = acc[b][i + seg] = t;
    }
  }
  const int64_t T = 1 + 2 * seg;
  auto [logits, cache] = model.run_with_cache(tokens, names_filter("hook_pattern$"));
  HeadScores hs;
  hs.prev_token = at::zeros({info.n_layers, info.n_heads}, at::kDouble);
  hs.induction = at::zeros({info.n_layers, info.n_heads}, at::kDouble);
  at::Tensor q = at::arange(1, T, at::kLong), q2 = at::arange(seg + 1, T - 1, at::kLong);
  for (int L = 0; L < info.n_layers; ++L) {
    at::Tensor p = cache[point_name(PointKind::Pattern, L)].cpu().to(at::kDouble);  // [n, head, q, k]
    using namespace at::indexing;
    hs.prev_token[L] = p.index({Slice(), Slice(), q, q - 1}).mean(at::IntArrayRef{0, 2});
    hs.induction[L] = p.index({Slice(), Slice(), q2, q2 - seg + 1}).mean(at::IntArrayRef{0, 2});
  }
  // copying: log-probability of the correct next token on the second copy, with each head zeroed
  std::vector<int64_t> pos;
  for (int64_t i = seg + 1; i < T - 1; ++i) pos.push_back(i);
  at::Tensor targets = tokens.index_select(1, at::tensor(pos, at::kLong) + 1).to(model.device());
  Metric logprob{"next_token_logprob", pos, [targets](const at::Tensor& lg) {
                   return lg.to(at::kFloat).log_softmax(-1).gather(2, targets.unsqueeze(-1)).squeeze(-1).mean(1);
                 }};
  if (info.edge_points) {  // the direct path: each head's edge to the logits
    CircuitGraph g = CircuitGraph::of(model, CircuitLevel::Edge);
    std::vector<std::vector<bool>> keeps{std::vector<bool>(static_cast<size_t>(g.n_units()), true)};
    for (int L = 0; L < info.n_layers; ++L)
      for (int64_t h = 0; h < info.n_heads; ++h) {
        keeps.push_back(keeps[0]);
        keeps.back()[static_cast<size_t>(g.unit_index(fmt::format("a{}.h{}->logits", L, h)))] = false;
      }
    AblationChoice zero;
    zero.kind = CircuitAblation::Zero;
    at::Tensor v = run_circuits(model, g, {tokens, tokens, logprob, {}}, zero, keeps);
    hs.copying = (v[0] - v.narrow(0, 1, v.size(0) - 1)).view({info.n_layers, info.n_heads}).to(at::kDouble);
    hs.copying_direct = true;
    return hs;
  }
  std::vector<std::vector<Intervention>> variants{{}};
  for (int L = 0; L < info.n_layers; ++L)
    for (int64_t h = 0; h < info.n_heads; ++h)
      variants.push_back({zero_ablation(point_name(PointKind::Z, L), Where{{}, {h}, {}})});
  at::Tensor v = run_variants(model, tokens, variants, logprob);
  hs.copying = (v[0] - v.narrow(0, 1, v.size(0) - 1)).view({info.n_layers, info.n_heads}).to(at::kDouble);
  return hs;
}

}  // namespace interp
