#include "hooks/rewrite.h"

#include <fmt/format.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include <algorithm>
#include <initializer_list>
#include <unordered_map>
#include <unordered_set>

#include "hooks/hook_op.h"
#include "interp/error.h"

namespace interp::detail {
namespace {

using torch::jit::Block;
using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

bool is_tensor(const Value* v) { return v->type()->kind() == c10::TypeKind::TensorType; }

bool kind_in(const Node* n, std::initializer_list<const char*> kinds) {
  const char* k = n->kind().toQualString();
  for (const char* s : kinds)
    if (std::strcmp(k, s) == 0) return true;
  return false;
}

void find_nodes(Block* b, std::initializer_list<const char*> kinds, std::vector<Node*>& out) {
  for (Node* n : b->nodes()) {
    if (kind_in(n, kinds)) out.push_back(n);
    for (Block* sub : n->blocks()) find_nodes(sub, kinds, out);
  }
}

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// Inline every prim::CallFunction (free functions, F.* helpers compiled by script) and fold the
// branches constants decide (F.softmax's `if dtype is None`), so that node patterns see plain ops.
// Module calls (prim::CallMethod) are left for the instrumenting walk.
void inline_functions(std::shared_ptr<Graph>& g) {
  for (bool changed = true; changed;) {
    changed = false;
    std::vector<Node*> calls;
    find_nodes(g->block(), {"prim::CallFunction"}, calls);
    for (Node* n : calls) {
      auto fty = n->input(0)->type()->cast<c10::FunctionType>();
      if (!fty) continue;
      torch::jit::GraphFunction* f = torch::jit::tryToGraphFunction(*fty->function());
      if (!f) continue;
      n->removeInput(0);
      torch::jit::inlineCallTo(n, f);
      changed = true;
      break;  // the node list changed; look again
    }
  }
  torch::jit::ConstantPropagation(g);
}

// Operands of a binary product node: matmul/bmm (a, b), baddbmm (_, a, b), einsum (eq, [a, b]).
std::vector<Value*> product_operands(Node* n) {
  if (kind_in(n, {"aten::einsum"})) {
    Node* list = n->input(1)->node();
    if (list->kind() != c10::prim::ListConstruct || list->inputs().size() != 2) return {};
    return {list->input(0), list->input(1)};
  }
  if (kind_in(n, {"aten::baddbmm"})) return {n->input(1), n->input(2)};
  return {n->input(0), n->input(1)};
}

constexpr std::initializer_list<const char*> kProducts = {"aten::matmul", "aten::bmm", "aten::einsum",
                                                          "aten::baddbmm"};

class Rewriter {
 public:
  Rewriter(const NameMap& names, Rewrite& out) : names_(names), out_(out) {}

  void instrument(std::shared_ptr<Graph>& graph, const std::string& prefix) {
    inline_functions(graph);
    Graph& g = *graph;
    Role role = names_.role_of(prefix);
    if (role.kind == Role::Block) {
      out_.blocks.emplace(role.layer, false);
      std::string name = point_name(PointKind::ResidPre, role.layer);
      if (g.inputs().size() >= 2 && is_tensor(g.inputs()[1]))
        add_point(g.inputs()[1], {name, PointKind::ResidPre, role.layer});
      else
        out_.failures[name] = fmt::format("{}'s forward takes no tensor input", prefix);
    }
    std::vector<std::pair<Role, Value*>> calls;
    std::unordered_map<Value*, std::string> paths{{g.inputs()[0], prefix}};
    walk(g.block(), paths, prefix, calls);
    if (role.kind == Role::Attn) attention_points(g, role.layer);
    if (role.kind == Role::Mlp) mlp_points(g, role.layer);
    if (role.kind == Role::Block) resid_mid_point(role.layer, calls);
  }

  // Marks hook points whose value the graph later changes in place: a cache must copy those.
  void mark_inplace_uses(Graph& g) {
    std::vector<Node*> hooks;
    find_nodes(g.block(), {"interp::hook"}, hooks);
    for (Node* h : hooks) {
      for (const auto& use : h->output()->uses()) {
        std::string k = use.user->kind().toUnqualString();
        if (use.user->kind().is_aten() && use.offset == 0 && !k.empty() && k.back() == '_')
          out_.points[point_id(h)].clone_on_capture = true;
      }
    }
  }

 private:
  static int64_t point_id(Node* hook) { return torch::jit::toIValue(hook->input(1))->toInt(); }

  // The value a hook on `v` would replace: v itself, or the output of the hook already on it.
  static Value* hooked(Value* v) {
    for (bool moved = true; moved;) {
      moved = false;
      for (const auto& use : v->uses()) {
        if (use.user->kind() == hook_symbol()) {
          v = use.user->output();
          moved = true;
          break;
        }
      }
    }
    return v;
  }

  // Puts a hook op on `v` (or names the one already there) and returns the hooked value.
  Value* add_point(Value* v, PointTag tag) {
    v = hooked(v);
    if (v->node()->kind() == hook_symbol()) {
      out_.points[point_id(v->node())].names.push_back(std::move(tag));
      return v;
    }
    Graph* g = v->owningGraph();
    Node* at = v->node()->kind() == c10::prim::Param ? v->node()->owningBlock()->nodes().front() : v->node()->next();
    torch::jit::WithInsertPoint guard(at);
    const auto id = static_cast<int64_t>(out_.points.size());
    Value* idv = g->insertConstant(id);
    Node* n = g->insertNode(g->create(hook_symbol(), {v, idv}, 1));
    n->output()->setType(v->type());
    v->replaceAllUsesWith(n->output());
    n->replaceInput(0, v);
    out_.points.push_back({{std::move(tag)}, false});
    return n->output();
  }

  void walk(Block* b, std::unordered_map<Value*, std::string>& paths, const std::string& prefix,
            std::vector<std::pair<Role, Value*>>& calls) {
    for (auto it = b->nodes().begin(); it != b->nodes().end();) {
      Node* n = *it;
      ++it;  // inlining replaces n; the inlined nodes are already instrumented
      for (Block* sub : n->blocks()) walk(sub, paths, prefix, calls);
      if (n->kind() == c10::prim::GetAttr) {
        auto p = paths.find(n->input(0));
        auto cls = n->output()->type()->cast<c10::ClassType>();
        if (p != paths.end() && cls && cls->is_module()) paths[n->output()] = join(p->second, n->s(c10::attr::name));
      } else if (n->kind() == c10::prim::CallMethod) {
        auto p = paths.find(n->input(0));
        if (p != paths.end()) call(n, p->second, prefix, calls);
      }
    }
  }

  void call(Node* n, const std::string& path, const std::string& prefix,
            std::vector<std::pair<Role, Value*>>& calls) {
    auto cls = n->input(0)->type()->cast<c10::ClassType>();
    if (!cls) return;
    const std::string method = n->s(c10::attr::name);
    torch::jit::Function* fn = cls->findMethod(method);
    torch::jit::GraphFunction* gf = fn ? torch::jit::tryToGraphFunction(*fn) : nullptr;
    if (!gf) return;
    std::shared_ptr<Graph> callee = gf->graph()->copy();
    // A call on self (a helper method) is part of this module; a submodule's forward is its own point.
    const bool submodule = method == "forward" && path != prefix;
    if (submodule) {
      instrument(callee, path);
    } else {
      inline_functions(callee);
      std::unordered_map<Value*, std::string> paths{{callee->inputs()[0], path}};
      walk(callee->block(), paths, prefix, calls);
    }
    std::vector<Value*> outs = torch::jit::inlineCallTo(n, gf, callee.get());
    if (!submodule) return;
    Role role = names_.role_of(path);
    if (outs.size() != 1 || !is_tensor(outs[0])) {
      for (const auto& tl : output_hook_names(role))
        out_.failures[tl.name] =
            !outs.empty() && outs[0]->type()->kind() == c10::TypeKind::NoneType
                ? fmt::format("{} returns None in this graph: a traced module that returns its input unchanged (an "
                              "identity, e.g. normalization turned off) keeps no output of its own, so there is "
                              "nothing to hook",
                              path)
                : fmt::format("{} returns {}, not a tensor", path, outs.empty() ? "nothing" : outs[0]->type()->str());
      return;
    }
    int count = call_count_[path]++;
    Value* h = add_point(outs[0], {count == 0 ? path : fmt::format("{}#{}", path, count), PointKind::Module, role.layer});
    if (count > 0) return;  // TransformerLens names go to the first call only
    for (const auto& tl : output_hook_names(role)) add_point(h, tl);
    calls.emplace_back(role, h);
    if (role.kind == Role::Mlp) out_.blocks[role.layer] = true;
    if (role.kind == Role::PosEmbed) out_.pos_embed_path = path;
  }

  // Walks back from `v` through ops in `through` to a node in `targets`.
  static Node* find_back(Value* v, std::initializer_list<const char*> through, int depth = 12) {
    if (depth == 0) return nullptr;
    Node* n = v->node();
    if (kind_in(n, kProducts)) return n;
    if (!kind_in(n, through) && n->kind() != hook_symbol()) return nullptr;
    for (Value* in : n->inputs()) {
      if (!is_tensor(in)) continue;
      if (Node* found = find_back(in, through, depth - 1)) return found;
    }
    return nullptr;
  }

  // Walks forward from `v` through ops in `through` to a product; returns it and the operand reached.
  static std::pair<Node*, Value*> find_forward(Value* v, std::initializer_list<const char*> through, int depth = 8) {
    if (depth == 0) return {nullptr, nullptr};
    for (const auto& use : v->uses()) {
      Node* u = use.user;
      if (kind_in(u, kProducts)) return {u, v};
      if (u->kind() == c10::prim::ListConstruct && u->output()->uses().size() == 1 &&
          kind_in(u->output()->uses()[0].user, {"aten::einsum"}))
        return {u->output()->uses()[0].user, v};
      if ((kind_in(u, through) || u->kind() == hook_symbol()) && u->outputs().size() == 1) {
        auto found = find_forward(u->output(), through, depth - 1);
        if (found.first) return found;
      }
    }
    return {nullptr, nullptr};
  }

  // Back through layout-only ops (and a scalar scale) to the tensor in [batch, pos, head, d_head].
  static Value* back_through_layout(Value* v) {
    for (;;) {
      Node* n = v->node();
      if (kind_in(n, {"aten::transpose", "aten::permute", "aten::contiguous", "aten::clone", "aten::to"}) ||
          n->kind() == hook_symbol()) {
        v = n->input(0);
      } else if (kind_in(n, {"aten::mul", "aten::div"})) {
        bool a_const = n->input(0)->node()->kind() == c10::prim::Constant || !is_tensor(n->input(0));
        bool b_const = n->input(1)->node()->kind() == c10::prim::Constant || !is_tensor(n->input(1));
        if (b_const && !a_const) v = n->input(0);
        else if (a_const && !b_const) v = n->input(1);
        else return v;
      } else {
        return v;
      }
    }
  }

  static Value* forward_through_layout(Value* v) {
    while (v->uses().size() == 1 &&
           kind_in(v->uses()[0].user, {"aten::transpose", "aten::permute", "aten::contiguous"}))
      v = v->uses()[0].user->output();
    return v;
  }

  void attention_points(Graph& g, int L) {
    auto fail = [&](std::initializer_list<PointKind> which, const std::string& why) {
      for (PointKind w : which) out_.failures[point_name(w, L)] = why;
    };
    auto tag = [&](PointKind k) { return PointTag{point_name(k, L), k, L}; };
    std::vector<Node*> softmax;
    find_nodes(g.block(), {"aten::softmax", "aten::_softmax"}, softmax);
    if (softmax.size() != 1) {
      fail({PointKind::Q, PointKind::K, PointKind::V, PointKind::AttnScores, PointKind::Pattern, PointKind::Z},
           fmt::format("blocks.{}.attn has {} softmax nodes; the attention pattern needs exactly one", L,
                       softmax.size()));
      return;
    }
    Value* scores = softmax[0]->input(0);
    Value* pattern = softmax[0]->output();
    Node* qk = find_back(scores, {"aten::where", "aten::masked_fill", "aten::add", "aten::sub", "aten::mul",
                                  "aten::div", "aten::to", "aten::type_as", "aten::contiguous", "aten::clone"});
    auto [pv, pattern_side] = find_forward(pattern, {"aten::dropout", "aten::to", "aten::type_as",
                                                     "aten::contiguous", "aten::clone"});
    Value *q = nullptr, *k = nullptr, *v = nullptr, *z = nullptr;
    if (auto ops = qk ? product_operands(qk) : std::vector<Value*>{}; ops.size() == 2) {
      q = back_through_layout(ops[0]);
      k = back_through_layout(ops[1]);
    } else {
      fail({PointKind::Q, PointKind::K}, fmt::format("no matmul/einsum of two operands found before blocks.{}.attn's softmax", L));
    }
    if (auto ops = pv ? product_operands(pv) : std::vector<Value*>{}; ops.size() == 2) {
      v = back_through_layout(ops[0] == pattern_side ? ops[1] : ops[0]);
      z = forward_through_layout(pv->output());
    } else {
      fail({PointKind::V, PointKind::Z}, fmt::format("no matmul/einsum of two operands found after blocks.{}.attn's softmax", L));
    }
    if (q) add_point(q, tag(PointKind::Q));
    if (k) add_point(k, tag(PointKind::K));
    if (v) add_point(v, tag(PointKind::V));
    add_point(scores, tag(PointKind::AttnScores));
    add_point(pattern, tag(PointKind::Pattern));
    if (z) add_point(z, tag(PointKind::Z));
  }

  void mlp_points(Graph& g, int L) {
    std::vector<Node*> act;
    find_nodes(g.block(), {"aten::gelu", "aten::relu", "aten::silu", "aten::gelu_", "aten::relu_", "aten::silu_"},
               act);
    if (act.size() != 1) {
      auto why = fmt::format("blocks.{}.mlp has {} activation nodes (gelu/relu/silu); the pattern needs exactly one",
                             L, act.size());
      out_.failures[point_name(PointKind::MlpPre, L)] = why;
      out_.failures[point_name(PointKind::MlpPost, L)] = why;
      return;
    }
    add_point(act[0]->input(0), {point_name(PointKind::MlpPre, L), PointKind::MlpPre, L});
    add_point(act[0]->output(), {point_name(PointKind::MlpPost, L), PointKind::MlpPost, L});
  }

  void resid_mid_point(int L, const std::vector<std::pair<Role, Value*>>& calls) {
    const std::string name = point_name(PointKind::ResidMid, L);
    auto attn = std::find_if(calls.begin(), calls.end(), [](auto& c) { return c.first.kind == Role::Attn; });
    bool has_mlp = std::any_of(calls.begin(), calls.end(), [](auto& c) { return c.first.kind == Role::Mlp; });
    if (!has_mlp) return;  // attention-only block: TransformerLens has no resid_mid either
    if (attn == calls.end()) {
      out_.failures[name] = fmt::format("blocks.{} calls no module mapped to blocks.{}.attn", L, L);
      return;
    }
    for (const auto& use : attn->second->uses()) {
      if (kind_in(use.user, {"aten::add"})) {
        add_point(use.user->output(), {name, PointKind::ResidMid, L});
        return;
      }
    }
    out_.failures[name] = fmt::format("blocks.{}.attn's output is not added to the residual stream", L);
  }

  const NameMap& names_;
  Rewrite& out_;
  std::unordered_map<std::string, int> call_count_;
};

}  // namespace

Rewrite rewrite_forward(const torch::jit::Module& module, const NameMap& names) {
  Rewrite out;
  torch::jit::Function* fn = module.type()->findMethod("forward");
  torch::jit::GraphFunction* gf = fn ? torch::jit::tryToGraphFunction(*fn) : nullptr;
  if (!gf) throw Error("the module has no TorchScript forward method to rewrite");
  out.graph = gf->graph()->copy();
  Rewriter rw(names, out);
  rw.instrument(out.graph, "");
  torch::jit::EliminateDeadCode(out.graph);
  rw.mark_inplace_uses(*out.graph);
  return out;
}

}  // namespace interp::detail

// ---- opt-in edge points ------------------------------------------------------------------------
namespace interp::detail {
namespace {

using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

class EdgePoints {
 public:
  EdgePoints(Rewrite& rw, int64_t n_heads) : rw_(rw), g_(*rw.graph), H_(n_heads) {
    for (Node* n : g_.block()->nodes())
      if (n->kind() == hook_symbol()) hook_node_[torch::jit::toIValue(n->input(1))->toInt()] = n;
  }

  void layer(int L) {
    split_inputs(L);
    result(L);
    mlp_in(L);
  }

 private:
  // The top-level hook op carrying the point of `kind` at layer L (nullptr if none).
  Node* hook_of(PointKind kind, int L) const {
    for (size_t id = 0; id < rw_.points.size(); ++id)
      for (const auto& t : rw_.points[id].names)
        if (t.kind == kind && t.layer == L) {
          auto it = hook_node_.find(static_cast<int64_t>(id));
          return it == hook_node_.end() ? nullptr : it->second;
        }
    return nullptr;
  }

  Value* new_point(Value* v, PointKind kind, int L) {
    const auto id = static_cast<int64_t>(rw_.points.size());
    Node* n = g_.insertNode(g_.create(hook_symbol(), {v, g_.insertConstant(id)}, 1));
    n->output()->setType(v->type());
    rw_.points.push_back({{{point_name(kind, L), kind, L}}, false});
    return n->output();
  }

  // The nodes between `from` and `to` (top level, in order): those that depend on `from` and that
  // `to` depends on. Empty with *why set if `to` does not depend on `from` or control flow is in the way.
  std::vector<Node*> slice(Value* from, Value* to, std::string* why) const {
    std::unordered_set<const Value*> reach{from};
    std::vector<Node*> fwd;
    for (Node* n : g_.block()->nodes()) {
      if (n == to->node()->next()) break;
      bool dep = std::any_of(n->inputs().begin(), n->inputs().end(), [&](Value* v) { return reach.count(v) > 0; });
      if (!dep) continue;
      if (!n->blocks().empty()) {
        *why = fmt::format("a {} node (control flow) lies on the path", n->kind().toQualString());
        return {};
      }
      for (Value* o : n->outputs()) reach.insert(o);
      fwd.push_back(n);
    }
    if (!reach.count(to)) {
      *why = "the value does not depend on the block's input in the graph";
      return {};
    }
    std::unordered_set<const Value*> need{to};
    std::vector<Node*> out;
    for (auto it = fwd.rbegin(); it != fwd.rend(); ++it) {
      Node* n = *it;
      if (std::none_of(n->outputs().begin(), n->outputs().end(), [&](Value* o) { return need.count(o) > 0; })) continue;
      for (Value* v : n->inputs()) need.insert(v);
      out.push_back(n);
    }
    std::reverse(out.begin(), out.end());
    return out;
  }

  // Inserts a copy of `nodes` computing `to` from `input` in place of `from`; hook ops are skipped
  // (the copy is not a hook point: its hooks already ran on the original value).
  Value* clone(const std::vector<Node*>& nodes, Value* from, Value* input, Value* to) {
    std::unordered_map<Value*, Value*> map{{from, input}};
    auto lookup = [&](Value* v) {
      auto it = map.find(v);
      return it == map.end() ? v : it->second;
    };
    for (Node* n : nodes) {
      if (n->kind() == hook_symbol()) {
        map[n->output()] = lookup(n->input(0));
        continue;
      }
      Node* c = g_.insertNode(g_.createClone(n, lookup));
      for (size_t i = 0; i < n->outputs().size(); ++i) map[n->outputs()[i]] = c->outputs()[i];
    }
    return lookup(to);
  }

  Value* ins(const char* op, std::vector<torch::jit::NamedValue> args) {
    return g_.insert(c10::Symbol::fromQualString(op), args);
  }

  void split_inputs(int L) {
    Node* pre = hook_of(PointKind::ResidPre, L);
    const std::pair<PointKind, PointKind> kinds[] = {
        {PointKind::Q, PointKind::QInput}, {PointKind::K, PointKind::KInput}, {PointKind::V, PointKind::VInput}};
    for (auto [kind, input_kind] : kinds) {
      const std::string name = point_name(input_kind, L);
      Node* target = hook_of(kind, L);
      if (!pre || !target) {
        rw_.failures[name] = fmt::format("needs {} and {}", point_name(PointKind::ResidPre, L), point_name(kind, L));
        continue;
      }
      std::string why;
      Value* to = target->input(0);
      auto nodes = slice(pre->output(), to, &why);
      if (nodes.empty()) {
        rw_.failures[name] = fmt::format("cannot separate {} per head: {}", point_name(kind, L), why);
        continue;
      }
      torch::jit::WithInsertPoint guard(target);
      Value* x = pre->output();  // [batch, pos, d_model]
      Value* rep = ins("aten::expand", {ins("aten::unsqueeze", {x, 2}),
                                        g_.insertConstant(std::vector<int64_t>{-1, -1, H_, -1})});
      Value* per_head = new_point(rep, input_kind, L);  // [batch, pos, head, d_model]
      std::vector<Value*> heads;
      for (int64_t h = 0; h < H_; ++h) {
        Value* xh = ins("aten::select", {per_head, 2, h});
        heads.push_back(ins("aten::select", {clone(nodes, x, xh, to), 2, h}));  // [batch, pos, d_head]
      }
      Value* list = g_.insertNode(g_.createList(c10::TensorType::get(), heads))->output();
      target->replaceInput(0, ins("aten::stack", {list, 2}));
    }
  }

  void result(int L) {
    const std::string name = point_name(PointKind::Result, L);
    Node* z = hook_of(PointKind::Z, L);
    Node* out = hook_of(PointKind::AttnOut, L);
    if (!z || !out) {
      rw_.failures[name] = fmt::format("needs {} and {}", point_name(PointKind::Z, L), point_name(PointKind::AttnOut, L));
      return;
    }
    std::string why;
    Value* to = out->input(0);
    auto nodes = slice(z->output(), to, &why);
    if (nodes.empty()) {
      rw_.failures[name] = fmt::format("cannot follow hook_z to the attention output: {}", why);
      return;
    }
    torch::jit::WithInsertPoint guard(out);
    Value* zv = z->output();  // [batch, pos, head, d_head]
    Value* zeros = ins("aten::zeros_like", {zv});
    Value* constant = clone(nodes, zv, zeros, to);  // the output projection's bias, broadcast
    std::vector<Value*> parts;
    for (int64_t h = 0; h < H_; ++h) {
      Value* only = ins("aten::constant_pad_nd", {ins("aten::narrow", {zv, 2, h, 1}),
                                                  g_.insertConstant(std::vector<int64_t>{0, 0, h, H_ - h - 1})});
      parts.push_back(ins("aten::sub", {clone(nodes, zv, only, to), constant}));  // [batch, pos, d_model]
    }
    Value* list = g_.insertNode(g_.createList(c10::TensorType::get(), parts))->output();
    Value* res = new_point(ins("aten::stack", {list, 2}), PointKind::Result, L);  // [batch, pos, head, d_model]
    Value* sum = ins("aten::sum", {res, g_.insertConstant(std::vector<int64_t>{2})});
    out->replaceInput(0, ins("aten::add", {sum, constant}));
  }

  void mlp_in(int L) {
    const std::string name = point_name(PointKind::MlpIn, L);
    if (!rw_.blocks.count(L) || !rw_.blocks.at(L)) return;  // attention-only: no MLP input
    Node* mid = hook_of(PointKind::ResidMid, L);
    Node* out = hook_of(PointKind::MlpOut, L);
    if (!mid || !out) {
      rw_.failures[name] = fmt::format("needs {} and {}", point_name(PointKind::ResidMid, L), point_name(PointKind::MlpOut, L));
      return;
    }
    Value* m = mid->output();
    Node* skip = nullptr;
    for (const auto& u : m->uses())
      if (u.user->kind() == c10::aten::add && u.user->owningBlock() == g_.block() &&
          (u.user->input(0) == out->output() || u.user->input(1) == out->output()))
        skip = u.user;
    if (!skip) {
      rw_.failures[name] = fmt::format("{} is not added to {} in the graph", point_name(PointKind::ResidMid, L),
                                       point_name(PointKind::MlpOut, L));
      return;
    }
    std::vector<torch::jit::Use> uses = m->uses();
    torch::jit::WithInsertPoint guard(mid->next());
    Value* in = new_point(m, PointKind::MlpIn, L);
    for (const auto& u : uses)
      if (u.user != skip) u.user->replaceInput(u.offset, in);
  }

  Rewrite& rw_;
  Graph& g_;
  int64_t H_;
  std::unordered_map<int64_t, Node*> hook_node_;
};

}  // namespace

void add_edge_points(Rewrite& rw, int n_layers, int64_t n_heads) {
  EdgePoints ep(rw, n_heads);
  for (int L = 0; L < n_layers; ++L) ep.layer(L);
  torch::jit::EliminateDeadCode(rw.graph);
}

}  // namespace interp::detail
