// interp/patch.h: interventions, activation patching (batched), path patching, attribution patching.
//
// Interventions edit one hook point's activation, restricted to positions and heads:
//   zero, mean (over reference prompts, per position or pooled), resample (from other prompts, with
//   a seed), replace (with a given tensor), add (a direction times a scale: steering), scale.
// Several interventions compose in one run (they apply in the order given).
//
// Activation patching runs many variants of one base run, each with its own interventions, stacked
// along the batch. A variant's first residual point ("entry": blocks.L.hook_resid_pre/mid/post) is
// where its rows split off from the base run, so the layers below it run once per batch, not once
// per variant. Under causal attention the positions before a variant's first edited position are
// unchanged too: with reuse = Suffix the batch runs only the later positions, with the earlier
// keys/values taken from the base run's cache. Only the positions the metric reads are unembedded.
// Each shortcut is verified once per call against a plain run of the same model (the check's max
// difference is reported); a model that fails it runs with the next safer mode. Results equal running
// each variant alone (tests/patch proves it against a plain-PyTorch golden).
//
// Example (denoising: clean activations into the corrupted run, logit difference at the last token):
//   auto metric = interp::logit_diff(answers, wrong);            // [batch] token ids
//   auto r = interp::patch_sweep(model, clean, corrupted, "resid_pre", {"layer", "pos"}, metric);
//   r.normalized  // [n_layers, pos]: 0 = the corrupted run's metric, 1 = the clean run's
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "interp/hooks.h"
#include "interp/metrics.h"

namespace interp {

// Which part of an activation an intervention touches; an empty list means all.
//   positions: sequence positions (for hook_pattern / hook_attn_scores: query positions)
//   heads: for points with a head axis (hook_q/k/v/z: axis 2; hook_pattern / hook_attn_scores: axis 1)
//   key_positions: hook_pattern / hook_attn_scores only
// Negative positions count from the end of the sequence.
struct Where {
  std::vector<int64_t> positions;
  std::vector<int64_t> heads;
  std::vector<int64_t> key_positions;
};

struct Intervention {
  enum class Op { Replace, Add, Scale };
  std::string hook;     // hook point name (any name `interp hooks` lists)
  Where where;
  Op op = Op::Replace;
  // Replace: the new values; Add: what is added. Either the activation's full shape for the run's
  // prompts ([batch or 1, pos, ...], positions as in the prompt), or trailing dims that broadcast
  // (a direction [d_model]).
  at::Tensor value;
  double factor = 1.0;  // Scale: multiplies; Add: multiplies `value`
  std::string label;    // for results, e.g. "zero blocks.0.attn.hook_z head 3"
};

Intervention zero_ablation(const std::string& hook, const Where& where = {});
Intervention replace_with(const std::string& hook, at::Tensor value, const Where& where = {});
Intervention add_direction(const std::string& hook, at::Tensor direction, double scale, const Where& where = {});
Intervention scale_by(const std::string& hook, double factor, const Where& where = {});
// The mean of `hook` over `reference` prompts ([n, pos] tokens): per position ([1, pos, ...]) or
// pooled over positions too ([1, 1, ...], for prompts of another length).
Intervention mean_ablation(const HookedModel& model, const std::string& hook, const at::Tensor& reference,
                           bool per_position = true, const Where& where = {});
// Each of `batch` prompts gets `hook`'s value on a prompt drawn (seeded, with replacement) from
// `source` ([n, pos] tokens, same length as the prompts it is used on).
Intervention resample_ablation(const HookedModel& model, const std::string& hook, const at::Tensor& source,
                               int64_t batch, uint64_t seed, const Where& where = {});

// One run with interventions composed in order. Throws interp::Error for a bad hook, head, position
// or a value whose shape does not fit.
at::Tensor run_with_interventions(const HookedModel& model, const at::Tensor& tokens,
                                  const std::vector<Intervention>& interventions, const RunOptions& options = {});

// ---- batched variants -------------------------------------------------------------------------
struct VariantOptions {
  enum class Reuse { Auto, Suffix, Layers, None };
  // Auto: the fastest mode that passes the check on this model. Suffix: skip layers below the entry
  // and positions before the first edited one. Layers: skip layers only. None: plain batching.
  Reuse reuse = Reuse::Auto;
  int64_t max_rows = 128;         // rows (variants x prompts) per forward
  int64_t overhead_tokens = 128;  // batch planning: a forward's fixed cost in tokens
  bool progress = false;          // print progress with rate and ETA to stderr
};

struct VariantStats {
  std::string mode;         // "suffix", "layers" or "none"
  std::string fallback;     // why a faster mode was not used ("" if none)
  double base_value = 0;      // the metric on the run without interventions
  double check_max_diff = 0;  // logits max |diff| of the shortcut check vs the plain run
  int64_t forwards = 0;       // batched forwards run
  int64_t rows = 0;           // rows over all forwards
  int64_t row_tokens = 0;     // sum of rows x positions run (positions after reuse)
  double seconds = 0;
};

// Metric value (mean over prompts) of each variant, run on `tokens` ([batch, pos]) with its
// interventions. Returns [variants] float64.
at::Tensor run_variants(const HookedModel& model, const at::Tensor& tokens,
                        const std::vector<std::vector<Intervention>>& variants, const Metric& metric,
                        const VariantOptions& options = {}, VariantStats* stats = nullptr);

// ---- activation patching ----------------------------------------------------------------------
enum class Direction { Denoise, Noise };  // Denoise: clean into the corrupted run; Noise: the reverse

// One place to patch: a hook point and which part of it.
struct PatchSite {
  std::string hook;
  Where where;
  std::string label;
};

struct PatchResult {
  std::string hook;                  // short name of a sweep ("resid_pre") or "" for generic sites
  std::vector<std::string> axes;     // e.g. {"layer", "pos"}
  std::vector<int64_t> shape;        // the sweep's shape, e.g. {n_layers, pos}
  std::vector<std::string> labels;   // one per site, in order
  at::Tensor values;                 // metric per site, float64, `shape`
  at::Tensor normalized;             // (value - corrupted) / (clean - corrupted)
  double clean = 0, corrupted = 0;   // the metric on the unpatched runs
  std::string metric, direction;
  VariantStats stats;
};

// Generic activation patching: each site is patched alone with the other run's activation.
PatchResult activation_patching(const HookedModel& model, const at::Tensor& clean, const at::Tensor& corrupted,
                                const std::vector<PatchSite>& sites, const Metric& metric,
                                Direction direction = Direction::Denoise, const VariantOptions& options = {});

// Named sweeps. short_hook: resid_pre|resid_mid|resid_post|attn_out|mlp_out with by {layer,pos} (or
// {layer}: all positions at once); z with {layer,head} (all positions) or {layer,head,pos}; pattern
// with {layer,head}. Other hooks by {layer,pos} / {layer}. Throws interp::Error for other combinations.
std::vector<PatchSite> sweep_sites(const HookedModel& model, const std::string& short_hook,
                                   const std::vector<std::string>& by, int64_t n_pos,
                                   std::vector<int64_t>* shape = nullptr);
PatchResult patch_sweep(const HookedModel& model, const at::Tensor& clean, const at::Tensor& corrupted,
                        const std::string& short_hook, const std::vector<std::string>& by, const Metric& metric,
                        Direction direction = Direction::Denoise, const VariantOptions& options = {});

// Ablation sweep: each site is ablated alone (zero, mean over `reference`, or resample from
// `reference` with `seed`), on `tokens`. normalized: (value - ablated-nothing) kept as `values`;
// `clean` holds the unablated metric and `corrupted` is 0.
enum class Ablation { Zero, Mean, Resample };
PatchResult ablation_sweep(const HookedModel& model, const at::Tensor& tokens, const at::Tensor& reference,
                           const std::vector<PatchSite>& sites, Ablation ablation, const Metric& metric,
                           uint64_t seed = 0, const VariantOptions& options = {});

// ---- path patching ----------------------------------------------------------------------------
// As in the IOI paper (Wang et al. 2022): the senders' outputs take their values from the other run,
// every other attention head's hook_z is frozen to the base run, and the receivers' inputs
// (hook_q/k/v of given heads, or any point) are recorded; then the base run is repeated with only
// the receivers patched to those recorded values. Noise (default here): clean is the base run.
// Returns the metric of the final run.
double path_patching(const HookedModel& model, const at::Tensor& clean, const at::Tensor& corrupted,
                     const std::vector<PatchSite>& senders, const std::vector<PatchSite>& receivers,
                     const Metric& metric, Direction direction = Direction::Noise);
// Every head (hook_z, all positions) as a sender to the given receivers: [n_layers, n_heads].
PatchResult path_patch_heads(const HookedModel& model, const at::Tensor& clean, const at::Tensor& corrupted,
                             const std::vector<PatchSite>& receivers, const Metric& metric,
                             Direction direction = Direction::Noise);

// ---- attribution patching ---------------------------------------------------------------------
// Linear approximation of patching every element of the sweep's hook points:
// (source - base) . d metric / d activation at the base run, in two forwards and one backward,
// reduced to the same sites as sweep_sites (sum over the elements of each site).
PatchResult attribution_patching(const HookedModel& model, const at::Tensor& clean, const at::Tensor& corrupted,
                                 const std::string& short_hook, const std::vector<std::string>& by,
                                 const Metric& metric, Direction direction = Direction::Denoise);

// JSON of a result (values, normalized, labels, baselines, stats).
std::string to_json(const PatchResult& result, int indent = 2);

}  // namespace interp
