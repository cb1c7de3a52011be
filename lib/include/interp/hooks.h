// interp/hooks.h: hooks on any TorchScript transformer, with TransformerLens names.
//
// HookedModel loads a TorchScript file (torch.jit.script or torch.jit.trace export) and rewrites a
// copy of its forward graph so that every submodule call's output and every TransformerLens hook
// point is observable and replaceable. The loaded module is never modified and the model author did
// nothing to help: module paths are tracked through the graph, attention/MLP internals are found by
// node patterns. When no hook is active, the rewritten graph computes bit-identical logits.
//
// Hook names: module paths ("blocks.0.attn", "blocks.0.attn.W_Q"...) and the TransformerLens names
//   hook_embed, hook_pos_embed                                     [batch, pos, d_model]
//   blocks.{L}.hook_resid_pre|hook_resid_mid|hook_resid_post       [batch, pos, d_model]
//   blocks.{L}.hook_attn_out|hook_mlp_out                          [batch, pos, d_model]
//   blocks.{L}.attn.hook_q|hook_k|hook_v|hook_z                    [batch, pos, head, d_head]
//   blocks.{L}.attn.hook_attn_scores|hook_pattern                  [batch, head, query, key]
//   blocks.{L}.mlp.hook_pre|hook_post                              [batch, pos, d_mlp]
//   blocks.{L}.ln1.hook_normalized, ln2.hook_normalized, ln_final.hook_normalized
// and where the family has them (rotary, gated MLPs, norms that compute their scale):
//   blocks.{L}.attn.hook_rot_q|hook_rot_k                          [batch, pos, head, d_head]
//   blocks.{L}.mlp.hook_pre_linear                                 [batch, pos, d_mlp]
//   blocks.{L}.ln1.hook_scale, ln2.hook_scale, ln_final.hook_scale [batch, pos, 1]
// With grouped-query attention, hook_k / hook_v / hook_rot_k have n_kv_heads heads.
// For models whose modules are not named as in TransformerLens, a JSON name map (module path
// pattern -> TransformerLens module name, "{L}" for the layer) makes the same names available:
//   {"transformer.h.{L}": "blocks.{L}", "transformer.h.{L}.attn": "blocks.{L}.attn", ...}
//
// Example:
//   auto model = interp::HookedModel::load("model.pt");
//   auto tokens = torch::tensor({{1, 2, 3}});
//   auto [logits, cache] = model.run_with_cache(tokens, interp::names_filter("resid"));
//   at::Tensor r = cache.get("resid_pre", -1);                      // last layer's resid_pre
//   auto zero_head = [](at::Tensor& z, const std::string&) {        // z: [batch, pos, head, d_head]
//     z = z.clone(); z.select(2, 1).zero_(); };
//   at::Tensor patched = model.run_with_hooks(tokens, {{"blocks.0.attn.hook_z", zero_head}});
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace interp {

// A hook sees the activation and may replace it by assigning to `act` (same shape, dtype and
// device). `name` is the name the hook was added under.
using HookFn = std::function<void(at::Tensor& act, const std::string& name)>;

// Which hook points to cache: a predicate on the point's name (any of its names).
using NamesFilter = std::function<bool(const std::string& name)>;

// Filters: exact names, or a regular expression searched in each name (ECMAScript syntax).
NamesFilter names_filter(std::vector<std::string> names);
NamesFilter names_filter(const std::string& regex);

// TransformerLens's utils.get_act_name: ("resid_pre", 3) -> "blocks.3.hook_resid_pre",
// ("pattern", 0) -> "blocks.0.attn.hook_pattern", ("embed") -> "hook_embed". Negative layers count
// from the end when n_layers is given.
std::string act_name(const std::string& short_name, std::optional<int> layer = std::nullopt,
                     std::optional<int> n_layers = std::nullopt);

// What a hook point is, in TransformerLens terms. Set once, where the point is made (the graph
// rewrite); code that needs a point's layer, kind or axes reads these fields, never the name.
enum class PointKind : uint8_t {
  Module,  // a submodule's output with no TransformerLens name
  Embed, PosEmbed,
  ResidPre, ResidMid, ResidPost, AttnOut, MlpOut,
  Ln1, Ln2, LnFinal,  // ln*.hook_normalized
  Q, K, V, Z, AttnScores, Pattern,
  MlpPre, MlpPost,
  // opt-in edge points (LoadOptions::edge_points)
  QInput, KInput, VInput, MlpIn, Result,
  // where the family has them: rotary q/k, the gated MLP's linear branch, a norm's scale
  RotQ, RotK, MlpPreLinear, Ln1Scale, Ln2Scale, LnFinalScale,
};
// act_name's short name of a kind: "resid_pre", "q", "pattern", "q_input", "result" ("" for Module).
const char* kind_name(PointKind kind);
// The full TransformerLens name of a kind at a layer: (ResidPre, 3) -> "blocks.3.hook_resid_pre".
std::string point_name(PointKind kind, int layer = -1);
// The inverse, for a name with no model at hand (an SAE's config): the layer of a
// "blocks.{L}...." name, -1 for any other.
int point_layer(const std::string& name);

// One place in the forward pass where a hook can read or replace the value.
struct HookPoint {
  std::string name;                  // TransformerLens name if there is one, else the module path
  std::vector<std::string> aliases;  // other names of the same value (e.g. the module path)
  std::vector<int64_t> shape;        // from a probe run; kBatch / kPos mark the symbolic dims
  static constexpr int64_t kBatch = -1;
  static constexpr int64_t kPos = -2;
  std::string shape_str() const;     // "[batch, pos, 64]"
  PointKind kind = PointKind::Module;
  int layer = -1;     // blocks.{L}.*: L; ln_final: n_layers; embeddings and other modules: -1
  // Axes of the value (-1: none). hook_pattern / hook_attn_scores: pos is the query axis.
  int pos_axis = -1, head_axis = -1, key_axis = -1;
  int64_t order = 0;  // index in hook_points() (forward order)
};

// A TransformerLens hook point that could not be placed, and why.
struct MissingPoint {
  std::string name;
  std::string reason;
};

class ActivationCache {
 public:
  ActivationCache() = default;
  explicit ActivationCache(int n_layers) : n_layers_(n_layers) {}

  // Full name or any alias of the point. Throws interp::Error listing the closest cached names.
  const at::Tensor& operator[](const std::string& name) const;
  // TransformerLens short names: get("resid_pre", 3), get("pattern", -1), get("embed").
  const at::Tensor& get(const std::string& short_name, std::optional<int> layer = std::nullopt) const;
  bool contains(const std::string& name) const;
  std::vector<std::string> names() const;  // in forward order
  size_t size() const { return order_.size(); }
  int n_layers() const { return n_layers_; }

  void put(const std::string& name, at::Tensor value);  // replaces; keeps first-insertion order
  void alias(const std::string& alias, const std::string& name);  // `alias` finds `name` (if cached)

 private:
  const std::string& resolve(const std::string& name) const;
  int n_layers_ = 0;
  std::vector<std::string> order_;
  std::map<std::string, at::Tensor> values_;
  std::map<std::string, std::string> aliases_;
};

struct LoadOptions {
  std::string device = "cpu";   // "cpu", "cuda", "cuda:1"
  // Module path pattern -> TransformerLens module name: a JSON file, or a shipped map's name
  // ("gpt2", "llama", "neox", "transformer_lens"). Empty (default): detected from the module tree.
  std::string name_map;
  // Add the edge points (TransformerLens's use_split_qkv_input + use_attn_result + use_hook_mlp_in):
  //   blocks.{L}.hook_q_input|hook_k_input|hook_v_input  [batch, pos, head, d_model]
  //   blocks.{L}.attn.hook_result                        [batch, pos, head, d_model]
  //   blocks.{L}.hook_mlp_in                             [batch, pos, d_model]
  // They cost compute (each head's q/k/v projection and output projection run once per head) and
  // make logits differ from the plain run in the last bits (the attention output becomes a sum of
  // per-head results); load() checks that difference and refuses a model where it is not tiny.
  bool edge_points = false;
  // Which of forward's outputs are the logits. "" (default): a tensor is; of a tuple or list, the
  // first tensor element ((logits, past_key_values), nanoGPT's (logits, loss)); of a dict, "logits".
  // Otherwise an element index ("1") or a dict key ("lm_logits").
  std::string output;
};

struct RunOptions {
  bool grad = false;                     // record autograd (for attribution patching)
  std::optional<int> stop_at_layer;      // return the residual stream entering this block (neg: from end)
  // Let hooks change an activation's shape (dtype and device must stay). For engines that know the
  // model's structure, like the batched patcher in interp/patch.h, which widens the batch at a
  // residual point and prepends cached keys/values; the model must cope with the new shapes.
  bool allow_reshape = false;
  // Start the forward at a hook point (a residual-stream point such as "blocks.3.hook_resid_pre")
  // with `start_value` as its value: a copy of the graph without the computation before that point
  // runs (built once per point). Hooks on the point and after it run as usual; anything later that
  // the model computes from the tokens (masks, positions) still comes from `tokens`, so pass tokens
  // of the value's batch and length.
  std::string start_at;
  at::Tensor start_value;
};

class HookedModel;

// Removes its hook when destroyed (or on remove()). Movable, not copyable.
class HookHandle {
 public:
  HookHandle() = default;
  HookHandle(HookHandle&& other) noexcept;
  HookHandle& operator=(HookHandle&& other) noexcept;
  HookHandle(const HookHandle&) = delete;
  HookHandle& operator=(const HookHandle&) = delete;
  ~HookHandle();
  void remove();

 private:
  friend class HookedModel;
  HookHandle(std::weak_ptr<void> owner, uint64_t id) : owner_(std::move(owner)), id_(id) {}
  std::weak_ptr<void> owner_;
  uint64_t id_ = 0;
};

struct ModelInfo {
  int n_layers = 0;       // blocks mapped to blocks.{L}
  int64_t d_model = 0;    // from hook_resid_pre / the residual stream (0 if unknown)
  int64_t d_vocab = 0;    // from the logits
  int64_t n_ctx = 0;      // rows of pos_embed's first parameter (0 if unknown: rotary models have none)
  int64_t n_heads = 0;    // from hook_q (0 if unknown)
  int64_t n_kv_heads = 0; // from hook_k: < n_heads with grouped-query attention (0 if unknown)
  int64_t d_head = 0;
  bool edge_points = false;  // loaded with LoadOptions::edge_points
  std::string name_map;         // the module name map used: a shipped map, a file, or TransformerLens's names
  std::string name_map_reason;  // why that map (detected from the module tree, or given)
};

class HookedModel {
 public:
  // Loads a TorchScript file. Throws interp::Error if the file is missing or not TorchScript.
  static HookedModel load(const std::string& path, const LoadOptions& options = {});

  HookedModel(HookedModel&&) noexcept;
  HookedModel& operator=(HookedModel&&) noexcept;
  ~HookedModel();

  const std::vector<HookPoint>& hook_points() const;
  const std::vector<MissingPoint>& missing_points() const;
  const ModelInfo& info() const;
  const std::string& path() const;
  c10::Device device() const;
  // The point `name` names, or throws interp::Error with the closest valid names.
  const HookPoint& hook_point(const std::string& name) const;
  // hook_point(name), else the one point with a name or alias ending in "." + name: a hook recorded
  // by a tool that names module paths from another root (sparsify's "layers.6" is "model.layers.6").
  // Several such points, or none: interp::Error naming them / the closest.
  const HookPoint& find_point(const std::string& name) const;

  // tokens: [batch, pos] integer ids (any device; moved to the model's). Returns logits.
  at::Tensor forward(const at::Tensor& tokens, const RunOptions& options = {}) const;

  // Caches every point whose name (or an alias) passes `filter` (all points if null).
  std::pair<at::Tensor, ActivationCache> run_with_cache(const at::Tensor& tokens,
                                                        const NamesFilter& filter = nullptr,
                                                        const RunOptions& options = {}) const;

  // Temporary hooks, active for this call only. Hooks on one point run in the given order.
  at::Tensor run_with_hooks(const at::Tensor& tokens,
                            const std::vector<std::pair<std::string, HookFn>>& hooks,
                            const RunOptions& options = {}) const;
  // Both at once: cached values are taken after the hooks ran.
  std::pair<at::Tensor, ActivationCache> run_with_hooks_and_cache(
      const at::Tensor& tokens, const std::vector<std::pair<std::string, HookFn>>& hooks,
      const NamesFilter& filter, const RunOptions& options = {}) const;

  // A persistent hook, active in every run until the handle is destroyed.
  [[nodiscard]] HookHandle add_hook(const std::string& name, HookFn fn);

  // The unmodified loaded module's forward, for comparison (no hooks, same grad handling).
  at::Tensor forward_unhooked(const at::Tensor& tokens, const RunOptions& options = {}) const;

  struct Impl;

 private:
  explicit HookedModel(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace interp
