// The edge engine: batched runs with edges swapped at their receivers, and gradients at receivers.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <map>
#include <tuple>

#include "circuits/internal.h"
#include "interp/error.h"
#include "interp/util.h"
#include "patch/internal.h"

namespace interp::detail {

EdgeEngine::EdgeEngine(const HookedModel& model, const CircuitGraph& graph) : model_(model), graph_(graph) {
  if (graph.level != CircuitLevel::Edge) throw Error("the edge engine needs an edge-level graph");
  const int64_t H = graph.n_heads;
  senders_.push_back({point_name(PointKind::ResidPre, 0), 0, 1, false});
  for (int L = 0; L < graph.n_layers; ++L) {
    senders_.push_back({point_name(PointKind::Result, L), senders_.back().first + senders_.back().count, H, true});
    if (graph.has_mlp)
      senders_.push_back({point_name(PointKind::MlpOut, L), senders_.back().first + senders_.back().count, 1, false});
  }
  for (size_t i = 0; i + 1 < graph.nodes.size(); ++i) sender_nodes_.push_back(static_cast<int>(i));
  std::map<std::tuple<int, int, char>, int64_t> edge_of;
  for (size_t e = 0; e < graph.edges.size(); ++e)
    edge_of[{graph.edges[e].sender, graph.edges[e].receiver, graph.edges[e].input}] = static_cast<int64_t>(e);
  auto group = [&](const std::string& hook, int L, int64_t n_send, const std::vector<int>& receivers, char input) {
    Group g;
    g.hook = hook, g.n_send = n_send, g.heads = static_cast<int64_t>(receivers.size()), g.layer = L;
    g.head_axis = input != 0;
    std::vector<int64_t> ids;
    for (int64_t s = 0; s < n_send; ++s)
      for (int r : receivers) {
        auto it = edge_of.find({static_cast<int>(s), r, input});
        if (it == edge_of.end()) throw Error(fmt::format("internal: no edge {} -> {}", s, r));
        ids.push_back(it->second);
      }
    g.edge_ids = at::tensor(ids, at::kLong).to(model.device());
    groups_.push_back(std::move(g));
  };
  const int64_t per_layer = H + (graph.has_mlp ? 1 : 0);
  for (int L = 0; L < graph.n_layers; ++L) {
    std::vector<int> heads;
    for (int64_t h = 0; h < H; ++h) heads.push_back(graph.node_index(fmt::format("a{}.h{}", L, h)));
    const std::pair<PointKind, char> qkv[] = {{PointKind::QInput, 'q'}, {PointKind::KInput, 'k'}, {PointKind::VInput, 'v'}};
    for (auto [kind, x] : qkv) group(point_name(kind, L), L, 1 + L * per_layer, heads, x);
    if (graph.has_mlp) group(point_name(PointKind::MlpIn, L), L, 1 + L * per_layer + H, {graph.node_index(fmt::format("m{}", L))}, 0);
  }
  group(point_name(PointKind::ResidPost, graph.n_layers - 1), graph.n_layers, n_senders(),
        {graph.node_index("logits")}, 0);
}

at::Tensor EdgeEngine::sender_values(const at::Tensor& tokens, at::Tensor* logits_out) const {
  std::vector<std::string> names;
  for (const auto& s : senders_) names.push_back(s.hook);
  auto [logits, cache] = model_.run_with_cache(tokens, names_filter(names));
  if (logits_out) *logits_out = logits;
  std::vector<at::Tensor> parts;
  for (const auto& s : senders_) parts.push_back(s.head_axis ? cache[s.hook] : cache[s.hook].unsqueeze(2));
  return at::cat(parts, 2);
}

std::vector<at::Tensor> EdgeEngine::receiver_inputs(const at::Tensor& tokens) const {
  std::vector<std::string> names;
  for (const auto& g : groups_) names.push_back(g.hook);
  auto [logits, cache] = model_.run_with_cache(tokens, names_filter(names));
  std::vector<at::Tensor> out;
  for (const auto& g : groups_) out.push_back(g.head_axis ? cache[g.hook] : cache[g.hook].unsqueeze(2));
  return out;
}

at::Tensor EdgeEngine::run(const at::Tensor& tokens_in, const at::Tensor& source_in, const at::Tensor& swap,
                           const Metric& metric, const at::Tensor& pos_mask, int64_t max_rows, int64_t* forwards,
                           bool progress) const {
  const at::Tensor tokens = tokens_in.to(model_.device(), at::kLong);
  const at::Tensor source = source_in.to(model_.device());
  const int64_t B = tokens.size(0), T = tokens.size(1), V = swap.size(0);
  if (swap.dim() != 2 || swap.size(1) != static_cast<int64_t>(graph_.edges.size()))
    throw Error(fmt::format("edge engine: swap must be [variants, {}]", graph_.edges.size()));
  if (source.size(0) != B || source.size(1) != T || source.size(2) != n_senders())
    throw Error("edge engine: source values do not match the prompts");
  // Rows per forward: max_rows, and at most ~1 GiB of sender deltas ([rows, pos, senders, d_model]).
  const int64_t S = n_senders(), dm = source.size(3);
  const int64_t row_bytes = T * S * dm * static_cast<int64_t>(source.element_size());
  const int64_t per = std::max<int64_t>(1, std::min(max_rows / B, (int64_t{1} << 30) / std::max<int64_t>(1, B * row_bytes)));
  at::Tensor sw = swap.to(model_.device(), source.scalar_type());
  std::vector<double> out(static_cast<size_t>(V));
  Progress prog(V, "circuits", progress);
  for (int64_t v0 = 0; v0 < V; v0 += per) {
    const int64_t nv = std::min(per, V - v0), R = nv * B;
    at::Tensor toks = tokens.repeat({nv, 1});
    at::Tensor swv = sw.narrow(0, v0, nv);
    std::vector<at::Tensor> masks;
    for (const auto& g : groups_) masks.push_back(swv.index_select(1, g.edge_ids).view({nv, g.n_send, g.heads}));
    // deltas[:, :, s] = ablated value - the value sender s has in this run, filled as senders run
    at::Tensor deltas = at::empty({R, T, S, dm}, source.options());
    std::vector<std::pair<std::string, HookFn>> hooks;
    for (const auto& s : senders_)
      hooks.emplace_back(s.hook, [&, s](at::Tensor& x, const std::string&) {
        at::Tensor cur = (s.head_axis ? x : x.unsqueeze(2)).reshape({nv, B, T, s.count, dm});
        at::Tensor d = (source.narrow(2, s.first, s.count).unsqueeze(0) - cur).reshape({R, T, s.count, dm});
        if (pos_mask.defined()) d = d * pos_mask.to(d.dtype()).view({1, T, 1, 1});
        deltas.narrow(2, s.first, s.count).copy_(d);
      });
    for (size_t gi = 0; gi < groups_.size(); ++gi)
      hooks.emplace_back(groups_[gi].hook, [&, gi](at::Tensor& x, const std::string&) {
        const Group& g = groups_[gi];
        at::Tensor D = deltas.narrow(2, 0, g.n_send).reshape({nv, B, T, g.n_send, dm});
        at::Tensor upd = g.head_axis ? at::einsum("vbpsd,vsh->vbphd", {D, masks[gi]})
                                     : at::einsum("vbpsd,vs->vbpd", {D, masks[gi].squeeze(-1)});
        x = x + upd.reshape(x.sizes()).to(x.dtype());
      });
    at::Tensor logits = model_.run_with_hooks(toks, hooks);
    if (forwards) ++*forwards;
    for (int64_t v = 0; v < nv; ++v)
      out[static_cast<size_t>(v0 + v)] = metric_on_run(metric, logits.narrow(0, v * B, B)).item<double>();
    prog.update(v0 + nv);
  }
  prog.finish();
  return at::tensor(out, at::kDouble);
}

at::Tensor EdgeEngine::attribution(const at::Tensor& tokens_in, const at::Tensor& source, const at::Tensor& clean_values,
                                   const Metric& metric, Ig ig, int steps, const at::Tensor& embed_from,
                                   const std::vector<at::Tensor>& inputs_from, const std::vector<at::Tensor>& inputs_to,
                                   int64_t* forwards, double* run_metric) const {
  const at::Tensor tokens = tokens_in.to(model_.device(), at::kLong);
  if (!clean_values.defined() && ig != Ig::None) throw Error("internal: integrated gradients need the clean values");
  const int64_t B = tokens.size(0), T = tokens.size(1);
  if (ig != Ig::None && steps < 1) throw Error("integrated gradients need at least 1 step");
  const int k = ig == Ig::None ? 1 : steps;
  const int layers = ig == Ig::Activations ? graph_.n_layers + 1 : 1;  // the logits' input is a layer of its own
  const IgRows rows = ig_rows(k, layers, B, model_.device());
  const int64_t blocks = rows.blocks, R = rows.rows;
  const at::Tensor alpha = rows.alpha.view({R, 1, 1, 1});
  const at::Tensor& row_layer = rows.layer;
  at::AutoGradMode grad_mode(true);
  std::vector<at::Tensor> eps(groups_.size());
  std::vector<std::pair<std::string, HookFn>> hooks;
  std::vector<at::Tensor> captured;  // the run's own sender values (when clean_values is not given)
  if (!clean_values.defined())
    for (const auto& s : senders_)
      hooks.emplace_back(s.hook, [&captured, s](at::Tensor& x, const std::string&) {
        captured.push_back(s.head_axis ? x.detach() : x.detach().unsqueeze(2));
      });
  if (ig == Ig::Inputs)
    hooks.emplace_back(point_name(PointKind::ResidPre, 0), [&](at::Tensor& x, const std::string&) {
      at::Tensor from = embed_from.to(x.device(), x.scalar_type()).repeat({blocks, 1, 1});
      x = from + alpha.view({R, 1, 1}) * (x.detach() - from);
    });
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    hooks.emplace_back(groups_[gi].hook, [&, gi](at::Tensor& x, const std::string&) {
      const Group& g = groups_[gi];
      if (ig == Ig::Activations) {
        at::Tensor from = inputs_from[gi].to(x.device(), x.scalar_type()).repeat({blocks, 1, 1, 1});
        at::Tensor to = inputs_to[gi].to(x.device(), x.scalar_type()).repeat({blocks, 1, 1, 1});
        at::Tensor here = (row_layer == std::min(g.layer, graph_.n_layers)).view({R, 1, 1, 1});
        at::Tensor x4 = g.head_axis ? x : x.unsqueeze(2);
        x4 = at::where(here, from + alpha * (to - from), x4);
        x = g.head_axis ? x4 : x4.squeeze(2);
      }
      eps[gi] = at::zeros_like(x).requires_grad_(true);
      x = x + eps[gi];
    });
  RunOptions ro;
  ro.grad = true;
  at::Tensor logits = model_.run_with_hooks(tokens.repeat({blocks, 1}), hooks, ro);
  if (forwards) ++*forwards;
  at::Tensor total = at::zeros({}, at::kDouble).to(logits.device());
  for (int64_t j = 0; j < blocks; ++j) total = total + metric_on_run(metric, logits.narrow(0, j * B, B));
  total = total / static_cast<double>(k);
  if (run_metric) *run_metric = total.item<double>() / static_cast<double>(layers);
  std::vector<at::Tensor> inputs;
  for (const auto& e : eps)
    if (!e.defined()) throw Error("internal: a receiver point did not fire");
    else inputs.push_back(e);
  auto grads = torch::autograd::grad({total}, inputs, {}, false, false, /*allow_unused=*/true);
  at::NoGradGuard no_grad;
  at::Tensor scores = at::zeros({static_cast<int64_t>(graph_.edges.size())}, at::kDouble).to(model_.device());
  at::Tensor clean = clean_values.defined() ? clean_values.to(model_.device()) : at::cat(captured, 2);
  // [S, B * pos * d_model]: each sender's difference as one row, so a group's scores are one matmul
  const at::Tensor diff = (source.to(model_.device()) - clean).permute({2, 0, 1, 3}).reshape({n_senders(), -1});
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const Group& g = groups_[gi];
    if (!grads[gi].defined()) continue;
    at::Tensor gr = g.head_axis ? grads[gi] : grads[gi].unsqueeze(2);  // [R, pos, heads, d_model]
    if (ig == Ig::Activations) gr = gr * (row_layer == std::min(g.layer, graph_.n_layers)).to(gr.dtype()).view({R, 1, 1, 1});
    // the same difference for every block: sum the gradients over the blocks first
    gr = gr.reshape({blocks, B, T, g.heads, gr.size(3)}).sum(0).permute({2, 0, 1, 3}).reshape({g.heads, -1});
    at::Tensor s = diff.narrow(0, 0, g.n_send).mm(gr.to(diff.dtype()).t()).to(at::kDouble);  // [n_send, heads]
    scores.index_add_(0, g.edge_ids, s.reshape({-1}));
  }
  return scores.cpu();
}

}  // namespace interp::detail
