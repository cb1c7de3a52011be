// Circuit discovery: EAP and EAP-IG (gradients), ACDC (iterative pruning with real ablations) and
// plain per-unit patching, at edge level (edge engine) and node level (hook_z heads, hook_mlp_out).
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <cmath>

#include "circuits/internal.h"
#include "interp/error.h"
#include "interp/patch.h"
#include "interp/util.h"
#include "patch/internal.h"

namespace interp {
namespace {

using Clock = std::chrono::steady_clock;
using Ig = detail::EdgeEngine::Ig;

Ig ig_of(const DiscoveryOptions& o) {
  if (o.method != CircuitMethod::EAPIG) return Ig::None;
  return o.ig_activations ? Ig::Activations : Ig::Inputs;
}

// Node level: Σ (corrupted - clean) · d metric / d output for each head (hook_z, summed over its
// d_head) and MLP (hook_mlp_out), with the same integrated-gradient modes as the edge engine.
at::Tensor node_attribution(const HookedModel& model, const CircuitGraph& graph, const CircuitTask& task, Ig ig,
                            int steps, const AblationChoice& ablation, int64_t* forwards) {
  const at::Tensor clean = task.clean.to(model.device(), at::kLong);
  const at::Tensor corrupted = task.corrupted.to(model.device(), at::kLong);
  const int64_t B = clean.size(0);
  std::vector<std::string> hooks;
  std::vector<int> layer_of;
  for (const auto& p : detail::node_points(graph)) {
    hooks.push_back(p.hook);
    layer_of.push_back(p.layer);
  }
  std::vector<std::string> wanted = hooks;
  wanted.push_back(point_name(PointKind::ResidPre, 0));
  auto clean_run = model.run_with_cache(clean, names_filter(wanted));
  ActivationCache& cl = clean_run.second;  // a plain reference: lambdas below capture it (C++17 cannot capture bindings)
  auto [co_logits, co_run] = model.run_with_cache(corrupted, names_filter(wanted));
  *forwards += 2;
  ActivationCache co;  // the values the ablation replaces with
  for (const auto& n : wanted) co.put(n, detail::ablation_values(co_run[n], ablation));
  const int k = ig == Ig::None ? 1 : steps;
  const int layers = ig == Ig::Activations ? graph.n_layers : 1;
  const detail::IgRows rows = detail::ig_rows(k, layers, B, model.device());
  const int64_t blocks = rows.blocks, R = rows.rows;
  const at::Tensor& alpha = rows.alpha;
  const at::Tensor& row_layer = rows.layer;
  at::AutoGradMode grad_mode(true);
  std::vector<at::Tensor> eps(hooks.size());
  std::vector<std::pair<std::string, HookFn>> hk;
  if (ig == Ig::Inputs)
    hk.emplace_back(point_name(PointKind::ResidPre, 0), [&](at::Tensor& x, const std::string&) {
      at::Tensor from = co[point_name(PointKind::ResidPre, 0)].repeat({blocks, 1, 1});
      x = from + alpha.view({R, 1, 1}) * (x.detach() - from);
    });
  for (size_t i = 0; i < hooks.size(); ++i)
    hk.emplace_back(hooks[i], [&, i](at::Tensor& x, const std::string&) {
      if (ig == Ig::Activations) {
        std::vector<int64_t> view(static_cast<size_t>(x.dim()), 1);
        view[0] = R;
        at::Tensor f = co[hooks[i]], t = cl[hooks[i]];
        std::vector<int64_t> rep(static_cast<size_t>(x.dim()), 1);
        rep[0] = blocks;
        f = f.repeat(rep), t = t.repeat(rep);
        at::Tensor here = (row_layer == layer_of[i]).view(view);
        x = at::where(here, f + alpha.view(view) * (t - f), x);
      }
      eps[i] = at::zeros_like(x).requires_grad_(true);
      x = x + eps[i];
    });
  RunOptions ro;
  ro.grad = true;
  at::Tensor logits = model.run_with_hooks(clean.repeat({blocks, 1}), hk, ro);
  ++*forwards;
  at::Tensor total = at::zeros({}, at::kDouble).to(logits.device());
  for (int64_t j = 0; j < blocks; ++j) total = total + detail::metric_on_run(task.metric, logits.narrow(0, j * B, B));
  total = total / static_cast<double>(k);
  auto grads = torch::autograd::grad({total}, eps, {}, false, false, true);
  at::NoGradGuard ng;
  std::vector<double> out;
  for (size_t i = 0; i < hooks.size(); ++i) {
    std::vector<int64_t> rep(static_cast<size_t>(cl[hooks[i]].dim()), 1);
    rep[0] = blocks;
    at::Tensor diff = (co[hooks[i]] - cl[hooks[i]]).repeat(rep).to(at::kDouble);
    at::Tensor g = grads[i].defined() ? grads[i].to(at::kDouble) : at::zeros_like(diff);
    if (ig == Ig::Activations) {
      std::vector<int64_t> view(static_cast<size_t>(g.dim()), 1);
      view[0] = R;
      g = g * (row_layer == layer_of[i]).to(at::kDouble).view(view);
    }
    at::Tensor prod = diff * g;
    if (prod.dim() == 4) {  // hook_z [R, pos, head, d_head]: one score per head
      at::Tensor per_head = prod.sum({0, 1, 3}).cpu();
      for (int64_t h = 0; h < per_head.size(0); ++h) out.push_back(per_head[h].item<double>());
    } else {
      out.push_back(prod.sum().item<double>());
    }
  }
  return at::tensor(out, at::kDouble);
}

// ACDC (Conmy et al. 2023): units in reverse order (the logits' inputs first, senders from the
// latest), each removed when the objective grows by less than the threshold. The chain of decisions
// is evaluated speculatively in batches: variant j removes the next j units (as if each is removed),
// so a run of removals costs one batched forward, and the first kept unit ends the batch.
void acdc(const HookedModel& model, const CircuitGraph& graph, const CircuitTask& task, const DiscoveryOptions& o,
          CircuitScores& out) {
  const int64_t U = graph.n_units();
  const int64_t B = task.clean.size(0);
  at::Tensor clean_logits = model.forward(task.clean);
  ++out.forwards;
  Metric objective = o.acdc_kl ? kl_to(clean_logits, task.metric.positions.empty() ? std::vector<int64_t>{}
                                                                                     : task.metric.positions)
                               : task.metric;
  CircuitTask t = task;
  t.metric = objective;
  AblationChoice choice = o.ablation;
  choice.restore = false;
  choice.level = graph.level;
  const double clean_value = o.acdc_kl ? 0.0 : out.clean_metric;
  auto obj = [&](double m) { return o.acdc_kl ? m : std::abs(m - clean_value); };
  std::vector<bool> removed(static_cast<size_t>(U), false);
  std::vector<double> score(static_cast<size_t>(U), 0.0);
  std::vector<int64_t> order;
  for (int64_t u = U - 1; u >= 0; --u) order.push_back(u);
  // A head or MLP none of whose outgoing edges is kept cannot matter: its inputs go untested.
  auto dead = [&](int64_t u, const std::vector<bool>& rm) {
    if (graph.level != CircuitLevel::Edge) return false;
    int r = graph.edges[static_cast<size_t>(u)].receiver;
    if (graph.nodes[static_cast<size_t>(r)].kind == CircuitNode::Kind::Logits) return false;
    for (size_t e = 0; e < graph.edges.size(); ++e)
      if (graph.edges[e].sender == r && !rm[e]) return false;
    return true;
  };
  const int64_t per = std::max<int64_t>(1, o.run.max_rows / B);
  using Spec = DiscoveryOptions::Speculation;
  const bool adaptive = o.acdc_speculation == Spec::Adaptive ||
                        (o.acdc_speculation == Spec::Auto && !model.device().is_cuda());
  int64_t width = adaptive ? std::min<int64_t>(4, per) : per;
  detail::CircuitRunner runner(model, graph, t, choice);
  double cur = 0;  // the objective with every unit kept: variant 0 of the first batch
  Progress prog(U, "acdc", o.run.progress);
  // A chain: from `from` on, each unit removed as if every earlier one in the chain was; variant
  // `vi` (-1: removed untested) holds the state after the step, `before` the state before it.
  struct Step {
    size_t pos;
    int64_t unit, vi;
    std::vector<bool> before;
  };
  std::vector<std::vector<bool>> keeps;
  auto build = [&](size_t from, std::vector<bool> state, int64_t max_tested) {
    std::vector<Step> chain;
    int64_t tested = 0;
    for (size_t j = from; j < order.size() && tested < max_tested; ++j) {
      const int64_t u = order[j];
      Step st{j, u, -1, state};
      const bool untested = dead(u, state);
      state[static_cast<size_t>(u)] = true;
      if (!untested) {
        std::vector<bool> keep(static_cast<size_t>(U));
        for (int64_t v = 0; v < U; ++v) keep[static_cast<size_t>(v)] = !state[static_cast<size_t>(v)];
        st.vi = static_cast<int64_t>(keeps.size());
        keeps.push_back(std::move(keep));
        ++tested;
      }
      chain.push_back(std::move(st));
    }
    return chain;
  };
  at::Tensor vals;
  int64_t used = 0;  // evaluated variants whose result counted
  // Walks a chain's results in order; returns the step that was kept (-1: none). *next: where the
  // sequential algorithm continues.
  auto walk = [&](const std::vector<Step>& chain, size_t* next) -> int64_t {
    for (size_t k = 0; k < chain.size(); ++k) {
      const Step& st = chain[k];
      *next = st.pos + 1;
      if (st.vi < 0) {
        removed[static_cast<size_t>(st.unit)] = true;
        continue;
      }
      ++used;
      double v = obj(vals[st.vi].item<double>());
      score[static_cast<size_t>(st.unit)] = v - cur;
      if (v - cur < o.threshold) {
        removed[static_cast<size_t>(st.unit)] = true;
        cur = v;
      } else {
        return static_cast<int64_t>(k);  // kept: what follows was evaluated on a wrong assumption
      }
    }
    return -1;
  };
  // Full batches speculate two levels deep: a main chain, and for each of its steps the chain that
  // follows if that step is kept, so one forward can settle two keeps.
  const bool deep = !adaptive && per >= 32;
  const int64_t main_len = deep ? std::max<int64_t>(2, static_cast<int64_t>(std::sqrt(static_cast<double>(per)))) : per;
  const int64_t side_len = deep ? (per - main_len) / main_len : 0;
  size_t i = 0;
  bool first = true;
  while (i < order.size()) {
    keeps.clear();
    if (first) keeps.emplace_back(static_cast<size_t>(U), true);
    std::vector<Step> main = build(i, removed, deep ? main_len : width);
    std::vector<std::vector<Step>> side(main.size());
    if (deep)
      for (size_t k = 0; k < main.size(); ++k)
        if (main[k].vi >= 0) side[k] = build(main[k].pos + 1, main[k].before, side_len);
    if (!keeps.empty()) {
      vals = runner.run(keeps, {o.run.max_rows, false}, &out.forwards);
      out.rows += static_cast<int64_t>(keeps.size()) * B;
    }
    if (first) cur = obj(vals[0].item<double>());
    first = false;
    used = 0;
    size_t next = i;
    int64_t k = walk(main, &next);
    const bool broke = k >= 0;
    if (broke && deep && !side[static_cast<size_t>(k)].empty()) walk(side[static_cast<size_t>(k)], &next);
    // Adaptive: speculate as far as removals have been running: wider after a batch that never
    // broke, narrower after an early keep (the variants after it were wasted).
    if (adaptive) width = broke ? std::clamp<int64_t>(2 * used, 2, per) : std::min<int64_t>(2 * width, per);
    i = next;
    prog.update(static_cast<int64_t>(i));
  }
  prog.finish();
  out.scores = at::tensor(score, at::kDouble);
  out.kept.assign(static_cast<size_t>(U), false);
  for (int64_t u = 0; u < U; ++u) out.kept[static_cast<size_t>(u)] = !removed[static_cast<size_t>(u)];
}

}  // namespace

CircuitScores discover_circuit(const HookedModel& model, const CircuitGraph& graph, const CircuitTask& task,
                               const DiscoveryOptions& o) {
  detail::check_task(task);
  if (o.method == CircuitMethod::EAPIG && o.ig_steps < 1) throw Error("EAP-IG needs --ig-steps >= 1");
  auto t0 = Clock::now();
  CircuitScores out;
  out.method = o.method;
  const int64_t U = graph.n_units();
  for (int64_t u = 0; u < U; ++u) out.units.push_back(graph.unit_name(u));
  const at::Tensor clean = task.clean.to(model.device(), at::kLong);
  const at::Tensor corrupted = task.corrupted.to(model.device(), at::kLong);
  const int64_t B = clean.size(0);
  const bool edge_eap = graph.level == CircuitLevel::Edge && o.method == CircuitMethod::EAP;
  if (!edge_eap) {  // (edge-level EAP reads both from the runs it needs anyway)
    out.clean_metric = detail::metric_on_run(task.metric, model.forward(clean)).item<double>();
    out.corrupted_metric = detail::metric_on_run(task.metric, model.forward(corrupted)).item<double>();
    out.forwards += 2;
    out.rows += 2 * B;
  }
  switch (o.method) {
    case CircuitMethod::EAP:
    case CircuitMethod::EAPIG: {
      Ig ig = ig_of(o);
      const int64_t steps = ig == Ig::None ? 1 : o.ig_steps;
      if (graph.level == CircuitLevel::Edge) {
        detail::EdgeEngine engine(model, graph);
        at::Tensor co_logits, cl;
        at::Tensor co = engine.sender_values(corrupted, &co_logits);
        out.corrupted_metric = detail::metric_on_run(task.metric, co_logits).item<double>();
        co = detail::ablation_values(co, o.ablation);
        out.forwards += 1;
        out.rows += B;
        if (ig != Ig::None) {
          at::Tensor cl_logits;
          cl = engine.sender_values(clean, &cl_logits);
          out.clean_metric = detail::metric_on_run(task.metric, cl_logits).item<double>();
          out.forwards += 1;
          out.rows += B;
        }
        std::vector<at::Tensor> from, to;
        if (ig == Ig::Activations) {
          from = engine.receiver_inputs(corrupted);
          for (auto& f : from) f = detail::ablation_values(f, o.ablation);
          to = engine.receiver_inputs(clean);
          out.forwards += 2;
          out.rows += 2 * B;
        }
        double run_metric = 0;
        out.scores = engine.attribution(clean, co, cl, task.metric, ig, o.ig_steps, co.select(2, 0), from, to,
                                        &out.forwards, &run_metric);
        if (ig == Ig::None) out.clean_metric = run_metric;
        const int64_t layers = ig == Ig::Activations ? graph.n_layers + 1 : 1;
        out.rows += steps * layers * B;
      } else {
        out.scores = node_attribution(model, graph, task, ig, o.ig_steps, o.ablation, &out.forwards);
        const int64_t layers = ig == Ig::Activations ? graph.n_layers : 1;
        out.rows += 2 * B + steps * layers * B;
      }
      out.backwards = 1;
      break;
    }
    case CircuitMethod::Patching: {
      std::vector<std::vector<bool>> keeps;
      for (int64_t u = 0; u < U; ++u) {
        std::vector<bool> k(static_cast<size_t>(U), true);
        k[static_cast<size_t>(u)] = false;
        keeps.push_back(std::move(k));
      }
      AblationChoice c = o.ablation;
      c.restore = false;
      c.level = graph.level;
      at::Tensor m = run_circuits(model, graph, task, c, keeps, o.run, &out.forwards);
      out.rows += U * B;
      out.scores = m - out.clean_metric;
      break;
    }
    case CircuitMethod::ACDC:
      acdc(model, graph, task, o, out);
      break;
  }
  out.scores = out.scores.to(at::kCPU, at::kDouble);
  out.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return out;
}

}  // namespace interp
