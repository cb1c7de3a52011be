// Activation patching, named sweeps, ablation sweeps, path patching and attribution patching, all
// built from interventions (interventions.cpp) and the batched variant runner (variants.cpp).
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <map>
#include <set>

#include "interp/error.h"
#include "interp/patch.h"
#include "patch/internal.h"

namespace interp {
namespace {

using json = nlohmann::json;

at::Tensor as_batch(const at::Tensor& t) { return t.dim() == 1 ? t.unsqueeze(0) : t; }

void check_pair(const at::Tensor& clean, const at::Tensor& corrupted) {
  if (!clean.defined() || !corrupted.defined() || as_batch(clean).sizes() != as_batch(corrupted).sizes())
    throw Error(fmt::format("clean and corrupted prompts must have the same shape [batch, pos] to be patched "
                            "position by position; got [{}] and [{}]",
                            fmt::join(as_batch(clean).sizes(), ", "), fmt::join(as_batch(corrupted).sizes(), ", ")));
}

double metric_value(const Metric& m, const at::Tensor& logits) { return detail::metric_on_run(m, logits).item<double>(); }

std::vector<std::string> unique_hooks(const std::vector<PatchSite>& sites) {
  std::vector<std::string> out;
  for (const auto& s : sites)
    if (std::find(out.begin(), out.end(), s.hook) == out.end()) out.push_back(s.hook);
  return out;
}

void finish(PatchResult& r) {
  double denom = r.clean - r.corrupted;
  r.normalized = (r.values - r.corrupted) / denom;  // inf/nan when the baselines agree: reported as null
  if (!r.shape.empty()) {
    r.values = r.values.reshape(r.shape);
    r.normalized = r.normalized.reshape(r.shape);
  }
}

}  // namespace

PatchResult activation_patching(const HookedModel& model, const at::Tensor& clean, const at::Tensor& corrupted,
                                const std::vector<PatchSite>& sites, const Metric& metric, Direction direction,
                                const VariantOptions& options) {
  check_pair(clean, corrupted);
  const bool denoise = direction == Direction::Denoise;
  const at::Tensor& base = denoise ? corrupted : clean;
  const at::Tensor& source = denoise ? clean : corrupted;
  auto [src_logits, src_cache] = model.run_with_cache(source, names_filter(unique_hooks(sites)));
  PatchResult r;
  r.metric = metric.name;
  r.direction = denoise ? "denoise" : "noise";
  std::vector<std::vector<Intervention>> variants;
  for (const auto& s : sites) {
    Intervention iv = replace_with(s.hook, src_cache[s.hook], s.where);
    iv.label = s.label.empty() ? iv.label : s.label;
    variants.push_back({iv});
    r.labels.push_back(iv.label);
  }
  r.values = run_variants(model, base, variants, metric, options, &r.stats);
  const double src_value = metric_value(metric, src_logits);
  r.clean = denoise ? src_value : r.stats.base_value;
  r.corrupted = denoise ? r.stats.base_value : src_value;
  finish(r);
  return r;
}

std::vector<PatchSite> sweep_sites(const HookedModel& model, const std::string& short_hook,
                                   const std::vector<std::string>& by, int64_t n_pos, std::vector<int64_t>* shape) {
  const int n_layers = model.info().n_layers;
  if (n_layers == 0) throw Error(fmt::format("{}: no blocks.{{L}} layers are mapped, so there is nothing to sweep", model.path()));
  auto axes = detail::point_axes(model, act_name(short_hook, 0));
  const int64_t n_heads = model.info().n_heads;
  std::string key = fmt::format("{}", fmt::join(by, ","));
  bool layer_pos = key == "layer,pos", layer_only = key == "layer", layer_head = key == "layer,head",
       layer_head_pos = key == "layer,head,pos";
  if (!(layer_pos || layer_only || layer_head || layer_head_pos))
    throw Error(fmt::format("sweep by '{}' is not one of: layer | layer,pos | layer,head | layer,head,pos", key));
  if ((layer_head || layer_head_pos) && axes.head < 0)
    throw Error(fmt::format("'{}' has no head axis; sweep it by layer,pos (heads: z, q, k, v, pattern, attn_scores)", short_hook));
  if ((layer_pos || layer_head_pos) && axes.pos < 0)
    throw Error(fmt::format("'{}' has no position axis; sweep it by layer", short_hook));
  std::vector<PatchSite> sites;
  std::vector<int64_t> sh{n_layers};
  if (layer_pos) sh.push_back(n_pos);
  if (layer_head || layer_head_pos) sh.push_back(n_heads);
  if (layer_head_pos) sh.push_back(n_pos);
  for (int L = 0; L < n_layers; ++L) {
    std::string hook = act_name(short_hook, L);
    model.hook_point(hook);  // throws with the closest names if the layer lacks it
    if (layer_only) sites.push_back({hook, {}, fmt::format("L{}", L)});
    if (layer_pos)
      for (int64_t p = 0; p < n_pos; ++p) sites.push_back({hook, {{p}, {}, {}}, fmt::format("L{} pos {}", L, p)});
    if (layer_head)
      for (int64_t h = 0; h < n_heads; ++h) sites.push_back({hook, {{}, {h}, {}}, fmt::format("L{} H{}", L, h)});
    if (layer_head_pos)
      for (int64_t h = 0; h < n_heads; ++h)
        for (int64_t p = 0; p < n_pos; ++p)
          sites.push_back({hook, {{p}, {h}, {}}, fmt::format("L{} H{} pos {}", L, h, p)});
  }
  if (shape) *shape = sh;
  return sites;
}

PatchResult patch_sweep(const HookedModel& model, const at::Tensor& clean, const at::Tensor& corrupted,
                        const std::string& short_hook, const std::vector<std::string>& by, const Metric& metric,
                        Direction direction, const VariantOptions& options) {
  check_pair(clean, corrupted);
  std::vector<int64_t> shape;
  auto sites = sweep_sites(model, short_hook, by, as_batch(clean).size(1), &shape);
  PatchResult r = activation_patching(model, clean, corrupted, sites, metric, direction, options);
  r.hook = short_hook;
  r.axes = by;
  r.shape = shape;
  finish(r);
  return r;
}

PatchResult ablation_sweep(const HookedModel& model, const at::Tensor& tokens_in, const at::Tensor& reference,
                           const std::vector<PatchSite>& sites, Ablation ablation, const Metric& metric, uint64_t seed,
                           const VariantOptions& options) {
  at::Tensor tokens = as_batch(tokens_in);
  const int64_t B = tokens.size(0), T = tokens.size(1);
  std::map<std::string, at::Tensor> values;  // per hook: what ablated sites are replaced with
  if (ablation != Ablation::Zero) {
    if (!reference.defined() || reference.dim() != 2 || reference.size(0) == 0)
      throw Error("mean and resample ablation need reference prompts ([n, pos] tokens)");
    if (ablation == Ablation::Resample && reference.size(1) != T)
      throw Error(fmt::format("resample ablation takes activations position by position, so the reference prompts "
                              "need the prompts' length {} (they have {})", T, reference.size(1)));
    for (const auto& h : unique_hooks(sites)) {
      Intervention iv = ablation == Ablation::Mean ? mean_ablation(model, h, reference, reference.size(1) == T)
                                                   : resample_ablation(model, h, reference, B, seed);
      values[h] = iv.value;
    }
  }
  PatchResult r;
  r.metric = metric.name;
  r.direction = ablation == Ablation::Zero ? "zero-ablate" : ablation == Ablation::Mean ? "mean-ablate" : "resample-ablate";
  r.corrupted = 0;
  std::vector<std::vector<Intervention>> variants;
  for (const auto& s : sites) {
    Intervention iv = ablation == Ablation::Zero ? zero_ablation(s.hook, s.where) : replace_with(s.hook, values[s.hook], s.where);
    iv.label = s.label.empty() ? fmt::format("{} {}", r.direction, s.hook) : s.label;
    variants.push_back({iv});
    r.labels.push_back(iv.label);
  }
  r.values = run_variants(model, tokens, variants, metric, options, &r.stats);
  r.clean = r.stats.base_value;
  finish(r);
  return r;
}

namespace {

// Variants stacked along the batch with no shortcuts: `base` repeated once per variant, each
// variant's interventions applied to its rows. Caches `cache_names` (all rows).
std::pair<at::Tensor, ActivationCache> tiled_run(const HookedModel& model, const at::Tensor& base,
                                                 const std::vector<std::vector<Intervention>>& variants,
                                                 const std::vector<std::string>& cache_names) {
  const int64_t B = base.size(0), T = base.size(1), nv = static_cast<int64_t>(variants.size());
  std::vector<std::vector<detail::Resolved>> res;
  for (const auto& ivs : variants) res.push_back(detail::resolve_all(model, ivs, T));
  std::vector<const std::vector<detail::Resolved>*> vars;
  for (const auto& rs : res) vars.push_back(&rs);
  return model.run_with_hooks_and_cache(base.repeat({nv, 1}), detail::variant_hooks(vars, B, 0, T),
                                        names_filter(cache_names));
}

struct PathRuns {
  at::Tensor base_logits, src_logits;
  std::vector<double> values;  // one per sender set
  int64_t forwards = 0, rows = 0;
};

// Path patching for each set of senders, in its own rows: run 2 (senders from the source, every
// head's hook_z frozen to the base run, receivers recorded) and run 3 (the base run with only the
// receivers patched to those values), batched over sender sets, 128 rows per forward.
PathRuns path_runs(const HookedModel& model, const at::Tensor& clean_in, const at::Tensor& corrupted_in,
                   const std::vector<std::vector<PatchSite>>& sender_sets, const std::vector<PatchSite>& receivers,
                   const Metric& metric, Direction direction) {
  check_pair(clean_in, corrupted_in);
  if (receivers.empty()) throw Error("path patching needs at least one receiver");
  const at::Tensor clean = as_batch(clean_in).to(model.device(), at::kLong);
  const at::Tensor corrupted = as_batch(corrupted_in).to(model.device(), at::kLong);
  const bool noise = direction == Direction::Noise;
  const at::Tensor& base = noise ? clean : corrupted;
  const at::Tensor& source = noise ? corrupted : clean;
  const int64_t B = base.size(0);
  std::vector<std::string> z_names, sender_names, receiver_names;
  for (int L = 0; L < model.info().n_layers; ++L) z_names.push_back(act_name("z", L));
  for (const auto& set : sender_sets) {
    if (set.empty()) throw Error("path patching needs at least one sender");
    for (const auto& h : unique_hooks(set))
      if (std::find(sender_names.begin(), sender_names.end(), h) == sender_names.end()) sender_names.push_back(h);
  }
  receiver_names = unique_hooks(receivers);
  PathRuns out;
  ActivationCache base_cache, src_cache;
  std::tie(out.base_logits, base_cache) = model.run_with_cache(base, names_filter(z_names));
  std::tie(out.src_logits, src_cache) = model.run_with_cache(source, names_filter(sender_names));
  const size_t chunk = static_cast<size_t>(std::max<int64_t>(1, 128 / B));
  for (size_t first = 0; first < sender_sets.size(); first += chunk) {
    const size_t n = std::min(chunk, sender_sets.size() - first);
    std::vector<std::vector<Intervention>> run2(n), run3(n);
    for (size_t i = 0; i < n; ++i) {
      for (const auto& z : z_names) run2[i].push_back(replace_with(z, base_cache[z]));
      for (const auto& s : sender_sets[first + i]) run2[i].push_back(replace_with(s.hook, src_cache[s.hook], s.where));
    }
    auto cache2 = tiled_run(model, base, run2, receiver_names).second;
    for (size_t i = 0; i < n; ++i)
      for (const auto& rc : receivers)
        run3[i].push_back(replace_with(rc.hook, cache2[rc.hook].narrow(0, static_cast<int64_t>(i) * B, B), rc.where));
    at::Tensor logits3 = tiled_run(model, base, run3, {}).first;
    for (size_t i = 0; i < n; ++i)
      out.values.push_back(metric_value(metric, logits3.narrow(0, static_cast<int64_t>(i) * B, B)));
    out.forwards += 2;
    out.rows += 2 * static_cast<int64_t>(n) * B;
  }
  return out;
}

}  // namespace

double path_patching(const HookedModel& model, const at::Tensor& clean, const at::Tensor& corrupted,
                     const std::vector<PatchSite>& senders, const std::vector<PatchSite>& receivers,
                     const Metric& metric, Direction direction) {
  return path_runs(model, clean, corrupted, {senders}, receivers, metric, direction).values[0];
}

PatchResult path_patch_heads(const HookedModel& model, const at::Tensor& clean, const at::Tensor& corrupted,
                             const std::vector<PatchSite>& receivers, const Metric& metric, Direction direction) {
  check_pair(clean, corrupted);
  auto t0 = std::chrono::steady_clock::now();
  PatchResult r;
  auto senders = sweep_sites(model, "z", {"layer", "head"}, as_batch(clean).size(1), &r.shape);
  std::vector<std::vector<PatchSite>> sets;
  for (const auto& s : senders) {
    sets.push_back({s});
    r.labels.push_back(s.label);
  }
  PathRuns runs = path_runs(model, clean, corrupted, sets, receivers, metric, direction);
  const bool noise = direction == Direction::Noise;
  r.hook = "z";
  r.axes = {"layer", "head"};
  r.metric = metric.name;
  r.direction = noise ? "path-noise" : "path-denoise";
  r.clean = metric_value(metric, noise ? runs.base_logits : runs.src_logits);
  r.corrupted = metric_value(metric, noise ? runs.src_logits : runs.base_logits);
  r.values = at::tensor(runs.values, at::kDouble);
  r.stats.mode = "path (batched)";
  r.stats.forwards = runs.forwards;
  r.stats.rows = runs.rows;
  r.stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  finish(r);
  return r;
}

PatchResult attribution_patching(const HookedModel& model, const at::Tensor& clean, const at::Tensor& corrupted,
                                 const std::string& short_hook, const std::vector<std::string>& by,
                                 const Metric& metric, Direction direction) {
  check_pair(clean, corrupted);
  const bool denoise = direction == Direction::Denoise;
  const at::Tensor base = as_batch(denoise ? corrupted : clean);
  const at::Tensor source = as_batch(denoise ? clean : corrupted);
  const int64_t T = base.size(1);
  std::vector<int64_t> shape;
  auto sites = sweep_sites(model, short_hook, by, T, &shape);
  auto names = unique_hooks(sites);
  auto t0 = std::chrono::steady_clock::now();
  auto [src_logits, src_cache] = model.run_with_cache(source, names_filter(names));
  at::AutoGradMode grad(true);
  std::map<std::string, at::Tensor> base_vals, deltas;
  std::vector<std::pair<std::string, HookFn>> hooks;
  for (const auto& n : names)
    hooks.emplace_back(n, [&base_vals, &deltas](at::Tensor& act, const std::string& name) {
      base_vals[name] = act.detach();
      at::Tensor d = at::zeros_like(act).requires_grad_(true);
      deltas[name] = d;
      act = act + d;
    });
  RunOptions ro;
  ro.grad = true;
  at::Tensor base_logits = model.run_with_hooks(base, hooks, ro);
  at::Tensor m = detail::metric_on_run(metric, base_logits);
  std::vector<at::Tensor> inputs;
  for (const auto& n : names) inputs.push_back(deltas.at(n));
  auto grads = torch::autograd::grad({m}, inputs, {}, /*retain_graph=*/false, /*create_graph=*/false, /*allow_unused=*/true);
  at::NoGradGuard no_grad;
  std::map<std::string, at::Tensor> attr;
  for (size_t i = 0; i < names.size(); ++i) {
    at::Tensor g = grads[i].defined() ? grads[i] : at::zeros_like(base_vals[names[i]]);
    attr[names[i]] = ((src_cache[names[i]] - base_vals[names[i]]) * g).to(at::kDouble);
  }
  PatchResult r;
  r.hook = short_hook;
  r.axes = by;
  r.shape = shape;
  r.metric = metric.name;
  r.direction = denoise ? "attribution-denoise" : "attribution-noise";
  double base_value = m.item<double>(), src_value = metric_value(metric, src_logits);
  r.clean = denoise ? src_value : base_value;
  r.corrupted = denoise ? base_value : src_value;
  std::vector<double> vals;
  for (const auto& s : sites) {
    Intervention iv = scale_by(s.hook, 1.0, s.where);
    auto res = detail::resolve(model, iv, T);
    const at::Tensor& a = attr[s.hook];
    at::Tensor mask = detail::site_mask(res, a.sizes(), 0);
    double sum = (mask.defined() ? (a * mask.to(a.device())).sum() : a.sum()).item<double>();
    // The metric is a mean over prompts, so the gradient already carries 1/B.
    vals.push_back(base_value + sum);
    r.labels.push_back(s.label);
  }
  r.values = at::tensor(vals, at::kDouble);
  r.stats.mode = "attribution";
  r.stats.forwards = 2;
  r.stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  finish(r);
  return r;
}

std::string to_json(const PatchResult& r, int indent) {
  auto num = [](double x) { return std::isfinite(x) ? json(x) : json(nullptr); };
  auto nested = [&](const at::Tensor& t) {
    at::Tensor f = t.to(at::kDouble).contiguous().reshape({-1});
    const double* p = f.data_ptr<double>();
    std::vector<json> flat;
    for (int64_t i = 0; i < f.numel(); ++i) flat.push_back(num(p[i]));
    // Nest by the shape (row-major).
    std::function<json(size_t, size_t&)> build = [&](size_t dim, size_t& at) -> json {
      if (dim == r.shape.size()) return flat[at++];
      json a = json::array();
      for (int64_t i = 0; i < r.shape[dim]; ++i) a.push_back(build(dim + 1, at));
      return a;
    };
    if (r.shape.empty()) return json(flat);
    size_t at = 0;
    return build(0, at);
  };
  json j;
  j["hook"] = r.hook;
  j["axes"] = r.axes;
  j["shape"] = r.shape;
  j["metric"] = r.metric;
  j["direction"] = r.direction;
  j["clean_value"] = num(r.clean);
  j["corrupted_value"] = num(r.corrupted);
  j["values"] = nested(r.values);
  j["normalized"] = nested(r.normalized);
  j["labels"] = r.labels;
  j["stats"] = {{"mode", r.stats.mode},
                {"fallback", r.stats.fallback},
                {"check_max_diff", r.stats.check_max_diff},
                {"forwards", r.stats.forwards},
                {"rows", r.stats.rows},
                {"row_tokens", r.stats.row_tokens},
                {"seconds", r.stats.seconds}};
  return j.dump(indent);
}

}  // namespace interp
