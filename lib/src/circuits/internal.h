// Shared by the circuit sources: the edge engine (batched edge ablation and gradients at receivers).
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "interp/circuits.h"

namespace interp::detail {

// Senders in order: embed, then per layer its heads and its MLP. A receiver at layer L reads a
// prefix of that list: heads read the senders of layers < L, an MLP also its layer's heads, the
// logits all of them.
class EdgeEngine {
 public:
  EdgeEngine(const HookedModel& model, const CircuitGraph& graph);

  int64_t n_senders() const { return static_cast<int64_t>(sender_nodes_.size()); }
  // Each sender's output on `tokens` ([B, pos]): [B, pos, n_senders, d_model].
  at::Tensor sender_values(const at::Tensor& tokens, at::Tensor* logits = nullptr) const;
  // Each receiver group's input on `tokens`, by group (see groups_): [B, pos, heads or 1, d_model].
  std::vector<at::Tensor> receiver_inputs(const at::Tensor& tokens) const;

  // Runs `tokens` once per variant (batched, max_rows rows a forward). In variant v, edge e with
  // swap[v][e] set makes its receiver see source[:, :, sender] instead of the sender's own value in
  // this run; pos_mask ([pos] 0/1, undefined: all) limits where. Returns the metric per variant
  // ([V] float64), or with `logits_fn` set calls it on each variant's logits instead.
  at::Tensor run(const at::Tensor& tokens, const at::Tensor& source, const at::Tensor& swap, const Metric& metric,
                 const at::Tensor& pos_mask, int64_t max_rows, int64_t* forwards, bool progress) const;

  // Σ over prompts and positions of (source - clean)[:, :, sender] · d metric / d receiver input,
  // per edge ([E] float64), where clean is clean_values or, when that is undefined (Ig::None only),
  // the senders' values captured in the gradient run itself; the gradient taken on `tokens`:
  enum class Ig { None, Inputs, Activations };
  // *run_metric (if given): the metric of the run (Ig::None: the clean run's).
  at::Tensor attribution(const at::Tensor& tokens, const at::Tensor& source, const at::Tensor& clean_values,
                         const Metric& metric, Ig ig, int steps, const at::Tensor& embed_from,
                         const std::vector<at::Tensor>& inputs_from, const std::vector<at::Tensor>& inputs_to,
                         int64_t* forwards, double* run_metric = nullptr) const;

 private:
  struct Group {
    std::string hook;     // receiver point
    int64_t n_send = 0;   // sender prefix length
    int64_t heads = 1;    // receivers in the group (heads), 1 for an MLP or the logits
    bool head_axis = false;
    int layer = 0;        // n_layers for the logits
    at::Tensor edge_ids;  // [n_send * heads] int64: the edge of (sender s, receiver h) at s * heads + h
  };
  struct Sender {
    std::string hook;
    int64_t first = 0, count = 1;  // sender indices it provides
    bool head_axis = false;
  };
  const HookedModel& model_;
  const CircuitGraph& graph_;
  std::vector<int> sender_nodes_;
  std::vector<Sender> senders_;
  std::vector<Group> groups_;
};

// Runs circuits of one task under one ablation choice; the ablation values (one forward) are
// computed once, so callers that run many batches (ACDC, faithfulness) pay for them once.
class CircuitRunner {
 public:
  CircuitRunner(const HookedModel& model, const CircuitGraph& graph, const CircuitTask& task,
                const AblationChoice& choice);
  ~CircuitRunner();
  // keep[c][u]: unit u in circuit c. Returns the metric per circuit ([C] float64); *forwards counts
  // the batched forwards (and, the first time, the one that computed the ablation values).
  at::Tensor run(const std::vector<std::vector<bool>>& keep, const CircuitRunOptions& options, int64_t* forwards);

 private:
  const HookedModel& model_;
  const CircuitGraph& graph_;
  CircuitTask task_;
  AblationChoice choice_;
  at::Tensor base_;                          // the run's tokens
  std::vector<int64_t> positions_;           // task positions (empty: all)
  std::unique_ptr<EdgeEngine> engine_;       // edge level
  at::Tensor source_, pos_mask_;             // edge level: ablation values [B, pos, senders, d_model]
  std::map<std::string, at::Tensor> values_; // node level: ablation values by hook
  int64_t setup_forwards_ = 0;
};

// Node level: the points a head (hook_z, its slice) and an MLP (hook_mlp_out) are ablated and
// attributed at, per layer in forward order.
struct NodePoint {
  std::string hook;
  int layer = 0;
};
std::vector<NodePoint> node_points(const CircuitGraph& graph);

// Rows of an integrated-gradients run: `layers` x `steps` blocks of B prompts; block j is layer
// j / steps at step j % steps, a = (j % steps + 1) / steps.
struct IgRows {
  int64_t blocks = 1, rows = 0;
  at::Tensor alpha;  // [rows] float
  at::Tensor layer;  // [rows] int64
};
IgRows ig_rows(int steps, int layers, int64_t B, c10::Device device);

// The task's positions (explicit, or where clean and corrupted differ plus the metric's), sorted.
std::vector<int64_t> task_positions(const CircuitTask& task);
// [pos] float 0/1 mask of positions, on `device`.
at::Tensor position_mask(const std::vector<int64_t>& positions, int64_t n_pos, c10::Device device);
// A seeded permutation of n prompts with no fixed point (n >= 2), for resampling.
std::vector<int64_t> derangement(int64_t n, uint64_t seed);
void check_task(const CircuitTask& task);
// Values [B, pos, ...] of the run ablation values come from, as `choice.kind` wants them: as they are
// (patch), another prompt's (resample: a seeded derangement), the mean over prompts per position
// (mean), or zeros.
at::Tensor ablation_values(const at::Tensor& values, const AblationChoice& choice);

}  // namespace interp::detail
