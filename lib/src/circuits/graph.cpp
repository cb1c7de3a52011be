// The circuit graph, ablation choices and task helpers.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <numeric>

#include "circuits/internal.h"
#include "hooks/names.h"
#include "interp/error.h"
#include "interp/util.h"
#include "patch/internal.h"

namespace interp {

CircuitGraph CircuitGraph::of(const HookedModel& model, CircuitLevel level) {
  const ModelInfo& info = model.info();
  if (info.n_layers <= 0 || info.n_heads <= 0)
    throw Error(fmt::format("{}: circuits need attention blocks with blocks.L.attn.hook_q placed (`interp hooks` "
                            "lists what is missing)",
                            model.path()));
  if (level == CircuitLevel::Edge && !info.edge_points)
    throw Error(fmt::format("{}: edge-level circuits need the edge points; load the model with edge points "
                            "(LoadOptions::edge_points, CLI --edge-points) or use node level",
                            model.path()));
  CircuitGraph g;
  g.level = level;
  g.n_layers = info.n_layers;
  g.n_heads = info.n_heads;
  for (const auto& p : model.hook_points())
    if (p.kind == PointKind::MlpOut) g.has_mlp = true;
  // Every point the graph reads must be there; say which is not, and why.
  std::vector<std::string> need;
  for (int L = 0; L < g.n_layers; ++L) {
    need.push_back(point_name(PointKind::Z, L));
    if (g.has_mlp) need.push_back(point_name(PointKind::MlpOut, L));
    if (level == CircuitLevel::Edge) {
      for (PointKind k : {PointKind::QInput, PointKind::KInput, PointKind::VInput, PointKind::Result})
        need.push_back(point_name(k, L));
      if (g.has_mlp) need.push_back(point_name(PointKind::MlpIn, L));
    }
  }
  if (level == CircuitLevel::Edge) {
    need.push_back(point_name(PointKind::ResidPre, 0));
    need.push_back(point_name(PointKind::ResidPost, g.n_layers - 1));
  }
  std::vector<std::string> have;
  for (const auto& p : model.hook_points()) have.push_back(p.name);
  for (const auto& n : need) {
    if (std::find(have.begin(), have.end(), n) != have.end()) continue;
    std::string why = "it was not placed";
    for (const auto& m : model.missing_points())
      if (m.name == n) why = m.reason;
    throw Error(fmt::format("{}: {}-level circuits need {}, which is missing: {}", model.path(),
                            level == CircuitLevel::Edge ? "edge" : "node", n, why));
  }
  g.nodes.push_back({CircuitNode::Kind::Embed, -1, -1, "embed"});
  for (int L = 0; L < g.n_layers; ++L) {
    for (int h = 0; h < g.n_heads; ++h) g.nodes.push_back({CircuitNode::Kind::Head, L, h, fmt::format("a{}.h{}", L, h)});
    if (g.has_mlp) g.nodes.push_back({CircuitNode::Kind::Mlp, L, -1, fmt::format("m{}", L)});
  }
  g.nodes.push_back({CircuitNode::Kind::Logits, g.n_layers, -1, "logits"});
  if (level == CircuitLevel::Node) return g;
  // A sender feeds a receiver when it comes before it: heads read earlier layers; an MLP also reads
  // its own layer's heads; the logits read everything.
  auto feeds = [](const CircuitNode& s, const CircuitNode& r) {
    if (s.kind == CircuitNode::Kind::Embed) return true;
    if (r.kind == CircuitNode::Kind::Logits) return true;
    if (r.kind == CircuitNode::Kind::Head) return s.layer < r.layer;
    return s.layer < r.layer || (s.kind == CircuitNode::Kind::Head && s.layer == r.layer);
  };
  for (size_t r = 0; r < g.nodes.size(); ++r) {
    const auto& rn = g.nodes[r];
    if (rn.kind == CircuitNode::Kind::Embed) continue;
    const std::string inputs = rn.kind == CircuitNode::Kind::Head ? "qkv" : std::string(1, '\0');
    for (char x : inputs) {
      for (size_t s = 0; s < g.nodes.size(); ++s) {
        const auto& sn = g.nodes[s];
        if (sn.kind == CircuitNode::Kind::Logits || s == r || !feeds(sn, rn)) continue;
        std::string name = x ? fmt::format("{}->{}<{}>", sn.name, rn.name, x) : fmt::format("{}->{}", sn.name, rn.name);
        g.edges.push_back({static_cast<int>(s), static_cast<int>(r), x, name});
      }
    }
  }
  return g;
}

int64_t CircuitGraph::n_units() const {
  if (level == CircuitLevel::Edge) return static_cast<int64_t>(edges.size());
  return static_cast<int64_t>(unit_nodes().size());
}

std::vector<int64_t> CircuitGraph::unit_nodes() const {
  std::vector<int64_t> out;
  for (size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i].kind == CircuitNode::Kind::Head || nodes[i].kind == CircuitNode::Kind::Mlp)
      out.push_back(static_cast<int64_t>(i));
  return out;
}

const std::string& CircuitGraph::unit_name(int64_t i) const {
  if (i < 0 || i >= n_units()) throw Error(fmt::format("circuit unit {} out of range (0..{})", i, n_units() - 1));
  if (level == CircuitLevel::Edge) return edges[static_cast<size_t>(i)].name;
  return nodes[static_cast<size_t>(unit_nodes()[static_cast<size_t>(i)])].name;
}

int64_t CircuitGraph::unit_index(const std::string& name) const {
  std::vector<std::string> all;
  for (int64_t i = 0; i < n_units(); ++i) {
    if (unit_name(i) == name) return i;
    all.push_back(unit_name(i));
  }
  throw Error(fmt::format("no circuit {} named '{}'; {}", level == CircuitLevel::Edge ? "edge" : "node", name,
                          detail::did_you_mean(name, all)));
}

int CircuitGraph::node_index(const std::string& name) const {
  for (size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i].name == name) return static_cast<int>(i);
  return -1;
}

const char* ablation_name(CircuitAblation a) {
  switch (a) {
    case CircuitAblation::Zero: return "zero";
    case CircuitAblation::Mean: return "mean";
    case CircuitAblation::Patch: return "patch";
    case CircuitAblation::Resample: return "resample";
  }
  return "?";
}

CircuitAblation parse_ablation(const std::string& name) {
  for (auto a : {CircuitAblation::Zero, CircuitAblation::Mean, CircuitAblation::Patch, CircuitAblation::Resample})
    if (name == ablation_name(a)) return a;
  throw Error(fmt::format("unknown ablation '{}'; use zero, mean, patch or resample", name));
}

std::string AblationChoice::label() const {
  return fmt::format("{} / {} / {} / {}", ablation_name(kind), restore ? "restore" : "noise",
                     task_positions ? "task pos" : "all pos", level == CircuitLevel::Edge ? "edge" : "node");
}

std::vector<AblationChoice> ablation_choices(const CircuitGraph& graph) {
  std::vector<AblationChoice> out;
  std::vector<CircuitLevel> levels = {CircuitLevel::Node};
  if (graph.level == CircuitLevel::Edge) levels.insert(levels.begin(), CircuitLevel::Edge);
  for (CircuitLevel level : levels)
    for (bool task_pos : {false, true})
      for (auto kind : {CircuitAblation::Zero, CircuitAblation::Mean, CircuitAblation::Patch, CircuitAblation::Resample})
        for (bool restore : {false, true}) {
          if (restore && kind != CircuitAblation::Patch) continue;
          AblationChoice c;
          c.kind = kind, c.restore = restore, c.task_positions = task_pos, c.level = level;
          out.push_back(c);
        }
  return out;
}

const char* method_name(CircuitMethod m) {
  switch (m) {
    case CircuitMethod::EAP: return "eap";
    case CircuitMethod::EAPIG: return "eap-ig";
    case CircuitMethod::ACDC: return "acdc";
    case CircuitMethod::Patching: return "patching";
  }
  return "?";
}

CircuitMethod parse_method(const std::string& name) {
  for (auto m : {CircuitMethod::EAP, CircuitMethod::EAPIG, CircuitMethod::ACDC, CircuitMethod::Patching})
    if (name == method_name(m)) return m;
  throw Error(fmt::format("unknown circuit method '{}'; use eap, eap-ig, acdc or patching", name));
}

std::vector<int64_t> CircuitScores::ranking() const {
  std::vector<int64_t> idx(units.size());
  std::iota(idx.begin(), idx.end(), 0);
  at::Tensor s = scores.to(at::kCPU, at::kDouble).contiguous();
  const double* v = s.data_ptr<double>();
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
    if (!kept.empty() && kept[static_cast<size_t>(a)] != kept[static_cast<size_t>(b)]) return bool(kept[static_cast<size_t>(a)]);
    return std::abs(v[a]) > std::abs(v[b]);
  });
  return idx;
}

namespace detail {

void check_task(const CircuitTask& task) {
  if (!task.clean.defined() || !task.corrupted.defined() || task.clean.dim() != 2 ||
      task.clean.sizes() != task.corrupted.sizes())
    throw Error("circuit task: clean and corrupted prompts must both be [n, pos] token ids of the same shape");
  if (!task.metric.fn) throw Error("circuit task: the metric has no function");
}

std::vector<int64_t> task_positions(const CircuitTask& task) {
  const int64_t T = task.clean.size(1);
  if (!task.positions.empty()) return normalize_positions(task.positions, T, "circuit task positions");
  at::Tensor differ = (task.clean.cpu() != task.corrupted.cpu()).any(0);
  std::vector<int64_t> out;
  for (int64_t p = 0; p < T; ++p)
    if (differ[p].item<bool>()) out.push_back(p);
  auto mp = task.metric.positions.empty() ? std::vector<int64_t>{}
                                          : normalize_positions(task.metric.positions, T, "metric positions");
  out.insert(out.end(), mp.begin(), mp.end());
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

at::Tensor position_mask(const std::vector<int64_t>& positions, int64_t n_pos, c10::Device device) {
  at::Tensor m = at::zeros({n_pos}, at::kFloat);
  for (int64_t p : positions) m[p] = 1.0;
  return m.to(device);
}

std::vector<int64_t> derangement(int64_t n, uint64_t seed) {
  if (n < 2) throw Error("resample ablation needs at least 2 prompts (each draws another prompt's values)");
  Rng rng(seed);
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  for (;;) {  // Fisher-Yates until no prompt draws itself (expected e tries)
    for (int64_t i = n - 1; i > 0; --i) std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(rng.below(static_cast<uint64_t>(i + 1)))]);
    bool ok = true;
    for (int64_t i = 0; i < n; ++i) ok = ok && p[static_cast<size_t>(i)] != i;
    if (ok) return p;
  }
}

std::vector<NodePoint> node_points(const CircuitGraph& graph) {
  std::vector<NodePoint> out;
  for (int L = 0; L < graph.n_layers; ++L) {
    out.push_back({point_name(PointKind::Z, L), L});
    if (graph.has_mlp) out.push_back({point_name(PointKind::MlpOut, L), L});
  }
  return out;
}

IgRows ig_rows(int steps, int layers, int64_t B, c10::Device device) {
  IgRows r;
  r.blocks = static_cast<int64_t>(steps) * layers;
  r.rows = r.blocks * B;
  std::vector<float> a(static_cast<size_t>(r.rows));
  std::vector<int64_t> lay(static_cast<size_t>(r.rows));
  for (int64_t j = 0; j < r.blocks; ++j)
    for (int64_t b = 0; b < B; ++b) {
      a[static_cast<size_t>(j * B + b)] = static_cast<float>(j % steps + 1) / static_cast<float>(steps);
      lay[static_cast<size_t>(j * B + b)] = j / steps;
    }
  r.alpha = at::tensor(a).to(device);
  r.layer = at::tensor(lay).to(device);
  return r;
}

at::Tensor ablation_values(const at::Tensor& v, const AblationChoice& choice) {
  switch (choice.kind) {
    case CircuitAblation::Patch: return v;
    case CircuitAblation::Resample:
      return v.index_select(0, at::tensor(derangement(v.size(0), choice.seed), at::kLong).to(v.device()));
    case CircuitAblation::Mean: return v.mean(0, true).expand(v.sizes()).contiguous();
    case CircuitAblation::Zero: return at::zeros_like(v);
  }
  return v;
}

}  // namespace detail
}  // namespace interp
