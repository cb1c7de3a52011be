// The batched patcher: variants stacked along the batch, rows split off the base run at their entry
// point, positions before the first edit taken from the base run's cache, logits only where the
// metric reads them. See interp/patch.h.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>

#include "interp/error.h"
#include "interp/util.h"
#include "interp/patch.h"
#include "patch/internal.h"

namespace interp {
namespace {

using detail::PointAxes;
using detail::Resolved;
using Clock = std::chrono::steady_clock;

enum class Mode { Suffix, Layers, None };
const char* mode_name(Mode m) { return m == Mode::Suffix ? "suffix" : m == Mode::Layers ? "layers" : "none"; }

// The residual point a batch splits off at, and the first layer whose keys/values it recomputes.
struct Entry {
  std::string name;
  int64_t order = -1;
  int kv_from = 0;
};

struct Engine {
  const HookedModel& model;
  at::Tensor tokens;  // [B, T] on the model's device
  const Metric& metric;
  const VariantOptions& opt;
  int64_t B = 0, T = 0;
  int n_layers = 0;
  std::map<std::string, int64_t> order_of;  // primary name -> forward index
  bool rotary = false;                      // the model has hook_rot_q / hook_rot_k points
  std::vector<int64_t> U;                   // metric positions (sorted, unique)
  at::Tensor base_logits;
  ActivationCache base;
  VariantStats stats;

  Engine(const HookedModel& m, const at::Tensor& t, const Metric& met, const VariantOptions& o)
      : model(m), metric(met), opt(o) {
    tokens = (t.dim() == 1 ? t.unsqueeze(0) : t).to(m.device(), at::kLong);
    if (tokens.dim() != 2) throw Error("run_variants: tokens must be [batch, pos]");
    B = tokens.size(0), T = tokens.size(1);
    n_layers = m.info().n_layers;
    const auto& pts = m.hook_points();
    for (size_t i = 0; i < pts.size(); ++i) {
      order_of[pts[i].name] = static_cast<int64_t>(i);
      rotary = rotary || pts[i].kind == PointKind::RotQ || pts[i].kind == PointKind::RotK;
    }
    if (metric.positions.empty())
      for (int64_t i = 0; i < T; ++i) U.push_back(i);
    else
      U = detail::normalize_positions(metric.positions, T, fmt::format("metric '{}'", metric.name));
    if (!metric.fn) throw Error(fmt::format("metric '{}' has no function", metric.name));
  }

  // The residual point a variant editing `a` can split off at: the residual stream entering the
  // sublayer that computes `a`.
  std::optional<Entry> point_entry(const PointAxes& a) const {
    const int L = a.layer;
    Entry e;
    if (L >= 0 && L < n_layers) {
      switch (a.kind) {
        case PointKind::ResidPost: e = {a.name, 0, L + 1}; break;
        case PointKind::ResidMid: case PointKind::Ln2: case PointKind::Ln2Scale: case PointKind::MlpIn:
        case PointKind::MlpPre: case PointKind::MlpPreLinear: case PointKind::MlpPost: case PointKind::MlpOut:
          if (order_of.count(point_name(PointKind::ResidMid, L)))
            e = {point_name(PointKind::ResidMid, L), 0, L + 1};
          else  // a parallel block (NeoX) has no resid_mid: its MLP reads the block input
            e = {point_name(PointKind::ResidPre, L), 0, L};
          break;
        case PointKind::Module: return std::nullopt;
        default: e = {point_name(PointKind::ResidPre, L), 0, L};
      }
    } else if (L == n_layers && n_layers > 0) {
      e = {point_name(PointKind::ResidPost, n_layers - 1), 0, n_layers};
    } else {
      return std::nullopt;
    }
    if (!order_of.count(e.name) || order_of.at(e.name) > a.order) return std::nullopt;
    e.order = order_of.at(e.name);
    return e;
  }

  std::optional<Entry> variant_entry(const std::vector<Resolved>& rs) const {
    std::optional<Entry> best;
    for (const auto& r : rs) {
      auto e = point_entry(r.axes);
      if (!e) return std::nullopt;
      if (!best || e->order < best->order) best = e;
    }
    return best;
  }

  int64_t first_pos(const std::vector<Resolved>& rs) const {
    int64_t p = T;
    for (const auto& r : rs) p = std::min(p, r.min_pos);
    return p;
  }

  std::vector<std::string> kv_names(int from) const {
    std::vector<std::string> out;
    for (int L = from; L < n_layers; ++L)
      for (const char* s : {"k", "v"}) out.push_back(act_name(s, L));
    return out;
  }

  // Logits at the metric positions U for the rows of `vars` (each variant's B prompts, in order):
  // [vars.size() * B, U.size(), d_vocab].
  at::Tensor run_batch(Mode mode, const Entry* entry, int64_t p, const std::vector<const std::vector<Resolved>*>& vars) {
    const int64_t nv = static_cast<int64_t>(vars.size());
    if (!entry) mode = Mode::None;
    if (mode != Mode::Suffix) p = 0;
    std::vector<std::pair<std::string, HookFn>> hooks;
    auto repeat_rows = [nv](const at::Tensor& x) {
      std::vector<int64_t> reps(static_cast<size_t>(x.dim()), 1);
      reps[0] = nv;
      return x.repeat(reps);
    };
    at::Tensor graph_tokens = mode == Mode::None ? repeat_rows(tokens) : p > 0 ? tokens.narrow(1, p, T - p) : tokens;
    RunOptions ro;
    if (mode != Mode::None) {
      // Start at the entry with the base run's value there (its later positions), widened to every
      // variant's rows; the layers below are not run at all.
      ro.allow_reshape = true;
      ro.start_at = entry->name;
      ro.start_value = p > 0 ? base[entry->name].narrow(1, p, T - p) : base[entry->name];
      hooks.emplace_back(entry->name, [repeat_rows](at::Tensor& act, const std::string&) { act = repeat_rows(act); });
      if (p > 0)
        for (const auto& kv : kv_names(entry->kv_from)) {
          at::Tensor prefix = repeat_rows(base[kv].narrow(1, 0, p));
          hooks.emplace_back(kv, [prefix](at::Tensor& act, const std::string&) { act = at::cat({prefix, act}, 1); });
        }
    }
    // The interventions, after the entry's widening: each edits its variant's rows.
    for (auto& h : detail::variant_hooks(vars, B, p, T)) hooks.push_back(std::move(h));
    int64_t last_order = -1;
    for (const auto* rs : vars)
      for (const auto& r : *rs) last_order = std::max(last_order, r.axes.order);
    // Keep only the metric's positions once nothing after is positional (the last MLP, the unembed).
    std::vector<int64_t> out_pos;  // prompt positions of the logits' position axis
    for (int64_t i = p; i < T; ++i) out_pos.push_back(i);
    std::vector<int64_t> sel;
    for (int64_t u : U)
      if (u >= p) sel.push_back(u - p);
    if (mode != Mode::None && n_layers > 0 && static_cast<int64_t>(sel.size()) < T - p && !sel.empty()) {
      for (const auto& cand : {point_name(PointKind::ResidMid, n_layers - 1), point_name(PointKind::ResidPost, n_layers - 1)}) {
        auto it = order_of.find(cand);
        if (it == order_of.end() || it->second < entry->order || it->second < last_order) continue;
        at::Tensor idx = at::tensor(sel, at::kLong).to(tokens.device());
        hooks.emplace_back(cand, [idx](at::Tensor& act, const std::string&) { act = act.index_select(1, idx); });
        out_pos.clear();
        for (int64_t s : sel) out_pos.push_back(s + p);
        break;
      }
    }
    at::Tensor logits = model.run_with_hooks(graph_tokens, hooks, ro);
    ++stats.forwards;
    stats.rows += nv * B;
    stats.row_tokens += nv * B * (T - p);
    if (logits.dim() != 3 || logits.size(0) != nv * B || logits.size(1) != static_cast<int64_t>(out_pos.size()))
      throw Error(fmt::format("batched run returned logits of an unexpected shape (rows {}, positions {})",
                              logits.size(0), logits.dim() > 1 ? logits.size(1) : -1));
    std::vector<int64_t> pre, post;
    for (int64_t u : U) {
      if (u < p) pre.push_back(u);
      else post.push_back(std::lower_bound(out_pos.begin(), out_pos.end(), u) - out_pos.begin());
    }
    auto dev = logits.device();
    std::vector<at::Tensor> parts;
    if (!pre.empty()) parts.push_back(repeat_rows(base_logits.index_select(1, at::tensor(pre, at::kLong).to(dev))));
    if (!post.empty()) parts.push_back(logits.index_select(1, at::tensor(post, at::kLong).to(dev)));
    return parts.size() == 1 ? parts[0] : at::cat(parts, 1);
  }

  // Runs two unedited variants with the shortcut and compares with the plain run; max |diff|.
  double check(Mode mode, const Entry& entry, int64_t p) {
    std::vector<Resolved> none;
    at::Tensor out = run_batch(mode, &entry, p, {&none, &none});
    at::Tensor want = base_logits.index_select(1, at::tensor(U, at::kLong).to(base_logits.device())).repeat({2, 1, 1});
    return (out.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
  }
};

}  // namespace

at::Tensor run_variants(const HookedModel& model, const at::Tensor& tokens_in,
                        const std::vector<std::vector<Intervention>>& variants, const Metric& metric,
                        const VariantOptions& opt, VariantStats* stats_out) {
  auto t0 = Clock::now();
  Engine E(model, tokens_in, metric, opt);
  const int64_t V = static_cast<int64_t>(variants.size());
  std::vector<std::vector<Resolved>> res;
  for (const auto& ivs : variants) res.push_back(detail::resolve_all(model, ivs, E.T));

  // The base run: logits, and the residual points and keys/values the shortcuts start from.
  std::vector<std::optional<Entry>> entries(static_cast<size_t>(V));
  std::vector<std::string> want;
  std::optional<Entry> earliest;
  int64_t p_lo = 0, p_hi = 0;  // the smallest and largest first positions > 0: the suffix checks
  for (int64_t v = 0; v < V; ++v) {
    auto& e = entries[static_cast<size_t>(v)] = E.variant_entry(res[static_cast<size_t>(v)]);
    if (!e) continue;
    want.push_back(e->name);
    if (!earliest || e->order < earliest->order) earliest = e;
    int64_t p = E.first_pos(res[static_cast<size_t>(v)]);
    if (p > 0 && p < E.T) {
      p_lo = p_lo == 0 ? p : std::min(p_lo, p);
      p_hi = std::max(p_hi, p);
    }
  }
  bool have_kv = true;
  for (const auto& kv : E.kv_names(0)) {
    have_kv = have_kv && E.order_of.count(kv);
    want.push_back(kv);
  }
  std::tie(E.base_logits, E.base) = model.run_with_cache(E.tokens, names_filter(want));
  const double base_value = detail::metric_on_run(metric, E.base_logits).item<double>();
  E.stats.base_value = base_value;

  // Pick the fastest mode that reproduces the plain run on this model.
  using R = VariantOptions::Reuse;
  std::vector<Mode> modes;
  if (opt.reuse == R::Auto || opt.reuse == R::Suffix) modes.push_back(Mode::Suffix);
  if (opt.reuse == R::Auto || opt.reuse == R::Layers) modes.push_back(Mode::Layers);
  modes.push_back(Mode::None);
  Mode mode = Mode::None;
  for (Mode m : modes) {
    if (m == Mode::None) break;
    std::string why;
    if (!earliest) why = "no variant edits a point inside the blocks";
    else if (m == Mode::Suffix && !have_kv) why = "the model has no attn.hook_k / hook_v points";
    else if (m == Mode::Suffix && p_lo == 0) why = "every variant edits position 0 or all positions";
    else if (m == Mode::Suffix && E.rotary)
      why = "the model applies rotary position embeddings computed from the number of tokens it is given, so a run "
            "of the last tokens alone would rotate them as positions 0, 1, ... rather than their own";
    if (why.empty()) {
      try {
        double d = E.check(m, *earliest, m == Mode::Suffix ? p_lo : 0);
        if (m == Mode::Suffix && p_hi != p_lo) d = std::max(d, E.check(m, *earliest, p_hi));
        double scale = std::max(1.0, E.base_logits.abs().max().item<double>());
        E.stats.check_max_diff = d;
        if (d <= 1e-4 * scale) {
          mode = m;
          break;
        }
        why = fmt::format("the shortened run differs from the plain run by {:.3g}, so the model computes something "
                          "from the number of tokens it is given (a position or a mask)", d);
      } catch (const Error& e) {
        why = fmt::format("the model fails on the shortened run ({}), so it computes something from the number of "
                          "tokens it is given (e.g. a causal mask sliced [:T, :T] instead of by query and key length)",
                          error_summary(e.what()));
      }
    }
    std::string msg = fmt::format("{} mode not used: {}", mode_name(m), why);
    if (opt.reuse != R::Auto && m != Mode::None && (m == Mode::Suffix) == (opt.reuse == R::Suffix))
      throw Error(fmt::format("run_variants: {}; use reuse Auto or None", msg));
    E.stats.fallback += (E.stats.fallback.empty() ? "" : "; ") + msg;
  }
  E.stats.mode = mode_name(mode);
  E.stats.forwards = E.stats.rows = E.stats.row_tokens = 0;  // count the variants' work only

  // Plan: group by entry, then split each group (sorted by first position, descending) where the
  // cost overhead + rows x positions is smallest.
  at::Tensor out = at::full({V}, base_value, at::kDouble);
  struct Item {
    int64_t v, p;
  };
  std::map<int64_t, std::vector<Item>> groups;  // entry order (-1: none) -> variants
  for (int64_t v = 0; v < V; ++v) {
    const auto& rs = res[static_cast<size_t>(v)];
    if (rs.empty()) continue;  // nothing edited: the base run's value
    int64_t p = mode == Mode::Suffix ? E.first_pos(rs) : 0;
    const auto& e = entries[static_cast<size_t>(v)];
    if (!e || mode == Mode::None) p = 0;
    if (p > E.U.back()) continue;  // edits only after every metric position: no effect (causal)
    groups[mode == Mode::None || !e ? -1 : e->order].push_back({v, p});
  }
  struct Batch {
    std::vector<int64_t> vars;
    int64_t p;
    const Entry* entry;
  };
  std::vector<Batch> batches;
  const int64_t max_vars = std::max<int64_t>(1, opt.max_rows / std::max<int64_t>(1, E.B));
  for (auto& [order, items] : groups) {
    std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.p > b.p; });
    const size_t n = items.size();
    std::vector<double> best(n + 1, std::numeric_limits<double>::infinity());
    std::vector<size_t> cut(n + 1, 0);
    best[0] = 0;
    for (size_t j = 1; j <= n; ++j)
      for (size_t i = j; i-- > 0 && static_cast<int64_t>(j - i) <= max_vars;) {
        double c = best[i] + static_cast<double>(opt.overhead_tokens) +
                   static_cast<double>((j - i) * static_cast<size_t>(E.B) * static_cast<size_t>(E.T - items[j - 1].p));
        if (c < best[j]) best[j] = c, cut[j] = i;
      }
    std::vector<Batch> group_batches;
    for (size_t j = n; j > 0; j = cut[j]) {
      Batch b{{}, items[j - 1].p, order < 0 ? nullptr : &*entries[static_cast<size_t>(items[j - 1].v)]};
      for (size_t k = cut[j]; k < j; ++k) {
        b.vars.push_back(items[k].v);
        const auto& e = entries[static_cast<size_t>(items[k].v)];
        if (b.entry && e && e->order < b.entry->order) b.entry = &*e;
      }
      group_batches.push_back(std::move(b));
    }
    batches.insert(batches.end(), group_batches.rbegin(), group_batches.rend());
  }

  int64_t done = 0, total = 0;
  for (const auto& b : batches) total += static_cast<int64_t>(b.vars.size());
  Progress prog(total, "patch variants", opt.progress);
  for (const auto& b : batches) {
    std::vector<const std::vector<Resolved>*> vars;
    for (int64_t v : b.vars) vars.push_back(&res[static_cast<size_t>(v)]);
    at::Tensor lg = E.run_batch(b.entry ? mode : Mode::None, b.entry, b.p, vars);
    for (size_t k = 0; k < b.vars.size(); ++k)
      out[b.vars[k]] = detail::metric_on(metric, lg.narrow(0, static_cast<int64_t>(k) * E.B, E.B)).item<double>();
    done += static_cast<int64_t>(b.vars.size());
    prog.update(done);
  }
  prog.finish();
  E.stats.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (stats_out) *stats_out = E.stats;
  return out;
}

}  // namespace interp
