// Internal: rewrite a TorchScript module's forward graph so that hook points become interp::hook ops.
//
// Method (no cooperation from the model author needed):
//   1. copy the forward graph; track each value's module path through prim::GetAttr chains from self;
//   2. at each prim::CallMethod on a submodule, copy the callee's graph, instrument it recursively
//      (with the submodule's path as prefix), inline it, and put a hook op on the call's output;
//   3. inside modules the name map marks as attention / MLP / block, find the TransformerLens points
//      by node patterns (softmax -> pattern, its input -> attn_scores, the score matmul's operands
//      -> q, k, ...).
// The result runs as a new GraphFunction with the module as first input; the module is untouched.
#pragma once

#include <torch/csrc/jit/api/module.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "hooks/names.h"
#include "interp/hooks.h"

namespace interp::detail {

// How hooks see a value that the graph holds in another form: hooks get view(x) (a permutation of
// the axes, or 1/x), and a replacement r flows on as the inverse (r.permute(inverse), 1/r). A point
// whose hooks only read passes x on untouched, so inactive and read-only runs stay bit-identical.
struct PointView {
  std::vector<int64_t> perm;  // hooks see x.permute(perm) (empty: as is)
  bool reciprocal = false;    // hooks see 1/x (a norm that computes rsqrt: TransformerLens's scale is sqrt)
  // >= 0: a read-only point derived from x, the input of a fused layer_norm with this eps: hooks see
  // sqrt(var(x) + eps) (TransformerLens's hook_scale), computed only when the point is active; the op
  // passes x on untouched and its output feeds nothing. A hook that replaces the value is an error.
  double layer_norm_eps = -1;
  bool derived() const { return layer_norm_eps >= 0; }
  bool empty() const { return perm.empty() && !reciprocal && !derived(); }
};

struct RewrittenPoint {
  std::vector<PointTag> names;  // module path and/or TransformerLens names; names[0] is primary
  bool clone_on_capture = false;   // the graph later modifies this value in place
  PointView view;
};

struct Rewrite {
  std::shared_ptr<torch::jit::Graph> graph;  // inputs: (self, forward's other inputs...)
  std::vector<RewrittenPoint> points;        // indexed by the hook op's id
  std::map<std::string, std::string> failures;  // TransformerLens name -> why it could not be placed
  std::vector<std::string> expected;            // family-specific points looked for (rot_q, hook_scale, ...)
  std::map<int, bool> blocks;                // layer -> has an MLP
  std::string pos_embed_path;                // module path of pos_embed ("" if none)
  int n_candidate_groups = 0;                // tags with group >= 0: see PointTag::group
};

Rewrite rewrite_forward(const torch::jit::Module& module, const NameMap& names);

// Adds the opt-in edge points to rw.graph (edit a copy: a graph that has run is not re-read), as
// TransformerLens's use_split_qkv_input / use_attn_result / use_hook_mlp_in do:
//   blocks.L.hook_q_input / k_input / v_input [batch, pos, head, d_model]: the block's input, one copy
//     per head; head h's query (key, value) is computed from copy h alone (the graph between the
//     block input and hook_q is cloned once per head);
//   blocks.L.attn.hook_result [batch, pos, head, d_model]: head h's share of the attention output
//     (the graph between hook_z and the attention output, applied to head h's z alone, minus the
//     same applied to zeros); the attention output becomes their sum plus that constant;
//   blocks.L.hook_mlp_in [batch, pos, d_model]: resid_mid as the MLP sees it (not the skip path).
// n_heads, n_kv_heads from the probe (hook_q, hook_k). A point that cannot be placed goes to
// rw.failures with the reason (with grouped-query attention: the key and value inputs).
void add_edge_points(Rewrite& rw, int n_layers, int64_t n_heads, int64_t n_kv_heads);

}  // namespace interp::detail
