// Running circuits: the metric with everything outside a circuit ablated (or the circuit restored),
// at edge level through the edge engine, at node level through the batched variant runner.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <map>
#include <memory>

#include "circuits/internal.h"
#include "interp/error.h"
#include "interp/patch.h"
#include "patch/internal.h"

namespace interp {

namespace detail {

CircuitRunner::CircuitRunner(const HookedModel& model, const CircuitGraph& graph, const CircuitTask& task,
                             const AblationChoice& choice)
    : model_(model), graph_(graph), task_(task), choice_(choice) {
  check_task(task);
  if (choice.restore && choice.kind != CircuitAblation::Patch)
    throw Error(fmt::format("the restore direction sets circuit units to the paired clean prompt's values; '{}' "
                            "ablation gives no such values (use patch)",
                            ablation_name(choice.kind)));
  if (choice.level == CircuitLevel::Edge && graph.level != CircuitLevel::Edge)
    throw Error("an edge-level ablation needs an edge-level graph");
  const at::Tensor clean = task.clean.to(model.device(), at::kLong);
  const at::Tensor corrupted = task.corrupted.to(model.device(), at::kLong);
  base_ = choice.restore ? corrupted : clean;
  const at::Tensor& from = choice.restore ? clean : corrupted;  // where ablation values come from
  if (choice.task_positions) positions_ = task_positions(task);
  if (choice.level == CircuitLevel::Edge) {
    engine_ = std::make_unique<EdgeEngine>(model, graph);
    source_ = ablation_values(engine_->sender_values(from), choice);
    if (choice.task_positions) pos_mask_ = position_mask(positions_, clean.size(1), model.device());
  } else {
    std::vector<std::string> hooks;
    for (const auto& p : node_points(graph)) hooks.push_back(p.hook);
    if (choice.kind != CircuitAblation::Zero) {
      auto [lg, cache] = model.run_with_cache(from, names_filter(hooks));
      for (const auto& h : hooks) values_[h] = ablation_values(cache[h], choice);
    }
  }
  setup_forwards_ = choice.level == CircuitLevel::Edge || choice.kind != CircuitAblation::Zero ? 1 : 0;
}

CircuitRunner::~CircuitRunner() = default;

at::Tensor CircuitRunner::run(const std::vector<std::vector<bool>>& keep, const CircuitRunOptions& options,
                              int64_t* forwards) {
  const int64_t U = graph_.n_units();
  for (const auto& k : keep)
    if (static_cast<int64_t>(k.size()) != U)
      throw Error(fmt::format("run_circuits: each circuit needs one flag per unit ({}), got {}", U, k.size()));
  if (forwards) *forwards += setup_forwards_;
  setup_forwards_ = 0;  // counted once
  const bool restore = choice_.restore;
  if (engine_) {
    at::Tensor swap = at::zeros({static_cast<int64_t>(keep.size()), U}, at::kFloat);
    auto acc = swap.accessor<float, 2>();
    for (size_t c = 0; c < keep.size(); ++c)
      for (int64_t u = 0; u < U; ++u) acc[static_cast<int64_t>(c)][u] = (keep[c][static_cast<size_t>(u)] == restore) ? 1.f : 0.f;
    return engine_->run(base_, source_, swap, task_.metric, pos_mask_, options.max_rows, forwards, options.progress);
  }
  // Node level: heads through hook_z (one head each), MLPs through hook_mlp_out.
  const std::vector<int64_t> unit_nodes = graph_.unit_nodes();  // the same nodes at either level
  std::vector<std::vector<Intervention>> variants;
  for (const auto& k : keep) {
    std::vector<bool> nk(unit_nodes.size(), false);
    if (graph_.level == CircuitLevel::Node) {
      nk = k;
    } else {  // a node is in the circuit when a kept edge touches it
      for (int64_t e = 0; e < U; ++e) {
        if (!k[static_cast<size_t>(e)]) continue;
        for (int n : {graph_.edges[static_cast<size_t>(e)].sender, graph_.edges[static_cast<size_t>(e)].receiver})
          for (size_t i = 0; i < unit_nodes.size(); ++i)
            if (unit_nodes[i] == n) nk[i] = true;
      }
    }
    std::vector<Intervention> ivs;
    for (size_t i = 0; i < unit_nodes.size(); ++i) {
      if (nk[i] != restore) continue;  // noise: ablate what is out; restore: restore what is in
      const CircuitNode& n = graph_.nodes[static_cast<size_t>(unit_nodes[i])];
      const bool head = n.kind == CircuitNode::Kind::Head;
      std::string hook = point_name(head ? PointKind::Z : PointKind::MlpOut, n.layer);
      Where w;
      if (head) w.heads = {n.head};
      w.positions = positions_;
      ivs.push_back(choice_.kind == CircuitAblation::Zero ? zero_ablation(hook, w) : replace_with(hook, values_.at(hook), w));
    }
    variants.push_back(std::move(ivs));
  }
  VariantOptions vo;
  vo.max_rows = options.max_rows;
  vo.progress = options.progress;
  VariantStats stats;
  at::Tensor out = run_variants(model_, base_, variants, task_.metric, vo, &stats);
  if (forwards) *forwards += stats.forwards;
  return out;
}

}  // namespace detail

at::Tensor run_circuits(const HookedModel& model, const CircuitGraph& graph, const CircuitTask& task,
                        const AblationChoice& choice, const std::vector<std::vector<bool>>& keep,
                        const CircuitRunOptions& options, int64_t* forwards) {
  detail::CircuitRunner runner(model, graph, task, choice);
  return runner.run(keep, options, forwards);
}

}  // namespace interp
