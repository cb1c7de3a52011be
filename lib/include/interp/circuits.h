// interp/circuits.h: circuit discovery (EAP, EAP-IG, ACDC) and faithfulness under every ablation.
//
// The graph: nodes are the embedding (token + position), each attention head, each MLP and the
// logits. An edge joins a sender to a later receiver: every receiver's input is the sum of the
// earlier senders' outputs on the residual stream, and a head's input is split into its query, key
// and value inputs. Names follow EAP-IG: "embed", "a1.h0", "m0", "logits"; edges
// "a0.h2->a1.h0<k>", "m0->logits". Edge level needs the model loaded with LoadOptions::edge_points
// (hook_q/k/v_input, attn.hook_result, hook_mlp_in); node level (heads and MLPs) works on any model.
//
// Ablating an edge changes one receiver's input only: the receiver sees the sender's ablated value
// (zero, the mean over the corrupted prompts, the paired corrupted prompt's value, or a resampled
// corrupted prompt's value) instead of the value the sender has in this run; every other receiver
// still sees the run's own value. A circuit is run by ablating every edge outside it.
//
// Faithfulness numbers swing with that choice, so every number is computed under each ablation
// (zero / mean / patch / resample), both directions (noise: the clean run with the rest ablated;
// restore: the corrupted run with the circuit restored from the clean run), at all positions or only
// the task's, at edge and node level, and reported side by side with their spread.
//
// Example:
//   interp::LoadOptions lo;
//   lo.edge_points = true;
//   auto model = interp::HookedModel::load("induction.pt", lo);
//   auto graph = interp::CircuitGraph::of(model, interp::CircuitLevel::Edge);
//   interp::CircuitTask task{clean, corrupted, interp::logit_diff(answers, wrong)};
//   auto scores = interp::discover_circuit(model, graph, task, {});          // EAP
//   auto report = interp::faithfulness(model, graph, task, scores, {}, interp::ablation_choices(graph));
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "interp/hooks.h"
#include "interp/metrics.h"

namespace interp {

// ---- the graph ----------------------------------------------------------------------------------
enum class CircuitLevel { Edge, Node };

struct CircuitNode {
  enum class Kind { Embed, Head, Mlp, Logits } kind = Kind::Embed;
  int layer = -1;  // -1 for embed; n_layers for logits
  int head = -1;
  std::string name;  // "embed", "a1.h0", "m0", "logits"
};

struct CircuitEdge {
  int sender = 0, receiver = 0;  // indices into CircuitGraph::nodes
  char input = 0;                // 'q', 'k', 'v' into a head; 0 into an MLP or the logits
  std::string name;              // "a0.h2->a1.h0<k>"
};

class CircuitGraph {
 public:
  // Edge level throws interp::Error unless the model was loaded with edge points.
  static CircuitGraph of(const HookedModel& model, CircuitLevel level);

  CircuitLevel level = CircuitLevel::Edge;
  int n_layers = 0;
  int64_t n_heads = 0;
  bool has_mlp = false;
  std::vector<CircuitNode> nodes;  // embed, then per layer its heads and MLP, then logits
  std::vector<CircuitEdge> edges;  // edge level: ordered by receiver, then sender

  // The units a circuit is made of and scored per: edges at edge level, heads and MLPs at node level.
  int64_t n_units() const;
  const std::string& unit_name(int64_t i) const;
  int64_t unit_index(const std::string& name) const;  // throws interp::Error with the closest names
  std::vector<int64_t> unit_nodes() const;            // node level: the node index of each unit
  int node_index(const std::string& name) const;      // -1 if none
};

// ---- a task -----------------------------------------------------------------------------------
struct CircuitTask {
  at::Tensor clean, corrupted;  // [n, pos] token ids, same shape
  Metric metric;                // what the circuit must preserve (e.g. logit_diff at the last position)
  // The task's token positions, for ablations restricted to them. Empty: the positions where clean
  // and corrupted differ in any prompt, and the metric's positions.
  std::vector<int64_t> positions;
};

// ---- ablation choices -------------------------------------------------------------------------
enum class CircuitAblation { Zero, Mean, Patch, Resample };
const char* ablation_name(CircuitAblation a);  // "zero", "mean", "patch", "resample"
CircuitAblation parse_ablation(const std::string& name);  // throws interp::Error

struct AblationChoice {
  CircuitAblation kind = CircuitAblation::Patch;
  // false (noise): the clean run, units outside the circuit ablated. true (restore): the corrupted
  // run, units inside the circuit set to the paired clean prompt's values (patch only).
  bool restore = false;
  bool task_positions = false;  // ablate (restore) only at the task's positions
  CircuitLevel level = CircuitLevel::Edge;  // node: a circuit of edges keeps the nodes its edges touch
  uint64_t seed = 0;            // resample: which corrupted prompt each prompt draws
  std::string label() const;    // "mean / noise / all pos / edge"
};
// Every combination that applies to the graph (edge-level choices only with an edge graph).
std::vector<AblationChoice> ablation_choices(const CircuitGraph& graph);

struct CircuitRunOptions {
  int64_t max_rows = 256;  // rows (circuits x prompts) per forward
  bool progress = false;   // progress with rate and ETA on stderr
};

// The metric (mean over prompts) with each circuit kept: keep[c][u] = unit u is in circuit c.
// Returns [circuits] float64. Node-level choices on an edge graph keep every head / MLP that a kept
// edge touches. *forwards (if given) counts the batched forwards run.
at::Tensor run_circuits(const HookedModel& model, const CircuitGraph& graph, const CircuitTask& task,
                        const AblationChoice& choice, const std::vector<std::vector<bool>>& keep,
                        const CircuitRunOptions& options = {}, int64_t* forwards = nullptr);

// ---- discovery ----------------------------------------------------------------------------------
enum class CircuitMethod { EAP, EAPIG, ACDC, Patching };
const char* method_name(CircuitMethod m);  // "eap", "eap-ig", "acdc", "patching"
CircuitMethod parse_method(const std::string& name);

struct DiscoveryOptions {
  CircuitMethod method = CircuitMethod::EAP;
  int ig_steps = 5;             // EAP-IG: interpolation steps
  bool ig_activations = false;  // EAP-IG: interpolate each receiver's input (else the embedding)
  double threshold = 0.01;      // ACDC: remove an edge when the objective grows by less than this
  bool acdc_kl = true;          // ACDC's objective: KL(clean || circuit) at the metric's positions,
                                // else |metric(circuit) - metric(clean)|
  // ACDC's speculative batches (docs/circuits.md): Full fills every batch, two levels deep when a
  // batch holds 32 variants or more (fewest forwards: what a GPU wants); Adaptive grows the batch
  // while removals run and shrinks it after a keep (fewest wasted rows: what a CPU wants). Auto:
  // Full on CUDA, Adaptive on CPU. The circuit is the same.
  enum class Speculation { Auto, Adaptive, Full } acdc_speculation = Speculation::Auto;
  // ACDC and Patching: how units are removed (noise direction). EAP / EAP-IG: the values whose
  // difference from the clean run is attributed (patch, the default: the corrupted prompts; mean:
  // their mean per position; zero; resample).
  AblationChoice ablation;
  CircuitRunOptions run;
};

struct CircuitScores {
  CircuitMethod method = CircuitMethod::EAP;
  std::vector<std::string> units;
  // EAP / EAP-IG: the estimated change of the metric when the unit alone is patched (corrupted
  // values). Patching: the measured change. ACDC: the objective's change when the unit was removed
  // (0 for units removed untested because nothing downstream used them).
  at::Tensor scores;        // [n_units] float64
  std::vector<bool> kept;   // ACDC: its circuit; the others: empty
  double clean_metric = 0, corrupted_metric = 0;
  int64_t forwards = 0;     // batched forwards run (a backward counts as none here; see backwards)
  int64_t backwards = 0;
  int64_t rows = 0;         // prompt rows over all forwards
  double seconds = 0;
  std::vector<int64_t> ranking() const;  // unit indices by |score|, largest first (ACDC: kept first)
};

CircuitScores discover_circuit(const HookedModel& model, const CircuitGraph& graph, const CircuitTask& task,
                               const DiscoveryOptions& options = {});

// ---- faithfulness -----------------------------------------------------------------------------
struct FaithfulnessCurve {
  AblationChoice choice;
  std::vector<int64_t> sizes;       // units kept: the top `size` units of the ranking
  std::vector<double> metric;       // the metric of each circuit
  std::vector<double> normalized;   // (metric - empty) / (full - empty); NaN when full == empty
  double full = 0, empty = 0;       // every unit kept / none kept
  std::map<int, int64_t> smallest;  // 80, 90, 95 -> the smallest size reaching that % (-1: none)
};

struct FaithfulnessReport {
  std::vector<FaithfulnessCurve> curves;  // one per choice
  std::vector<int64_t> sizes;
  std::vector<double> spread;             // per size: max - min of normalized over the choices
  int64_t forwards = 0;
  double seconds = 0;
};

// sizes empty: 0, 1, 2, 3, 5, 10, 20, 50, 100, ... up to all units.
FaithfulnessReport faithfulness(const HookedModel& model, const CircuitGraph& graph, const CircuitTask& task,
                                const CircuitScores& scores, std::vector<int64_t> sizes,
                                const std::vector<AblationChoice>& choices, const CircuitRunOptions& options = {});

// ---- head scores ------------------------------------------------------------------------------
// On `n` sequences of `seg` random tokens repeated once ([n, 1 + 2 seg], first token `bos`):
// previous-token score (mean attention to the previous position), induction score (attention from
// the second copy to the token after the earlier copy: prefix matching) and copying score (the drop
// in log-probability of the correct next token on the second copy when the head's direct path to
// the logits is zero-ablated; without edge points, when the head is zero-ablated: its total effect).
struct HeadScores {
  at::Tensor prev_token, induction, copying;  // [n_layers, n_heads] float64
  bool copying_direct = false;                // copying measured on the direct path (edge points)
};
HeadScores head_scores(const HookedModel& model, int64_t n = 32, int64_t seg = 10, uint64_t seed = 0,
                       int64_t bos = 0);

// ---- output -----------------------------------------------------------------------------------
std::string scores_json(const CircuitGraph& graph, const CircuitScores& scores);
std::string faithfulness_json(const FaithfulnessReport& report);
// The graph laid out by layer; the top `keep` units drawn with width by |score|.
std::string circuit_svg(const CircuitGraph& graph, const CircuitScores& scores, int64_t keep);
// Faithfulness curves (one line per choice) as SVG.
std::string faithfulness_svg(const FaithfulnessReport& report);
std::string circuit_html(const CircuitGraph& graph, const CircuitScores& scores, const FaithfulnessReport& report,
                         const std::string& graph_svg, const std::string& curves_svg,
                         const std::vector<std::pair<std::string, std::string>>& facts);

}  // namespace interp
