#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>

#include "interp/error.h"
#include "interp/patch.h"
#include "interp/util.h"
#include "patch/internal.h"

namespace interp {
namespace detail {

std::string shape_of(at::IntArrayRef s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

PointAxes point_axes(const HookedModel& model, const std::string& hook) {
  const HookPoint& p = model.hook_point(hook);
  PointAxes a;
  a.name = p.name;
  a.order = p.order;
  a.layer = p.layer;
  a.pos = p.pos_axis, a.head = p.head_axis, a.key = p.key_axis;
  a.kind = p.kind;
  a.is_kv = p.kind == PointKind::K || p.kind == PointKind::V;
  return a;
}

std::vector<int64_t> normalize_positions(const std::vector<int64_t>& positions, int64_t n_pos, const std::string& what) {
  std::vector<int64_t> out;
  for (int64_t p : positions) {
    int64_t q = p < 0 ? p + n_pos : p;
    if (q < 0 || q >= n_pos)
      throw Error(fmt::format("{}: position {} is outside prompts of {} tokens (valid: 0..{}, or -1..-{})", what, p,
                              n_pos, n_pos - 1, n_pos));
    out.push_back(q);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Resolved resolve(const HookedModel& model, const Intervention& iv, int64_t n_pos) {
  Resolved r;
  r.iv = &iv;
  r.axes = point_axes(model, iv.hook);
  const std::string what = fmt::format("intervention on '{}'", iv.hook);
  if (!iv.where.positions.empty() && r.axes.pos < 0)
    throw Error(fmt::format("{}: the point has no position axis; leave positions empty", what));
  if (!iv.where.heads.empty() && r.axes.head < 0)
    throw Error(fmt::format("{}: the point has no head axis (heads exist on attn.hook_q/k/v/z/pattern/attn_scores)", what));
  if (!iv.where.key_positions.empty() && r.axes.key < 0)
    throw Error(fmt::format("{}: key positions apply to attn.hook_pattern and attn.hook_attn_scores only", what));
  r.positions = normalize_positions(iv.where.positions, n_pos, what);
  r.keys = normalize_positions(iv.where.key_positions, n_pos, what);
  int64_t n_heads = model.info().n_heads;
  for (int64_t h : iv.where.heads)
    if (h < 0 || (n_heads > 0 && h >= n_heads))
      throw Error(fmt::format("{}: head {} does not exist (the model has {} heads: 0..{})", what, h, n_heads, n_heads - 1));
  r.heads = iv.where.heads;
  std::sort(r.heads.begin(), r.heads.end());
  r.heads.erase(std::unique(r.heads.begin(), r.heads.end()), r.heads.end());
  r.min_pos = r.positions.empty() ? 0 : r.positions.front();
  if ((iv.op == Intervention::Op::Replace || iv.op == Intervention::Op::Add) && !iv.value.defined())
    throw Error(fmt::format("{}: no value given", what));
  return r;
}

at::Tensor site_mask(const Resolved& r, at::IntArrayRef shape, int64_t pos_offset) {
  std::vector<int64_t> ms(shape.size(), 1);
  at::Tensor mask;
  auto axis_mask = [&](int axis, const std::vector<int64_t>& idx, int64_t offset) {
    if (axis < 0 || idx.empty()) return;
    std::vector<int64_t> s(shape.size(), 1);
    s[axis] = shape[axis];
    at::Tensor m = at::zeros({shape[axis]}, at::kBool);
    std::vector<int64_t> local;
    for (int64_t i : idx)
      if (i - offset >= 0 && i - offset < shape[axis]) local.push_back(i - offset);
    if (!local.empty()) m.index_fill_(0, at::tensor(local, at::kLong), true);
    m = m.view(s);
    mask = mask.defined() ? mask.logical_and(m) : m;
  };
  bool kv_full = r.axes.is_kv;  // keys/values arrive complete (cached prefix prepended first)
  axis_mask(r.axes.pos, r.positions, kv_full ? 0 : pos_offset);
  axis_mask(r.axes.head, r.heads, 0);
  axis_mask(r.axes.key, r.keys, 0);
  return mask;  // undefined: everything
}

void apply(at::Tensor rows, const Resolved& r, int64_t pos_offset, int64_t n_pos) {
  const Intervention& iv = *r.iv;
  at::Tensor v;
  if (iv.value.defined()) {
    v = iv.value.to(rows.device(), rows.scalar_type());
    if (v.dim() == rows.dim()) {  // the activation's full shape: align positions with this run's
      auto slice_axis = [&](int axis, int64_t offset) {
        if (axis < 0 || v.size(axis) == 1) return;  // absent, or broadcast (a pooled mean)
        if (v.size(axis) != n_pos)
          throw Error(fmt::format("{}: value has shape {}, whose axis {} should be the prompt length {}", iv.hook,
                                  shape_of(iv.value.sizes()), axis, n_pos));
        v = v.narrow(axis, offset, rows.size(axis));
      };
      slice_axis(r.axes.pos, r.axes.is_kv ? 0 : pos_offset);
      slice_axis(r.axes.key, 0);
      if (v.size(0) != 1 && v.size(0) != rows.size(0))
        throw Error(fmt::format("{}: value has {} rows but the run has {} prompts (give 1 or {})", iv.hook, v.size(0),
                                rows.size(0), rows.size(0)));
    }
    try {
      v = v.expand_as(rows);
    } catch (const c10::Error&) {
      throw Error(fmt::format("{}: value of shape {} does not fit the activation {} (give the full shape "
                              "[batch or 1, pos, ...] or trailing dims)",
                              iv.hook, shape_of(iv.value.sizes()), shape_of(rows.sizes())));
    }
  }
  at::Tensor mask = site_mask(r, rows.sizes(), pos_offset);
  at::Tensor edited;
  switch (iv.op) {
    case Intervention::Op::Replace: edited = v; break;
    case Intervention::Op::Add: edited = rows + v * iv.factor; break;
    case Intervention::Op::Scale: edited = rows * iv.factor; break;
  }
  if (mask.defined()) edited = at::where(mask.to(rows.device()), edited, rows);
  rows.copy_(edited);
}

std::vector<Resolved> resolve_all(const HookedModel& model, const std::vector<Intervention>& ivs, int64_t n_pos) {
  std::vector<Resolved> rs;
  rs.reserve(ivs.size());
  for (const auto& iv : ivs) rs.push_back(resolve(model, iv, n_pos));
  return rs;
}

std::vector<std::pair<std::string, HookFn>> variant_hooks(const std::vector<const std::vector<Resolved>*>& vars,
                                                          int64_t rows, int64_t pos_offset, int64_t n_pos) {
  std::map<std::string, std::vector<std::pair<int64_t, const Resolved*>>> by_point;  // in each variant's order
  for (size_t v = 0; v < vars.size(); ++v)
    for (const auto& r : *vars[v]) by_point[r.axes.name].emplace_back(static_cast<int64_t>(v), &r);
  std::vector<std::pair<std::string, HookFn>> hooks;
  for (auto& [name, items] : by_point)
    hooks.emplace_back(name, [items = std::move(items), rows, pos_offset, n_pos](at::Tensor& act, const std::string&) {
      act = act.clone();
      for (const auto& [v, r] : items) apply(act.narrow(0, v * rows, rows), *r, pos_offset, n_pos);
    });
  return hooks;
}

}  // namespace detail

namespace {
std::string where_str(const Where& w) {
  std::string s;
  if (!w.heads.empty()) s += fmt::format(" head {}", fmt::join(w.heads, ","));
  if (!w.positions.empty()) s += fmt::format(" pos {}", fmt::join(w.positions, ","));
  if (!w.key_positions.empty()) s += fmt::format(" key {}", fmt::join(w.key_positions, ","));
  return s;
}
}  // namespace

Intervention zero_ablation(const std::string& hook, const Where& where) {
  return {hook, where, Intervention::Op::Scale, {}, 0.0, fmt::format("zero {}{}", hook, where_str(where))};
}

Intervention replace_with(const std::string& hook, at::Tensor value, const Where& where) {
  return {hook, where, Intervention::Op::Replace, std::move(value), 1.0,
          fmt::format("replace {}{}", hook, where_str(where))};
}

Intervention add_direction(const std::string& hook, at::Tensor direction, double scale, const Where& where) {
  return {hook, where, Intervention::Op::Add, std::move(direction), scale,
          fmt::format("add {} x direction to {}{}", scale, hook, where_str(where))};
}

Intervention scale_by(const std::string& hook, double factor, const Where& where) {
  return {hook, where, Intervention::Op::Scale, {}, factor, fmt::format("scale {}{} by {}", hook, where_str(where), factor)};
}

Intervention mean_ablation(const HookedModel& model, const std::string& hook, const at::Tensor& reference,
                           bool per_position, const Where& where) {
  auto [logits, cache] = model.run_with_cache(reference, names_filter(std::vector<std::string>{hook}));
  at::Tensor a = cache[hook];
  auto axes = detail::point_axes(model, hook);
  at::Tensor m = a.mean(0, /*keepdim=*/true);
  if (!per_position) {
    if (axes.pos >= 0) m = m.mean(axes.pos, true);
    if (axes.key >= 0) m = m.mean(axes.key, true);
  }
  Intervention iv = replace_with(hook, m, where);
  iv.label = fmt::format("mean-ablate {}{} ({} over {} reference prompts)", hook, where_str(where),
                         per_position ? "per position" : "pooled", reference.size(0));
  return iv;
}

Intervention resample_ablation(const HookedModel& model, const std::string& hook, const at::Tensor& source,
                               int64_t batch, uint64_t seed, const Where& where) {
  if (source.dim() != 2 || source.size(0) == 0)
    throw Error(fmt::format("resample-ablate {}: source prompts must be [n, pos] tokens with n > 0", hook));
  auto [logits, cache] = model.run_with_cache(source, names_filter(std::vector<std::string>{hook}));
  Rng rng(seed);
  std::vector<int64_t> pick;
  for (int64_t i = 0; i < batch; ++i) pick.push_back(static_cast<int64_t>(rng.below(static_cast<uint64_t>(source.size(0)))));
  at::Tensor a = cache[hook].index_select(0, at::tensor(pick, at::kLong).to(cache[hook].device()));
  Intervention iv = replace_with(hook, a, where);
  iv.label = fmt::format("resample-ablate {}{} (seed {}, source prompts {})", hook, where_str(where), seed,
                         fmt::join(pick, ","));
  return iv;
}

at::Tensor run_with_interventions(const HookedModel& model, const at::Tensor& tokens,
                                  const std::vector<Intervention>& interventions, const RunOptions& options) {
  const int64_t n_pos = tokens.size(-1), rows = tokens.dim() == 1 ? 1 : tokens.size(0);
  auto rs = detail::resolve_all(model, interventions, n_pos);
  return model.run_with_hooks(tokens, detail::variant_hooks({&rs}, rows, 0, n_pos), options);
}

// ---- metrics ----------------------------------------------------------------------------------

}  // namespace interp
