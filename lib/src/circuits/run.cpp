// Running circuits: the metric with everything outside a circuit ablated (or the circuit restored),
// at edge level through the edge engine, at node level through the batched variant runner.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <map>

#include "circuits/internal.h"
#include "interp/error.h"
#include "interp/patch.h"
#include "patch/internal.h"

namespace interp {

at::Tensor run_circuits(const HookedModel& model, const CircuitGraph& graph, const CircuitTask& task,
                        const AblationChoice& choice, const std::vector<std::vector<bool>>& keep,
                        const CircuitRunOptions& options, int64_t* forwards) {
  detail::check_task(task);
  const int64_t U = graph.n_units();
  for (const auto& k : keep)
    if (static_cast<int64_t>(k.size()) != U)
      throw Error(fmt::format("run_circuits: each circuit needs one flag per unit ({}), got {}", U, k.size()));
  if (choice.restore && (choice.kind == CircuitAblation::Zero || choice.kind == CircuitAblation::Mean))
    throw Error(fmt::format("the restore direction takes its values from the clean run; '{}' ablation has no "
                            "clean values to restore (use patch or resample)",
                            ablation_name(choice.kind)));
  if (choice.level == CircuitLevel::Edge && graph.level != CircuitLevel::Edge)
    throw Error("an edge-level ablation needs an edge-level graph");
  const at::Tensor clean = task.clean.to(model.device(), at::kLong);
  const at::Tensor corrupted = task.corrupted.to(model.device(), at::kLong);
  const int64_t B = clean.size(0), T = clean.size(1);
  const at::Tensor& base = choice.restore ? corrupted : clean;
  const at::Tensor& from = choice.restore ? clean : corrupted;  // where ablation values come from
  std::vector<int64_t> positions;
  if (choice.task_positions) positions = detail::task_positions(task);
  auto shape_source = [&](const at::Tensor& v) { return detail::ablation_values(v, choice); };

  if (choice.level == CircuitLevel::Edge) {
    detail::EdgeEngine engine(model, graph);
    at::Tensor source = shape_source(engine.sender_values(from));
    at::Tensor swap = at::zeros({static_cast<int64_t>(keep.size()), U}, at::kFloat);
    auto acc = swap.accessor<float, 2>();
    for (size_t c = 0; c < keep.size(); ++c)
      for (int64_t u = 0; u < U; ++u) acc[static_cast<int64_t>(c)][u] = (keep[c][static_cast<size_t>(u)] == choice.restore) ? 1.f : 0.f;
    at::Tensor pos_mask = choice.task_positions ? detail::position_mask(positions, T, model.device()) : at::Tensor();
    return engine.run(base, source, swap, task.metric, pos_mask, options.max_rows, forwards, options.progress);
  }

  // Node level: heads through hook_z (one head each), MLPs through hook_mlp_out.
  const std::vector<int64_t> unit_nodes = graph.unit_nodes();  // the same nodes at either level
  std::vector<std::vector<bool>> node_keep;
  for (const auto& k : keep) {
    std::vector<bool> nk(unit_nodes.size(), false);
    if (graph.level == CircuitLevel::Node) {
      nk = k;
    } else {  // a node is in the circuit when a kept edge touches it
      for (int64_t e = 0; e < U; ++e) {
        if (!k[static_cast<size_t>(e)]) continue;
        for (int n : {graph.edges[static_cast<size_t>(e)].sender, graph.edges[static_cast<size_t>(e)].receiver})
          for (size_t i = 0; i < unit_nodes.size(); ++i)
            if (unit_nodes[i] == n) nk[i] = true;
      }
    }
    node_keep.push_back(nk);
  }
  std::vector<std::string> hooks;
  for (int L = 0; L < graph.n_layers; ++L) {
    hooks.push_back(point_name(PointKind::Z, L));
    if (graph.has_mlp) hooks.push_back(point_name(PointKind::MlpOut, L));
  }
  std::map<std::string, at::Tensor> values;
  if (choice.kind != CircuitAblation::Zero) {
    auto [lg, cache] = model.run_with_cache(from, names_filter(hooks));
    for (const auto& h : hooks) values[h] = shape_source(cache[h]);
  }
  std::vector<std::vector<Intervention>> variants;
  for (const auto& nk : node_keep) {
    std::vector<Intervention> ivs;
    for (size_t i = 0; i < unit_nodes.size(); ++i) {
      if (nk[i] != choice.restore) continue;  // noise: ablate what is out; restore: restore what is in
      const CircuitNode& n = graph.nodes[static_cast<size_t>(unit_nodes[i])];
      const bool head = n.kind == CircuitNode::Kind::Head;
      std::string hook = point_name(head ? PointKind::Z : PointKind::MlpOut, n.layer);
      Where w;
      if (head) w.heads = {n.head};
      w.positions = positions;
      ivs.push_back(choice.kind == CircuitAblation::Zero ? zero_ablation(hook, w) : replace_with(hook, values.at(hook), w));
    }
    variants.push_back(std::move(ivs));
  }
  VariantOptions vo;
  vo.max_rows = options.max_rows;
  vo.progress = options.progress;
  VariantStats stats;
  at::Tensor out = run_variants(model, base, variants, task.metric, vo, &stats);
  if (forwards) *forwards += stats.forwards;
  return out;
}

}  // namespace interp
