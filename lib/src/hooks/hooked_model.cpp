#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/serialization/import.h>

#include <filesystem>
#include <mutex>
#include <sstream>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "hooks/hook_op.h"
#include "hooks/names.h"
#include "hooks/rewrite.h"
#include "interp/error.h"
#include "interp/hooks.h"
#include "interp/util.h"

namespace interp {
namespace {

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

std::string shape_of(at::IntArrayRef s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

// Thrown through the TorchScript interpreter to end a run early (stop_at_layer, a failed hook).
struct AbortForward : std::exception {
  const char* what() const noexcept override { return "interp: forward aborted"; }
};

}  // namespace

std::string HookPoint::shape_str() const {
  std::vector<std::string> parts;
  for (int64_t d : shape)
    parts.push_back(d == kBatch ? "batch" : d == kPos ? "pos" : d < 0 ? "*" : std::to_string(d));
  return fmt::format("[{}]", fmt::join(parts, ", "));
}

struct PersistentHook {
  int64_t id;
  std::string name;
  std::shared_ptr<const HookFn> fn;
};

struct HookedModel::Impl {
  std::string path;
  torch::jit::Module module;
  c10::Device device{c10::kCPU};
  std::unique_ptr<torch::jit::GraphFunction> fn;
  std::shared_ptr<torch::jit::Graph> graph;  // the rewritten forward graph
  mutable std::mutex from_mu;
  mutable std::map<int64_t, std::unique_ptr<torch::jit::GraphFunction>> from_fns;  // by start point id
  torch::jit::GraphFunction* function_from(int64_t id) const;
  std::vector<c10::IValue> extra_args;  // defaults for forward's inputs after the tokens
  int targets_arg = -1;                 // index in extra_args that gets the tokens (nanoGPT's targets)
  std::vector<detail::RewrittenPoint> raw;  // by hook id
  std::vector<HookPoint> points;            // forward order
  std::vector<int64_t> point_ids;           // hook id of points[i]
  std::unordered_map<std::string, int64_t> name_to_id;
  std::vector<std::string> all_names;
  std::vector<MissingPoint> missing;
  ModelInfo info;
  double edge_check_max_diff = -1;  // logits max |diff| with edge points vs without (-1: not added)
  std::mutex mu;
  std::map<uint64_t, PersistentHook> persistent;
  uint64_t next_handle = 1;

  int64_t id_of(const std::string& name) const {
    auto it = name_to_id.find(name);
    if (it == name_to_id.end())
      throw Error(fmt::format("{}: no hook point named '{}'; {} (`interp hooks {}` lists them all)", path, name,
                              detail::did_you_mean(name, all_names), path));
    return it->second;
  }
  at::Tensor run(const at::Tensor& tokens, class RunState* rs, const RunOptions& opt) const;
  std::string output;  // LoadOptions::output
  at::Tensor logits_of(const c10::IValue& forward_output) const;
};

// The per-run state the hook op consults: which points have hooks, which are cached, where to stop.
class RunState final : public detail::HookRuntime {
 public:
  explicit RunState(const HookedModel::Impl& m) : m_(m), hooks_(m.raw.size()), capture_(m.raw.size(), 0) {}

  void add_hook(int64_t id, const std::string& name, std::shared_ptr<const HookFn> fn) {
    hooks_[id].push_back({name, fn.get()});
    keep_.push_back(std::move(fn));
  }
  void capture(int64_t id) { capture_[id] = 1; }

  at::Tensor call(const at::Tensor& x, int64_t id) override {
    if (id < 0 || static_cast<size_t>(id) >= hooks_.size()) return x;
    const auto& hooks = hooks_[id];
    if (hooks.empty() && !capture_[id] && id != stop_id) return x;
    const detail::PointView& pv = m_.raw[id].view;
    at::Tensor seen = x;  // what hooks see (the value in TransformerLens's form)
    if (pv.derived()) {
      seen = (x.var(-1, /*unbiased=*/false, /*keepdim=*/true) + pv.layer_norm_eps).sqrt();
    } else {
      if (!pv.perm.empty()) seen = seen.permute(pv.perm);
      if (pv.reciprocal) seen = seen.reciprocal();
    }
    at::Tensor act = seen;
    for (const auto& [name, fn] : hooks) {
      try {
        (*fn)(act, name);
      } catch (...) {
        error = std::current_exception();
        throw;
      }
      if (!act.defined() || (!reshape && act.sizes() != seen.sizes()) || act.scalar_type() != seen.scalar_type() ||
          act.device() != seen.device()) {
        error = std::make_exception_ptr(Error(fmt::format(
            "hook on '{}' replaced a {} {} tensor on {} with {}; a hook must keep shape, dtype and device", name,
            shape_of(seen.sizes()), c10::toString(seen.scalar_type()), seen.device().str(),
            act.defined() ? fmt::format("a {} {} tensor on {}", shape_of(act.sizes()),
                                        c10::toString(act.scalar_type()), act.device().str())
                          : std::string("an undefined tensor"))));
        throw AbortForward();
      }
    }
    if (capture_[id] && cache && (key_by_id || !m_.raw[id].names.empty())) {
      at::Tensor v = grad ? act : act.detach();
      if (m_.raw[id].clone_on_capture) v = v.clone();
      cache->put(key_by_id ? std::to_string(id) : m_.raw[id].names[0].name, v);
    }
    if (id == stop_id) {
      stopped = act;
      did_stop = true;
      throw AbortForward();
    }
    if (pv.derived() && !act.is_same(seen)) {
      error = std::make_exception_ptr(Error(fmt::format(
          "'{}' is computed from a fused layer_norm's input for reading; the model's layer_norm does not use it, "
          "so replacing it would change nothing: a hook on it may read it, not replace it",
          m_.raw[id].names.empty() ? std::string("this point") : m_.raw[id].names[0].name)));
      throw AbortForward();
    }
    if (pv.empty() || act.is_same(seen)) return pv.empty() ? act : x;  // read-only: the graph's own value
    at::Tensor back = pv.reciprocal ? act.reciprocal() : act;
    if (!pv.perm.empty()) {
      std::vector<int64_t> inv(pv.perm.size());
      for (size_t i = 0; i < pv.perm.size(); ++i) inv[static_cast<size_t>(pv.perm[i])] = static_cast<int64_t>(i);
      back = back.permute(inv);
    }
    return back;
  }

  ActivationCache* cache = nullptr;
  bool key_by_id = false;  // cache under the hook id (the probe: candidates share names)
  bool grad = false;
  bool reshape = false;
  int64_t stop_id = -1;
  at::Tensor stopped;
  bool did_stop = false;
  std::exception_ptr error;

 private:
  const HookedModel::Impl& m_;
  std::vector<std::vector<std::pair<std::string, const HookFn*>>> hooks_;
  std::vector<char> capture_;
  std::vector<std::shared_ptr<const HookFn>> keep_;
};

namespace {

// A copy of `full` that starts at hook `id`: the hook's input becomes a new graph input and every
// node the outputs no longer need is removed (the hook op's side effects do not keep it alive here).
std::shared_ptr<torch::jit::Graph> graph_from_point(torch::jit::Graph& full, int64_t id, const std::string& name) {
  using namespace torch::jit;
  std::shared_ptr<Graph> g = full.copy();
  Node* entry = nullptr;
  for (Node* n : g->block()->nodes())
    if (n->kind() == detail::hook_symbol() && toIValue(n->input(1))->toInt() == id) entry = n;
  if (!entry)
    throw Error(fmt::format("cannot start a run at '{}': the point is inside control flow in the graph; start at "
                            "a residual-stream point (blocks.L.hook_resid_pre)", name));
  Value* start = g->addInput("interp_start")->setType(TensorType::get());
  entry->replaceInput(0, start);
  // Hook points before the start do not fire, even where the rest still reads something computed
  // there (Gemma's scripted forward reads the embedding's dtype).
  std::vector<Node*> before;
  for (Node* n : g->block()->nodes()) {
    if (n == entry) break;
    if (n->kind() == detail::hook_symbol()) before.push_back(n);
  }
  for (Node* n : before) {
    n->output()->replaceAllUsesWith(n->input(0));
    n->destroy();
  }
  std::unordered_set<Value*> live(g->outputs().begin(), g->outputs().end());
  std::function<void(Block*)> uses_in = [&](Block* b) {
    for (Node* n : b->nodes()) {
      for (Value* v : n->inputs()) live.insert(v);
      for (Block* sub : n->blocks()) uses_in(sub);
    }
    for (Value* v : b->outputs()) live.insert(v);
  };
  std::vector<Node*> dead;
  for (Node* n : g->block()->nodes().reverse()) {
    bool used = std::any_of(n->outputs().begin(), n->outputs().end(), [&](Value* o) { return live.count(o) > 0; });
    if (!used) {
      dead.push_back(n);
      continue;
    }
    for (Value* v : n->inputs()) live.insert(v);
    for (Block* sub : n->blocks()) uses_in(sub);
  }
  // A derived point's op feeds nothing, but fires when its input is still computed.
  std::unordered_set<Node*> dead_set(dead.begin(), dead.end()), keep;
  for (Node* n : dead) {
    if (n->kind() != detail::hook_symbol() || n == entry) continue;
    Node* in = n->input(0)->node();
    if (in->kind() == c10::prim::Param || !dead_set.count(in)) {
      keep.insert(n);
      keep.insert(n->input(1)->node());  // its id constant
    }
  }
  dead.erase(std::remove_if(dead.begin(), dead.end(), [&](Node* n) { return keep.count(n) > 0; }), dead.end());
  for (Node* n : dead) n->destroy();  // users before producers
  return g;
}

}  // namespace

torch::jit::GraphFunction* HookedModel::Impl::function_from(int64_t id) const {
  std::lock_guard<std::mutex> lock(from_mu);
  auto& f = from_fns[id];
  if (!f) f = std::make_unique<torch::jit::GraphFunction>(fmt::format("interp_forward_from_{}", id),
                                                           graph_from_point(*graph, id, raw[id].names[0].name), nullptr);
  return f.get();
}

at::Tensor HookedModel::Impl::run(const at::Tensor& tokens_in, RunState* rs, const RunOptions& opt) const {
  if (!tokens_in.defined()) throw Error("tokens: undefined tensor");
  at::Tensor tokens = tokens_in.dim() == 1 ? tokens_in.unsqueeze(0) : tokens_in;
  if (tokens.dim() != 2 || tokens.size(0) == 0 || tokens.size(1) == 0)
    throw Error(fmt::format("tokens must be [batch, pos] with batch, pos > 0; got shape {}", shape_of(tokens.sizes())));
  if (!at::isIntegralType(tokens.scalar_type(), /*includeBool=*/false))
    throw Error(fmt::format("tokens must be integer ids; got {} values", c10::toString(tokens.scalar_type())));
  if (info.d_vocab > 0) {
    int64_t lo = tokens.min().item<int64_t>(), hi = tokens.max().item<int64_t>();
    if (lo < 0 || hi >= info.d_vocab)
      throw Error(fmt::format("token id {} is outside the vocabulary of {} (ids 0..{}) of {}", lo < 0 ? lo : hi,
                              info.d_vocab, info.d_vocab - 1, path));
  }
  if (info.n_ctx > 0 && tokens.size(1) > info.n_ctx)
    throw Error(fmt::format("{} tokens per sequence, but {} has a context of {}; split the input", tokens.size(1),
                            path, info.n_ctx));
  tokens = tokens.to(device, at::kLong);

  int64_t stop_id = -1;
  if (opt.stop_at_layer) {
    int L = *opt.stop_at_layer < 0 ? *opt.stop_at_layer + info.n_layers : *opt.stop_at_layer;
    if (L < 0 || L > info.n_layers)
      throw Error(fmt::format("stop_at_layer {} out of range for {} layers", *opt.stop_at_layer, info.n_layers));
    stop_id = id_of(L < info.n_layers ? fmt::format("blocks.{}.hook_resid_pre", L)
                                      : fmt::format("blocks.{}.hook_resid_post", L - 1));
  }
  std::optional<RunState> local;
  if (stop_id >= 0 && !rs) rs = &local.emplace(*this);
  if (rs) {
    rs->stop_id = stop_id;
    rs->grad = opt.grad;
    rs->reshape = opt.allow_reshape;
  }

  torch::jit::GraphFunction* f = fn.get();
  if (!opt.start_at.empty()) {
    int64_t id = id_of(opt.start_at);
    if (!opt.start_value.defined())
      throw Error(fmt::format("start_at '{}' needs start_value, the point's value", opt.start_at));
    if (!raw[id].view.empty())
      throw Error(fmt::format("cannot start a run at '{}': the graph holds it in another layout; start at a "
                              "residual-stream point (blocks.L.hook_resid_pre)", opt.start_at));
    f = function_from(id);
  }

  at::AutoGradMode grad_mode(opt.grad);
  detail::RuntimeScope scope(rs);
  torch::jit::Stack stack;
  stack.reserve(3 + extra_args.size());
  stack.emplace_back(module._ivalue());
  stack.emplace_back(tokens);
  for (size_t i = 0; i < extra_args.size(); ++i)
    stack.push_back(static_cast<int>(i) == targets_arg ? c10::IValue(tokens) : extra_args[i]);
  if (f != fn.get()) stack.emplace_back(opt.start_value.to(device));
  try {
    f->run(stack);
  } catch (...) {
    if (rs && rs->error) std::rethrow_exception(rs->error);
    if (rs && rs->did_stop) return rs->stopped;
    // The model's own error, in one line (a TorchScript error ends with it, after tracebacks that
    // INTERP_FULL_ERRORS=1 keeps), and what to check when interp does not know the context length.
    auto message = [&](const std::string& what) {
      const char* full = std::getenv("INTERP_FULL_ERRORS");
      std::string m = full && *full ? what : error_summary(what, 400);
      std::string hint;
      if (what.find("dtype") != std::string::npos || what.find("Expected tensor for argument") != std::string::npos ||
          what.find("scalar type") != std::string::npos)
        hint = " (interp calls forward with int64 token ids [batch, pos]; this model seems to take another input)";
      else if (info.n_ctx == 0 && tokens.size(1) > 1)
        hint = fmt::format(" (interp does not know this model's context length: if it is shorter than {} tokens, "
                           "give fewer)", tokens.size(1));
      return fmt::format("{}: forward failed on tokens {}: {}{}", path, shape_of(tokens.sizes()), m, hint);
    };
    try {
      throw;
    } catch (const c10::Error& e) {
      throw Error(message(e.what_without_backtrace()));
    } catch (const std::exception& e) {
      throw Error(message(e.what()));
    }
  }
  return logits_of(stack.back());
}

at::Tensor HookedModel::Impl::logits_of(const c10::IValue& out) const {
  auto kind = [](const c10::IValue& v) -> std::string {
    if (v.isTensor()) return fmt::format("a {} tensor", shape_of(v.toTensor().sizes()));
    return v.tagKind();
  };
  if (out.isTensor()) {
    if (!output.empty())
      throw Error(fmt::format("{}: --output {} asked for, but forward returns a single tensor; drop --output", path,
                              output));
    return out.toTensor();
  }
  if (out.isTuple() || out.isList()) {
    std::vector<c10::IValue> items;
    if (out.isTuple()) items = out.toTupleRef().elements().vec();
    else for (const auto& v : out.toListRef()) items.push_back(v);
    std::vector<std::string> what;
    for (size_t i = 0; i < items.size(); ++i) what.push_back(fmt::format("[{}] {}", i, kind(items[i])));
    if (output.empty()) {
      for (const auto& v : items)
        if (v.isTensor()) return v.toTensor();
      throw Error(fmt::format("{}: forward returns {} elements and none is a tensor ({})", path, items.size(),
                              fmt::join(what, ", ")));
    }
    size_t i = 0;
    bool number = !output.empty() && output.size() <= 9 && output.find_first_not_of("0123456789") == std::string::npos;
    if (number) i = std::stoul(output);
    if (!number || i >= items.size() || !items[i].isTensor())
      throw Error(fmt::format("{}: --output {} is not a tensor element of forward's output; it returns {}; pass "
                              "the index of the logits",
                              path, output, fmt::join(what, ", ")));
    return items[i].toTensor();
  }
  if (out.isGenericDict()) {
    std::vector<std::string> keys;
    const std::string want = output.empty() ? "logits" : output;
    for (const auto& e : out.toGenericDict()) {
      std::string k = e.key().isString() ? e.key().toStringRef() : "?";
      if (k == want && e.value().isTensor()) return e.value().toTensor();
      keys.push_back(fmt::format("'{}' ({})", k, kind(e.value())));
    }
    throw Error(fmt::format("{}: forward returns a dict without a tensor under '{}' (keys: {}); pass the key of the "
                            "logits with --output KEY",
                            path, want, fmt::join(keys, ", ")));
  }
  throw Error(fmt::format("{}: forward returned {}, not logits", path, out.tagKind()));
}

HookedModel::HookedModel(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
HookedModel::HookedModel(HookedModel&&) noexcept = default;
HookedModel& HookedModel::operator=(HookedModel&&) noexcept = default;
HookedModel::~HookedModel() = default;

namespace {

std::string shape_str(const std::vector<int64_t>& shape) { return HookPoint{"", {}, shape}.shape_str(); }

bool is_targets_name(const std::string& n) { return n == "targets" || n == "target" || n == "labels"; }

// forward(self, tokens, ...): the arguments after tokens take their defaults; a `targets` / `labels`
// argument without one (a model traced with targets, as nanoGPT must be for every position's
// logits) gets the tokens: m.targets_arg is its index in extra_args.
void default_extra_args(HookedModel::Impl& m) {
  const auto& schema = m.module.get_method("forward").function().getSchema();
  if (schema.arguments().size() < 2)
    throw Error(fmt::format("{}: forward takes no tokens argument; interp calls forward(tokens)", m.path));
  for (size_t i = 2; i < schema.arguments().size(); ++i) {
    const auto& a = schema.arguments()[i];
    if (!a.default_value() && is_targets_name(a.name()) && m.targets_arg < 0) {
      m.targets_arg = static_cast<int>(m.extra_args.size());
      m.extra_args.emplace_back();
      continue;
    }
    if (!a.default_value())
      throw Error(fmt::format("{}: forward's argument '{}' has no default; interp calls forward(tokens)", m.path,
                              a.name()));
    m.extra_args.push_back(*a.default_value());
  }
}

// nanoGPT's forward(idx, targets=None) returns the logits of the last position only unless given
// targets: then interp passes the tokens as targets (the loss it also computes is ignored).
void check_every_position_has_logits(HookedModel::Impl& m) {
  const int64_t T = m.info.n_ctx ? std::min<int64_t>(3, m.info.n_ctx) : 3;
  auto positions = [&] {
    at::Tensor logits = m.run(at::zeros({1, T}, at::kLong), nullptr, {});
    if (logits.dim() != 3 || !at::isFloatingType(logits.scalar_type()))  // not logits at all
      throw Error(fmt::format("{}: forward(tokens [1, {}]) returns a {} tensor of shape {}, not logits [batch, pos, "
                              "vocab]; is this a language model?",
                              m.path, T, c10::toString(logits.scalar_type()), shape_of(logits.sizes())));
    return logits.size(1);
  };
  if (T < 2 || positions() == T) return;
  const auto& schema = m.module.get_method("forward").function().getSchema();
  if (m.targets_arg < 0)
    for (size_t i = 2; i < schema.arguments().size(); ++i)
      if (is_targets_name(schema.arguments()[i].name())) m.targets_arg = static_cast<int>(i - 2);
  int64_t got = -1;
  if (m.targets_arg >= 0 && (got = positions()) == T) return;
  m.targets_arg = -1;
  throw Error(fmt::format("{}: forward returns logits for {} of {} positions{}; interp needs every position's logits: "
                          "return them, or take a `targets` argument (interp passes the tokens), as nanoGPT does",
                          m.path, got >= 0 ? got : positions(), T,
                          got >= 0 ? " even with the tokens passed as targets" : ""));
}

void hook_ids_in_order(torch::jit::Block* b, std::vector<int64_t>& order) {
  for (torch::jit::Node* n : b->nodes()) {
    if (n->kind() == detail::hook_symbol()) order.push_back(torch::jit::toIValue(n->input(1))->toInt());
    for (auto* sub : n->blocks()) hook_ids_in_order(sub, order);
  }
}

// Rows of pos_embed's first 2-D parameter (0: unknown).
int64_t context_length(const torch::jit::Module& module, const std::string& pos_embed_path) {
  if (pos_embed_path.empty()) return 0;
  torch::jit::Module sub = module;
  std::stringstream parts(pos_embed_path);
  for (std::string part; std::getline(parts, part, '.');) sub = sub.attr(part).toModule();
  for (const auto& p : sub.parameters()) return p.dim() == 2 ? p.size(0) : 0;
  return 0;
}

// Two probe runs with different batch (2, 3) and length tell which dims are batch and pos.
// Returns each point's symbolic shape by hook id; sets info.d_vocab from the logits.
std::map<int64_t, std::vector<int64_t>> probe_shapes(HookedModel::Impl& m) {
  const int64_t pa = m.info.n_ctx ? std::min<int64_t>(3, m.info.n_ctx) : 3;
  const int64_t pb = m.info.n_ctx ? std::min<int64_t>(5, m.info.n_ctx) : 5;
  auto probe = [&](int64_t b, int64_t p) {
    RunState rs(m);
    ActivationCache cache;
    rs.cache = &cache;
    rs.key_by_id = true;
    for (size_t i = 0; i < m.raw.size(); ++i) rs.capture(static_cast<int64_t>(i));
    try {
      at::Tensor logits = m.run(at::zeros({b, p}, at::kLong), &rs, {});
      m.info.d_vocab = logits.size(-1);
    } catch (const Error& e) {
      throw Error(fmt::format("probe run failed: {}", e.what()));
    }
    return cache;
  };
  ActivationCache a_cache = probe(2, pa), b_cache = probe(3, pb);
  std::map<int64_t, std::vector<int64_t>> shapes;
  for (size_t id = 0; id < m.raw.size(); ++id) {
    const std::string key = std::to_string(id);
    if (!a_cache.contains(key) || !b_cache.contains(key)) continue;  // never ran (a dead branch)
    auto a = a_cache[key].sizes(), b = b_cache[key].sizes();
    std::vector<int64_t> s(a.size(), -3);  // -3: varies some other way
    for (size_t d = 0; d < a.size() && a.size() == b.size(); ++d) {
      if (a[d] == b[d]) s[d] = a[d];
      else if (a[d] == 2 && b[d] == 3) s[d] = HookPoint::kBatch;
      else if (a[d] == pa && b[d] == pb) s[d] = HookPoint::kPos;
    }
    shapes[static_cast<int64_t>(id)] = s;
  }
  return shapes;
}

bool has_heads(PointKind k) {
  switch (k) {
    case PointKind::Q: case PointKind::K: case PointKind::V: case PointKind::Z:
    case PointKind::QInput: case PointKind::KInput: case PointKind::VInput: case PointKind::Result:
    case PointKind::RotQ: case PointKind::RotK:
      return true;
    default:
      return false;
  }
}
bool is_pattern(PointKind k) { return k == PointKind::Pattern || k == PointKind::AttnScores; }

// TransformerLens's layouts for attention points.
bool tl_layout_ok(PointKind kind, const std::vector<int64_t>& s) {
  if (has_heads(kind))
    return s.size() == 4 && s[0] == HookPoint::kBatch && s[1] == HookPoint::kPos && s[2] > 0 && s[3] > 0;
  if (is_pattern(kind))
    return s.size() == 4 && s[0] == HookPoint::kBatch && s[1] > 0 && s[2] == HookPoint::kPos && s[3] == HookPoint::kPos;
  return true;
}

bool is_tl_name(const detail::PointTag& t) { return t.kind != PointKind::Module; }

// The structure of a point from its primary tag and probed shape.
void set_structure(HookPoint& p, const detail::PointTag& tag, int n_layers) {
  p.kind = tag.kind;
  p.layer = tag.kind == PointKind::LnFinal || tag.kind == PointKind::LnFinalScale ? n_layers : tag.layer;
  if (is_pattern(tag.kind)) {
    p.head_axis = 1, p.pos_axis = 2, p.key_axis = 3;
  } else if (has_heads(tag.kind)) {
    p.pos_axis = 1, p.head_axis = 2;
  } else {
    for (size_t d = 0; d < p.shape.size(); ++d)
      if (p.shape[d] == HookPoint::kPos) {
        p.pos_axis = static_cast<int>(d);
        break;
      }
  }
}

// Fills points / point_ids / name_to_id in forward order; the primary name is the first
// TransformerLens name (else the module path) and becomes the cache key.
void index_points(HookedModel::Impl& m, const std::vector<int64_t>& order,
                  const std::map<int64_t, std::vector<int64_t>>& shapes) {
  for (int64_t id : order) {
    auto& names = m.raw[id].names;
    if (names.empty()) continue;
    auto primary = std::find_if(names.begin(), names.end(), is_tl_name);
    if (primary == names.end()) primary = names.begin();
    std::rotate(names.begin(), primary, primary + 1);  // primary first, the rest keep their order
    HookPoint p{names[0].name, {}, {}};
    for (size_t i = 1; i < names.size(); ++i) p.aliases.push_back(names[i].name);
    if (auto sh = shapes.find(id); sh != shapes.end()) p.shape = sh->second;
    set_structure(p, names[0], m.info.n_layers);
    p.order = static_cast<int64_t>(m.points.size());
    for (const auto& n : names) {
      m.name_to_id.emplace(n.name, id);
      m.all_names.push_back(n.name);
    }
    m.points.push_back(std::move(p));
    m.point_ids.push_back(id);
  }
}

// A model given the tokens as targets also computes a loss from them (nanoGPT's cross-entropy), which
// would fail on the reshaped runs of the batched patcher (more rows, fewer positions): the hooked
// graph returns None in place of every tuple element but the logits, and the loss is never computed.
void drop_other_outputs(HookedModel::Impl& m, detail::Rewrite& rw) {
  using namespace torch::jit;
  std::shared_ptr<Graph> g = rw.graph->copy();  // the first graph has run: edit a copy
  Node* tc = g->return_node()->input(0)->node();
  if (tc->kind() != c10::prim::TupleConstruct) return;
  int64_t keep = -1;
  if (!m.output.empty() && m.output.size() <= 9 && m.output.find_first_not_of("0123456789") == std::string::npos)
    keep = std::stoll(m.output);
  for (size_t i = 0; keep < 0 && i < tc->inputs().size(); ++i)
    if (tc->input(i)->type()->kind() == c10::TypeKind::TensorType) keep = static_cast<int64_t>(i);
  if (keep < 0 || keep >= static_cast<int64_t>(tc->inputs().size())) return;
  WithInsertPoint guard(g->return_node());
  std::vector<Value*> elems;
  for (size_t i = 0; i < tc->inputs().size(); ++i)
    elems.push_back(static_cast<int64_t>(i) == keep ? tc->input(i) : g->insertConstant(c10::IValue()));
  Node* out = g->insertNode(g->createTuple(elems));
  g->return_node()->replaceInput(0, out->output());
  EliminateDeadCode(g);
  rw.graph = g;
  m.graph = g;
  m.fn = std::make_unique<GraphFunction>("interp_hooked_forward_logits", g, nullptr);
}

// Of the candidates for a module's output (the tensor elements of its tuple), the first shaped
// [batch, pos, d] keeps the group's names ((hidden, present) or a traced (k, v, hidden)); the others
// drop them. No such candidate: the first keeps them.
void choose_candidates(HookedModel::Impl& m, const std::map<int64_t, std::vector<int64_t>>& shapes, int n_groups) {
  for (int group = 0; group < n_groups; ++group) {
    int64_t chosen = -1, first = -1;
    for (size_t id = 0; id < m.raw.size(); ++id) {
      const auto& names = m.raw[id].names;
      if (std::none_of(names.begin(), names.end(), [&](const auto& t) { return t.group == group; })) continue;
      if (first < 0) first = static_cast<int64_t>(id);
      auto sh = shapes.find(static_cast<int64_t>(id));
      if (chosen < 0 && sh != shapes.end() && sh->second.size() == 3 && sh->second[0] == HookPoint::kBatch &&
          sh->second[1] == HookPoint::kPos && sh->second[2] > 0)
        chosen = static_cast<int64_t>(id);
    }
    if (chosen < 0) chosen = first;
    for (size_t id = 0; id < m.raw.size(); ++id) {
      if (static_cast<int64_t>(id) == chosen) continue;
      auto& names = m.raw[id].names;
      names.erase(std::remove_if(names.begin(), names.end(), [&](const auto& t) { return t.group == group; }),
                  names.end());
    }
  }
}

// A candidate for an attention point in another layout is not given the TransformerLens name.
void drop_wrong_layouts(HookedModel::Impl& m, const std::map<int64_t, std::vector<int64_t>>& shapes,
                        std::map<std::string, std::string>& failures) {
  for (size_t id = 0; id < m.raw.size(); ++id) {
    auto sh = shapes.find(static_cast<int64_t>(id));
    if (sh == shapes.end()) continue;
    auto& names_of = m.raw[id].names;
    for (auto it = names_of.begin(); it != names_of.end();) {
      if (tl_layout_ok(it->kind, sh->second)) {
        ++it;
        continue;
      }
      failures[it->name] = fmt::format("the value found has shape {}, not TransformerLens's layout", shape_str(sh->second));
      it = names_of.erase(it);
    }
  }
}

// The TransformerLens points the mapped modules promise, and why each absent one is absent.
std::vector<MissingPoint> missing_tl_points(const HookedModel::Impl& m, const detail::Rewrite& rw,
                                            const std::map<std::string, std::string>& failures,
                                            const std::string& name_map_source, bool edge_points) {
  const auto& blocks = rw.blocks;
  std::vector<std::string> expected = {"hook_embed", "hook_pos_embed"};
  for (const auto& [L, has_mlp] : blocks) {
    std::string b = fmt::format("blocks.{}.", L);
    for (const char* s : {"hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
                          "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "hook_attn_out"})
      expected.push_back(b + s);
    if (has_mlp)
      for (const char* s : {"hook_resid_mid", "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out"})
        expected.push_back(b + s);
    if (edge_points) {
      for (PointKind k : {PointKind::QInput, PointKind::KInput, PointKind::VInput, PointKind::Result})
        expected.push_back(point_name(k, L));
      if (has_mlp) expected.push_back(point_name(PointKind::MlpIn, L));
    }
    expected.push_back(b + "hook_resid_post");
  }
  if (blocks.empty()) expected.push_back("blocks.{L}.*");
  expected.push_back("ln_final.hook_normalized");
  for (const auto& n : rw.expected)  // family-specific points (rot_q, pre_linear, hook_scale) that were looked for
    if (std::find(expected.begin(), expected.end(), n) == expected.end()) expected.push_back(n);
  std::vector<MissingPoint> missing;
  for (const auto& n : expected) {
    if (m.name_to_id.count(n)) continue;
    auto f = failures.find(n);
    missing.push_back({n, f != failures.end() ? f->second
                                              : fmt::format("no module is mapped to it by {}; pass a name map "
                                                            "(--name-map) if the model names modules differently",
                                                            name_map_source)});
  }
  return missing;
}

}  // namespace

HookedModel HookedModel::load(const std::string& path, const LoadOptions& options) {
  auto m = std::make_shared<Impl>();
  m->path = path;
  try {
    m->device = c10::Device(options.device);
  } catch (const c10::Error&) {
    throw Error(fmt::format("device '{}' is not a device; use cpu, cuda or cuda:N", options.device));
  }
  if (m->device.is_cuda() && !at::hasCUDA())
    throw Error(fmt::format("device '{}' asked for, but this LibTorch build sees no CUDA device; use --device cpu",
                            options.device));
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw Error(fmt::format("{}: is a folder, not a model file; give the TorchScript .pt file inside it", path));
  if (!std::filesystem::is_regular_file(path, ec))
    throw Error(fmt::format("{}: no such model file; export one with models/export.py", path));
  try {
    m->module = torch::jit::load(path, m->device);
  } catch (const c10::Error& e) {
    throw Error(fmt::format("{}: not a TorchScript file ({}); save the model with torch.jit.script or "
                            "torch.jit.trace and torch.jit.save",
                            path, first_line(e.what_without_backtrace())));
  }
  m->module.eval();
  default_extra_args(*m);
  m->output = options.output;

  detail::NameMap names = detail::NameMap::transformer_lens();
  if (options.name_map.empty()) {  // a model with a known family's module names needs no map
    std::vector<std::string> module_paths;
    for (const auto& nm : m->module.named_modules())
      if (!nm.name.empty()) module_paths.push_back(nm.name);
    std::tie(names, m->info.name_map_reason) = detail::NameMap::detect(module_paths);
  } else {
    names = detail::NameMap::from_option(options.name_map);
    m->info.name_map_reason = "given with --name-map (LoadOptions::name_map)";
  }
  m->info.name_map = names.source();
  detail::Rewrite rw;
  try {
    rw = detail::rewrite_forward(m->module, names);
  } catch (const c10::Error& e) {
    throw Error(fmt::format("{}: could not rewrite the forward graph: {}", path, first_line(e.what_without_backtrace())));
  }
  if (const char* dump = std::getenv("INTERP_DUMP_GRAPH"); dump && *dump)  // debugging a model's patterns
    std::fprintf(stderr, "%s: rewritten forward graph\n%s\n", path.c_str(), rw.graph->toString().c_str());
  m->raw = std::move(rw.points);
  m->graph = rw.graph;
  m->fn = std::make_unique<torch::jit::GraphFunction>("interp_hooked_forward", rw.graph, nullptr);
  m->info.n_layers = static_cast<int>(rw.blocks.size());
  m->info.n_ctx = context_length(m->module, rw.pos_embed_path);

  check_every_position_has_logits(*m);
  if (m->targets_arg >= 0) drop_other_outputs(*m, rw);
  auto shapes = probe_shapes(*m);
  choose_candidates(*m, shapes, rw.n_candidate_groups);
  drop_wrong_layouts(*m, shapes, rw.failures);
  if (options.edge_points) {
    int64_t n_heads = 0, n_kv_heads = 0;
    for (size_t id = 0; id < m->raw.size(); ++id)
      for (const auto& t : m->raw[id].names) {
        if (t.layer != 0 || !shapes.count(static_cast<int64_t>(id))) continue;
        if (t.kind == PointKind::Q) n_heads = shapes[static_cast<int64_t>(id)][2];
        if (t.kind == PointKind::K) n_kv_heads = shapes[static_cast<int64_t>(id)][2];
      }
    if (n_heads <= 0)
      throw Error(fmt::format("{}: edge points need blocks.0.attn.hook_q to know the number of heads, and it was "
                              "not placed ({}); load without edge points",
                              path, rw.failures.count("blocks.0.attn.hook_q") ? rw.failures["blocks.0.attn.hook_q"]
                                                                               : "no attention found"));
    const int64_t T = m->info.n_ctx ? std::min<int64_t>(5, m->info.n_ctx) : 5;
    at::Tensor probe = (at::arange(2 * T, at::kLong) * 7 + 3).remainder(std::max<int64_t>(m->info.d_vocab, 1)).view({2, T});
    at::Tensor before = m->run(probe, nullptr, {});
    rw.points = m->raw;
    rw.graph = rw.graph->copy();  // the first graph has run: edit a copy
    try {
      detail::add_edge_points(rw, m->info.n_layers, n_heads, n_kv_heads > 0 ? n_kv_heads : n_heads);
    } catch (const c10::Error& e) {
      throw Error(fmt::format("{}: could not add the edge points: {}", path, first_line(e.what_without_backtrace())));
    }
    m->raw = std::move(rw.points);
    m->graph = rw.graph;
    m->fn = std::make_unique<torch::jit::GraphFunction>("interp_hooked_forward_edges", rw.graph, nullptr);
    at::Tensor after = m->run(probe, nullptr, {});
    double diff = (after - before).abs().max().item<double>(), scale = before.abs().max().item<double>();
    if (!(diff <= 1e-4 * std::max(scale, 1.0)))
      throw Error(fmt::format("{}: with edge points the model's logits differ from the plain run by {:.3g} (max "
                              "|logit| {:.3g}): its attention output is not linear in the heads' outputs; load "
                              "without edge points",
                              path, diff, scale));
    m->edge_check_max_diff = diff;
    m->info.edge_points = true;
    shapes = probe_shapes(*m);
    drop_wrong_layouts(*m, shapes, rw.failures);
  }
  std::vector<int64_t> order;
  hook_ids_in_order(rw.graph->block(), order);
  index_points(*m, order, shapes);
  m->missing = missing_tl_points(*m, rw, rw.failures, names.source(), options.edge_points);

  if (auto it = m->name_to_id.find("blocks.0.hook_resid_pre"); it != m->name_to_id.end() && shapes.count(it->second))
    m->info.d_model = shapes[it->second].back();
  if (auto it = m->name_to_id.find("blocks.0.attn.hook_q"); it != m->name_to_id.end() && shapes.count(it->second)) {
    m->info.n_heads = shapes[it->second][2];
    m->info.d_head = shapes[it->second][3];
  }
  if (auto it = m->name_to_id.find("blocks.0.attn.hook_k"); it != m->name_to_id.end() && shapes.count(it->second))
    m->info.n_kv_heads = shapes[it->second][2];
  return HookedModel(m);
}

const std::vector<HookPoint>& HookedModel::hook_points() const { return impl_->points; }
const std::vector<MissingPoint>& HookedModel::missing_points() const { return impl_->missing; }
const ModelInfo& HookedModel::info() const { return impl_->info; }
const std::string& HookedModel::path() const { return impl_->path; }
c10::Device HookedModel::device() const { return impl_->device; }

const HookPoint& HookedModel::hook_point(const std::string& name) const {
  int64_t id = impl_->id_of(name);
  auto it = std::find(impl_->point_ids.begin(), impl_->point_ids.end(), id);
  return impl_->points[static_cast<size_t>(it - impl_->point_ids.begin())];
}

const HookPoint& HookedModel::find_point(const std::string& name) const {
  if (impl_->name_to_id.count(name)) return hook_point(name);
  const std::string suffix = "." + name;
  std::map<int64_t, std::string> hits;  // point id -> the first matching name (aliases of one point count once)
  for (const auto& [n, id] : impl_->name_to_id)
    if (n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0) hits.emplace(id, n);
  if (hits.size() == 1) return hook_point(hits.begin()->second);
  if (hits.size() > 1) {
    std::vector<std::string> names;
    for (const auto& [id, n] : hits) names.push_back(n);
    throw Error(fmt::format("{}: '{}' matches several hook points ({}); give the full name", impl_->path, name,
                            fmt::join(names, ", ")));
  }
  return hook_point(name);  // none: the error with the closest names
}

namespace {

// Adds the persistent hooks and the given temporary ones to a run.
void add_hooks(HookedModel::Impl& m, RunState& rs, const std::vector<std::pair<std::string, HookFn>>& hooks) {
  {
    std::lock_guard<std::mutex> lock(m.mu);
    for (const auto& [handle, h] : m.persistent) rs.add_hook(h.id, h.name, h.fn);
  }
  for (const auto& [name, fn] : hooks) {
    if (!fn) throw Error(fmt::format("hook on '{}' is an empty function", name));
    rs.add_hook(m.id_of(name), name, std::make_shared<const HookFn>(fn));
  }
}

}  // namespace

at::Tensor HookedModel::forward(const at::Tensor& tokens, const RunOptions& options) const {
  return run_with_hooks(tokens, {}, options);
}

std::pair<at::Tensor, ActivationCache> HookedModel::run_with_cache(const at::Tensor& tokens, const NamesFilter& filter,
                                                                   const RunOptions& options) const {
  return run_with_hooks_and_cache(tokens, {}, filter, options);
}

at::Tensor HookedModel::run_with_hooks(const at::Tensor& tokens,
                                       const std::vector<std::pair<std::string, HookFn>>& hooks,
                                       const RunOptions& options) const {
  bool any_persistent;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    any_persistent = !impl_->persistent.empty();
  }
  if (hooks.empty() && !any_persistent) return impl_->run(tokens, nullptr, options);  // the inactive fast path
  RunState rs(*impl_);
  add_hooks(*impl_, rs, hooks);
  return impl_->run(tokens, &rs, options);
}

std::pair<at::Tensor, ActivationCache> HookedModel::run_with_hooks_and_cache(
    const at::Tensor& tokens, const std::vector<std::pair<std::string, HookFn>>& hooks, const NamesFilter& filter,
    const RunOptions& options) const {
  RunState rs(*impl_);
  add_hooks(*impl_, rs, hooks);
  ActivationCache cache(impl_->info.n_layers);
  rs.cache = &cache;
  for (size_t i = 0; i < impl_->points.size(); ++i) {
    const HookPoint& p = impl_->points[i];
    bool want = !filter || filter(p.name);
    for (size_t a = 0; !want && a < p.aliases.size(); ++a) want = filter(p.aliases[a]);
    if (want) rs.capture(impl_->point_ids[i]);
  }
  at::Tensor logits = impl_->run(tokens, &rs, options);
  for (size_t i = 0; i < impl_->points.size(); ++i)
    for (const auto& alias : impl_->points[i].aliases) cache.alias(alias, impl_->points[i].name);
  return {logits, std::move(cache)};
}

HookHandle HookedModel::add_hook(const std::string& name, HookFn fn) {
  if (!fn) throw Error(fmt::format("hook on '{}' is an empty function", name));
  int64_t id = impl_->id_of(name);
  std::lock_guard<std::mutex> lock(impl_->mu);
  uint64_t handle = impl_->next_handle++;
  impl_->persistent[handle] = {id, name, std::make_shared<const HookFn>(std::move(fn))};
  return HookHandle(std::weak_ptr<void>(impl_), handle);
}

at::Tensor HookedModel::forward_unhooked(const at::Tensor& tokens, const RunOptions& options) const {
  at::AutoGradMode grad_mode(options.grad);
  at::Tensor t = (tokens.dim() == 1 ? tokens.unsqueeze(0) : tokens).to(impl_->device, at::kLong);
  std::vector<c10::IValue> args{t};
  for (size_t i = 0; i < impl_->extra_args.size(); ++i)
    args.push_back(static_cast<int>(i) == impl_->targets_arg ? c10::IValue(t) : impl_->extra_args[i]);
  return impl_->logits_of(impl_->module.forward(args));
}

HookHandle::HookHandle(HookHandle&& other) noexcept : owner_(std::move(other.owner_)), id_(other.id_) {
  other.owner_.reset();
}
HookHandle& HookHandle::operator=(HookHandle&& other) noexcept {
  if (this != &other) {
    remove();
    owner_ = std::move(other.owner_);
    id_ = other.id_;
    other.owner_.reset();
  }
  return *this;
}
HookHandle::~HookHandle() { remove(); }

void HookHandle::remove() {
  if (auto owner = owner_.lock()) {
    auto impl = std::static_pointer_cast<HookedModel::Impl>(owner);
    std::lock_guard<std::mutex> lock(impl->mu);
    impl->persistent.erase(id_);
  }
  owner_.reset();
}

}  // namespace interp
