// Shared by the patching sources: where a hook point's axes are and how an intervention edits rows.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "interp/hooks.h"
#include "interp/patch.h"

namespace interp::detail {

// Axes of a hook point's activation (-1: none). For attention patterns `pos` is the query axis.
struct PointAxes {
  std::string name;    // the point's primary name
  int64_t order = 0;   // index in forward order
  int pos = -1, head = -1, key = -1;
  int layer = -1;      // blocks.{L}.*; n_layers for ln_final; -1 otherwise
  PointKind kind = PointKind::Module;
  bool is_kv = false;  // blocks.L.attn.hook_k / hook_v
};

PointAxes point_axes(const HookedModel& model, const std::string& hook);

// An intervention checked against the model and the prompts' length (positions made non-negative).
struct Resolved {
  const Intervention* iv = nullptr;
  PointAxes axes;
  std::vector<int64_t> positions, heads, keys;  // normalised; empty = all
  int64_t min_pos = 0;                          // first position it can change (0: any)
};
Resolved resolve(const HookedModel& model, const Intervention& iv, int64_t n_pos);

std::vector<Resolved> resolve_all(const HookedModel& model, const std::vector<Intervention>& ivs, int64_t n_pos);
// One hook per edited point: it copies the activation and applies each variant's interventions to
// that variant's rows (variant v owns rows [v * rows, (v + 1) * rows)). Positions start at pos_offset
// (see apply). `vars` must outlive the run.
std::vector<std::pair<std::string, HookFn>> variant_hooks(const std::vector<const std::vector<Resolved>*>& vars,
                                                          int64_t rows, int64_t pos_offset, int64_t n_pos);

// A metric's value (mean over prompts) on logits already at its positions, checking what it returns;
// metric_on_run first selects the positions from a run's full logits [batch, pos, vocab]. Tensors
// keep their autograd graph.
at::Tensor metric_on(const Metric& metric, const at::Tensor& logits_at_positions);
at::Tensor metric_on_run(const Metric& metric, const at::Tensor& logits);

// Applies `r` to `rows` (a view of the activation holding one variant's prompts, modified in place).
// pos_offset: the activation's first position in prompt coordinates (the suffix start); keys of
// hook_k / hook_v / patterns are always complete. n_pos: the prompt's length.
void apply(at::Tensor rows, const Resolved& r, int64_t pos_offset, int64_t n_pos);

// Bool mask of the elements a site covers, shaped to broadcast against the full activation
// ([1, ...] with the site's axes full size). shape: the activation's shape.
at::Tensor site_mask(const Resolved& r, at::IntArrayRef shape, int64_t pos_offset);

std::string shape_of(at::IntArrayRef shape);  // "[2, 3]"

std::vector<int64_t> normalize_positions(const std::vector<int64_t>& positions, int64_t n_pos, const std::string& what);

}  // namespace interp::detail
