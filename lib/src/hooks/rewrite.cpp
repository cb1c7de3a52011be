#include "hooks/rewrite.h"

#include <fmt/format.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/lower_tuples.h>

#include <algorithm>
#include <sstream>
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
  torch::jit::LowerSimpleTuples(g);  // a helper's (q, k) tuple unpacked at once: patterns see through it
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
  Rewriter(const torch::jit::Module& root, const NameMap& names, Rewrite& out)
      : root_(root), names_(names), out_(out) {}

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
    const bool outer_folded = folded_;  // nested instrument() calls (submodules) keep their own flag
    folded_ = false;
    walk(g.block(), paths, prefix, calls);
    if (folded_) torch::jit::ConstantPropagation(graph);  // branches on folded attributes (repeat_kv's n_rep == 1)
    folded_ = outer_folded;
    if (role.kind == Role::Attn) attention_points(g, role.layer);
    if (role.kind == Role::Mlp) mlp_points(g, role.layer);
    if (role.kind == Role::Ln1 || role.kind == Role::Ln2 || role.kind == Role::LnFinal) scale_point(g, prefix, role);
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

  // The value a hook on `v` would replace: v itself, or the output of the hook already on it
  // (a derived point's op reads v but replaces nothing).
  Value* hooked(Value* v) const {
    for (bool moved = true; moved;) {
      moved = false;
      for (const auto& use : v->uses()) {
        if (use.user->kind() == hook_symbol() && !out_.points[point_id(use.user)].view.derived()) {
          v = use.user->output();
          moved = true;
          break;
        }
      }
    }
    return v;
  }

  // Puts a hook op on `v` (or names the one already there) and returns the hooked value. A point
  // seen through a view gets an op of its own.
  Value* add_point(Value* v, PointTag tag, PointView view = {}) {
    v = hooked(v);
    if (v->node()->kind() == hook_symbol() && view.empty() && out_.points[point_id(v->node())].view.empty()) {
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
    out_.points.push_back({{std::move(tag)}, false, std::move(view)});
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
        else if (p != paths.end()) fold_scalar_attribute(n, p->second);
      } else if (n->kind() == c10::prim::CallMethod) {
        auto p = paths.find(n->input(0));
        if (p != paths.end()) call(n, p->second, prefix, calls);
      }
    }
  }

  // A module's int / float / bool attribute (n_rep, a scale, a flag) becomes a constant, as
  // torch.jit.freeze does, so that branches on it fold and node patterns see through them. Modules
  // that assign attributes in forward (prim::SetAttr) keep them as they are.
  void fold_scalar_attribute(Node* n, const std::string& path) {
    const auto k = n->output()->type()->kind();
    if (k != c10::TypeKind::IntType && k != c10::TypeKind::FloatType && k != c10::TypeKind::BoolType) return;
    if (has_set_attr(n->owningGraph()->block())) return;
    torch::jit::Module m = root_;
    std::stringstream parts(path);
    for (std::string part; std::getline(parts, part, '.');) {
      if (!m.hasattr(part)) return;
      c10::IValue sub = m.attr(part);
      if (!sub.isObject()) return;
      m = torch::jit::Module(sub.toObject());
    }
    const std::string name = n->s(c10::attr::name);
    if (!m.hasattr(name)) return;
    torch::jit::WithInsertPoint guard(n);
    Value* c = n->owningGraph()->insertConstant(m.attr(name));
    n->output()->replaceAllUsesWith(c);
    folded_ = true;
  }

  static bool has_set_attr(Block* b) {
    for (Node* n : b->nodes()) {
      if (n->kind() == c10::prim::SetAttr) return true;
      for (Block* sub : n->blocks())
        if (has_set_attr(sub)) return true;
    }
    return false;
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
    // A module returning a tuple ((hidden, present), (attn_out, weights); a traced one flattens and may
    // reorder it): every tensor element is a candidate for the module's point, and after the probe
    // the first shaped [batch, pos, d] keeps the names (HookedModel::load, choose_candidates).
    std::vector<Value*> cands;
    if (outs.size() == 1 && !is_tensor(outs[0])) cands = tuple_tensors(outs[0]);
    else if (outs.size() == 1) cands = {outs[0]};
    if (cands.empty()) {
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
    const int group = cands.size() > 1 ? out_.n_candidate_groups++ : -1;
    for (Value* c : cands) {
      PointTag own{count == 0 ? path : fmt::format("{}#{}", path, count), PointKind::Module, role.layer};
      own.group = group;
      Value* h = add_point(c, own);
      if (count > 0) continue;  // TransformerLens names go to the first call only
      for (auto tl : output_hook_names(role)) {
        tl.group = group;
        add_point(h, tl);
      }
      calls.emplace_back(role, h);
    }
    if (count > 0) return;
    if (role.kind == Role::Mlp) out_.blocks[role.layer] = true;
    if (role.kind == Role::PosEmbed) out_.pos_embed_path = path;
  }

  // The tensor elements of a module's tuple output, as values of the graph: the TupleConstruct's
  // inputs when the callee builds the tuple (scripted and traced modules both do), else the outputs
  // of a new TupleUnpack put back into a rebuilt tuple (so that hooks on them reach the users).
  static std::vector<Value*> tuple_tensors(Value* out) {
    auto tt = out->type()->cast<c10::TupleType>();
    if (!tt) return {};
    std::vector<Value*> elems;
    Node* n = out->node();
    if (n->kind() == c10::prim::TupleConstruct) {
      // Unpacks and constant indexes of the tuple read the construct's inputs directly, so that the
      // caller's graph uses the hooked values (and node patterns see through the tuple).
      for (const auto& use : std::vector<torch::jit::Use>(out->uses())) {
        Node* u = use.user;
        if (u->kind() == c10::prim::TupleUnpack) {
          for (size_t i = 0; i < u->outputs().size(); ++i) u->output(i)->replaceAllUsesWith(n->input(i));
        } else if (u->kind() == c10::prim::TupleIndex) {
          if (auto i = torch::jit::toIValue(u->input(1)); i && i->isInt() && i->toInt() >= 0 &&
                                                            static_cast<size_t>(i->toInt()) < n->inputs().size())
            u->output()->replaceAllUsesWith(n->input(static_cast<size_t>(i->toInt())));
        }
      }
      elems.assign(n->inputs().begin(), n->inputs().end());
    } else {
      Graph* g = out->owningGraph();
      torch::jit::WithInsertPoint guard(n->next());
      Node* unpack = g->insertNode(g->createTupleUnpack(out));
      elems.assign(unpack->outputs().begin(), unpack->outputs().end());
      Node* rebuilt = g->insertNode(g->createTuple(elems));
      out->replaceAllUsesWith(rebuilt->output());
      unpack->replaceInput(0, out);
    }
    std::vector<Value*> tensors;
    for (Value* e : elems)
      if (is_tensor(e)) tensors.push_back(e);
    return tensors;
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
  // With `perm`, also the permutation P of the walk: start = result.permute(P) (P: 4-D, composed).
  static Value* back_through_layout(Value* v, std::vector<int64_t>* perm = nullptr) {
    if (perm) *perm = {0, 1, 2, 3};
    for (;;) {
      Node* n = v->node();
      if (kind_in(n, {"aten::transpose", "aten::permute"})) {
        if (perm && !compose_layout(n, *perm)) perm->clear(), perm = nullptr;
        v = n->input(0);
      } else if (kind_in(n, {"aten::contiguous", "aten::clone", "aten::to"}) || n->kind() == hook_symbol()) {
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

  // out = in.permute(r) for a transpose/permute node n with constant dims on a 4-D tensor; the
  // walk's P (start = out.permute(P)) becomes P[i] <- r[P[i]]. False if the dims are not constant.
  static bool compose_layout(Node* n, std::vector<int64_t>& P) {
    std::vector<int64_t> r = {0, 1, 2, 3};
    auto dim = [](int64_t d) { return d < 0 ? d + 4 : d; };
    if (kind_in(n, {"aten::transpose"})) {
      auto a = torch::jit::toIValue(n->input(1)), b = torch::jit::toIValue(n->input(2));
      if (!a || !b || !a->isInt() || !b->isInt()) return false;
      int64_t x = dim(a->toInt()), y = dim(b->toInt());
      if (x < 0 || x > 3 || y < 0 || y > 3) return false;
      std::swap(r[x], r[y]);
    } else {
      auto d = torch::jit::toIValue(n->input(1));
      if (!d || !d->isIntList() || d->toIntVector().size() != 4) return false;
      auto dims = d->toIntVector();
      for (size_t i = 0; i < 4; ++i) r[i] = dim(dims[i]);
    }
    for (auto& p : P) p = r[static_cast<size_t>(p)];
    return true;
  }

  static std::vector<int64_t> inverse(const std::vector<int64_t>& P) {
    std::vector<int64_t> inv(P.size());
    for (size_t i = 0; i < P.size(); ++i) inv[static_cast<size_t>(P[i])] = static_cast<int64_t>(i);
    return inv;
  }

  // Back from grouped-query attention's repeated keys/values to the n_kv_heads tensor: Hugging
  // Face's repeat_kv (x[:, :, None].expand(...).reshape(...)) or repeat_interleave.
  static Value* back_through_repeat(Value* v) {
    Node* n = v->node();
    if (kind_in(n, {"aten::repeat_interleave"})) return n->input(0);
    if (!kind_in(n, {"aten::reshape", "aten::view"}) || !kind_in(n->input(0)->node(), {"aten::expand"})) return v;
    Value* x = n->input(0)->node()->input(0);
    bool unsqueezed = false;
    while (kind_in(x->node(), {"aten::slice", "aten::unsqueeze"})) {
      unsqueezed = unsqueezed || kind_in(x->node(), {"aten::unsqueeze"});
      x = x->node()->input(0);
    }
    return unsqueezed ? x : v;
  }

  // ---- rotary: a value computed from one tensor along reconverging paths ---------------------------
  using ValueSet = std::unordered_set<const Value*>;

  static bool carries_tensors(const Value* v) {
    const auto& t = v->type();
    if (t->kind() == c10::TypeKind::TensorType) return true;
    if (auto l = t->cast<c10::ListType>()) return l->getElementType()->kind() == c10::TypeKind::TensorType;
    if (auto tu = t->cast<c10::TupleType>())
      for (const auto& e : tu->elements())
        if (e->kind() == c10::TypeKind::TensorType) return true;
    return false;
  }

  // Values of the module's graph that depend on its input through tensors (sizes and dtypes read
  // from it do not count: every view of q would otherwise depend on it twice).
  static ValueSet input_dependent(Graph& g) {
    ValueSet dep;
    if (g.inputs().size() >= 2) dep.insert(g.inputs()[1]);
    for (Node* n : g.block()->nodes()) {
      bool d = std::any_of(n->inputs().begin(), n->inputs().end(), [&](Value* v) { return dep.count(v) > 0; });
      if (!d) continue;
      for (Value* o : n->outputs())
        if (carries_tensors(o)) dep.insert(o);
    }
    return dep;
  }

  // The tensors that every input-dependent path into `target` passes through, nearest first, with
  // whether those paths reconverge between it and the target (some node on the way takes two of
  // them: q*cos + rotate_half(q)*sin, a partial rotary's cat).
  static std::vector<std::pair<Value*, bool>> dominators(Value* target, const ValueSet& dep) {
    ValueSet anc;
    std::vector<Value*> order, stack{target};
    while (!stack.empty()) {
      Value* v = stack.back();
      stack.pop_back();
      for (Value* in : v->node()->inputs())
        if (dep.count(in) && anc.insert(in).second) {
          stack.push_back(in);
          order.push_back(in);
        }
    }
    auto is_param = [](const Value* v) { return v->node()->kind() == c10::prim::Param; };
    std::stable_sort(order.begin(), order.end(), [&](Value* a, Value* b) {  // latest first, graph inputs last
      if (is_param(a) != is_param(b)) return is_param(b);
      return !is_param(a) && b->node()->isBefore(a->node());
    });
    auto on_path = [&](const Value* o) { return o == target || anc.count(o) > 0; };
    auto reaches = [&](Value* from, const Value* avoid) {  // target reachable from `from` within anc
      ValueSet seen{from};
      std::vector<Value*> st{from};
      while (!st.empty()) {
        Value* v = st.back();
        st.pop_back();
        for (const auto& u : v->uses())
          for (Value* o : u.user->outputs()) {
            if (o == target) return true;
            if (o != avoid && anc.count(o) && seen.insert(o).second) st.push_back(o);
          }
      }
      return false;
    };
    auto reconverges = [&](Value* c) {  // a node below c, on the way to the target, takes two values from c
      ValueSet below{c};
      std::vector<Value*> st{c};
      bool found = false;
      while (!st.empty()) {
        Value* v = st.back();
        st.pop_back();
        for (const auto& u : v->uses()) {
          Node* n = u.user;
          if (std::none_of(n->outputs().begin(), n->outputs().end(), on_path)) continue;
          int ins = 0;
          for (Value* i : n->inputs()) ins += below.count(i) ? 1 : 0;
          if (ins >= 2) found = true;
          for (Value* o : n->outputs())
            if (on_path(o) && below.insert(o).second) st.push_back(o);
        }
      }
      return found;
    };
    std::vector<Value*> roots;
    for (Value* v : order)
      if (std::none_of(v->node()->inputs().begin(), v->node()->inputs().end(), [&](Value* i) { return anc.count(i) > 0; }))
        roots.push_back(v);
    std::vector<std::pair<Value*, bool>> out;
    for (Value* c : order) {
      if (!is_tensor(c)) continue;
      bool bypassed = false;
      for (Value* r : roots)
        if (r != c && reaches(r, c)) bypassed = true;
      if (!bypassed) out.emplace_back(c, reconverges(c));
    }
    return out;
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
    Rotary rq, rk;
    if (auto ops = qk ? product_operands(qk) : std::vector<Value*>{}; ops.size() == 2) {
      const ValueSet dep = input_dependent(g);
      rq = split_rotary(back_through_layout(back_through_repeat(back_through_layout(ops[0]))), dep);
      rk = split_rotary(back_through_layout(back_through_repeat(back_through_layout(ops[1]))), dep);
      q = rq.pre;
      k = rk.pre;
    } else {
      fail({PointKind::Q, PointKind::K}, fmt::format("no matmul/einsum of two operands found before blocks.{}.attn's softmax", L));
    }
    if (auto ops = pv ? product_operands(pv) : std::vector<Value*>{}; ops.size() == 2) {
      v = back_through_layout(back_through_repeat(back_through_layout(ops[0] == pattern_side ? ops[1] : ops[0])));
      z = forward_through_layout(pv->output());
    } else {
      fail({PointKind::V, PointKind::Z}, fmt::format("no matmul/einsum of two operands found after blocks.{}.attn's softmax", L));
    }
    if (rq.rot || rk.rot) {
      rotary_ = true;
      for (PointKind kind : {PointKind::RotQ, PointKind::RotK}) out_.expected.push_back(point_name(kind, L));
      if (!rq.rot || !rk.rot)
        out_.failures[point_name(rq.rot ? PointKind::RotK : PointKind::RotQ, L)] =
            fmt::format("blocks.{}.attn rotates only one of q and k", L);
    }
    if (rq.rot) add_point(rq.rot, tag(PointKind::RotQ), rq.view);
    if (rk.rot) add_point(rk.rot, tag(PointKind::RotK), rk.view);
    if (q) add_point(q, tag(PointKind::Q));
    if (k) add_point(k, tag(PointKind::K));
    if (v) add_point(v, tag(PointKind::V));
    add_point(scores, tag(PointKind::AttnScores));
    add_point(pattern, tag(PointKind::Pattern));
    if (z) add_point(z, tag(PointKind::Z));
  }

  struct Rotary {
    Value* pre = nullptr;  // hook_q / hook_k: before rotary, TransformerLens's layout
    Value* rot = nullptr;  // hook_rot_q / hook_rot_k (nullptr: no rotary)
    PointView view;        // how hooks see `rot` in TransformerLens's layout
  };

  // `v` (the score product's operand, walked back) is rotated q or k when it is computed from one
  // tensor D along reconverging paths; then hook_q is D walked back through layout ops, and the
  // rotated value (in D's layout) is seen through the inverse of that walk.
  static Rotary split_rotary(Value* v, const ValueSet& dep) {
    Rotary r;
    r.pre = v;
    Value* d = nullptr;
    for (auto [c, reconverges] : dominators(v, dep)) {
      if (c->node()->kind() == c10::prim::Param) break;  // up to the module's input: no rotary here
      if (reconverges) {
        d = c;
        break;
      }
    }
    if (!d) return r;
    std::vector<int64_t> P;
    r.pre = back_through_layout(d, &P);
    r.rot = v;
    if (!P.empty() && P != std::vector<int64_t>{0, 1, 2, 3}) r.view.perm = inverse(P);
    return r;
  }

  // TransformerLens's hook_scale: sqrt(mean(x^2) [- mean^2] + eps), [batch, pos, 1]. A norm that
  // multiplies by rsqrt(...) (Llama, Gemma) is seen through 1/x.
  void scale_point(Graph& g, const std::string& path, const Role& role) {
    const PointKind kind = role.kind == Role::Ln1   ? PointKind::Ln1Scale
                           : role.kind == Role::Ln2 ? PointKind::Ln2Scale
                                                    : PointKind::LnFinalScale;
    const int layer = role.kind == Role::LnFinal ? -1 : role.layer;
    const std::string name = point_name(kind, layer);
    out_.expected.push_back(name);
    std::vector<Node*> sqrt, rsqrt, fused;
    find_nodes(g.block(), {"aten::sqrt"}, sqrt);
    find_nodes(g.block(), {"aten::rsqrt"}, rsqrt);
    find_nodes(g.block(), {"aten::layer_norm", "aten::native_layer_norm", "aten::group_norm"}, fused);
    if (sqrt.size() + rsqrt.size() == 1) {
      PointView view;
      view.reciprocal = !rsqrt.empty();
      add_point(sqrt.empty() ? rsqrt[0]->output() : sqrt[0]->output(), {name, kind, layer}, view);
    } else if (fused.size() == 1 && kind_in(fused[0], {"aten::layer_norm"})) {
      // nn.LayerNorm / F.layer_norm keep the scale inside: a read-only point computes it from the input
      auto eps = torch::jit::toIValue(fused[0]->input(4));
      if (!eps || !eps->isDouble()) {
        out_.failures[name] = fmt::format("{}: the fused layer_norm's eps is not a constant", path);
        return;
      }
      Graph* fg = fused[0]->owningGraph();
      torch::jit::WithInsertPoint guard(fused[0]->next());
      const auto id = static_cast<int64_t>(out_.points.size());
      Node* n = fg->insertNode(fg->create(hook_symbol(), {fused[0]->input(0), fg->insertConstant(id)}, 1));
      n->output()->setType(fused[0]->input(0)->type());
      PointView view;
      view.layer_norm_eps = eps->toDouble();
      out_.points.push_back({{{name, kind, layer}}, false, view});
    } else if (!fused.empty()) {
      out_.failures[name] = fmt::format("{} uses the fused {} op, which keeps the scale inside", path,
                                        fused[0]->kind().toUnqualString());
    } else {
      out_.failures[name] = fmt::format("{} has {} sqrt/rsqrt nodes; the scale needs exactly one", path,
                                        sqrt.size() + rsqrt.size());
    }
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
    // Gated (SwiGLU, GeGLU): act(gate) * up. hook_pre is the gate's input to the activation,
    // hook_pre_linear the ungated branch, hook_post the product (as TransformerLens's GatedMLP).
    Value* a = hooked(act[0]->output());
    const ValueSet dep = input_dependent(g);
    for (const auto& use : a->uses()) {
      if (!kind_in(use.user, {"aten::mul"}) || use.user->inputs().size() != 2) continue;
      Value* other = use.user->input(1 - use.offset);
      if (!dep.count(other)) continue;
      out_.expected.push_back(point_name(PointKind::MlpPreLinear, L));
      add_point(act[0]->input(0), {point_name(PointKind::MlpPre, L), PointKind::MlpPre, L});
      add_point(other, {point_name(PointKind::MlpPreLinear, L), PointKind::MlpPreLinear, L});
      add_point(use.user->output(), {point_name(PointKind::MlpPost, L), PointKind::MlpPost, L});
      return;
    }
    add_point(act[0]->input(0), {point_name(PointKind::MlpPre, L), PointKind::MlpPre, L});
    add_point(act[0]->output(), {point_name(PointKind::MlpPost, L), PointKind::MlpPost, L});
  }

  void resid_mid_point(int L, const std::vector<std::pair<Role, Value*>>& calls) {
    const std::string name = point_name(PointKind::ResidMid, L);
    std::vector<Value*> attn, mlp;  // the modules' outputs (several: candidates of a tuple output)
    for (const auto& [role, v] : calls) {
      if (role.kind == Role::Attn) attn.push_back(v);
      if (role.kind == Role::Mlp) mlp.push_back(v);
    }
    if (mlp.empty()) return;  // attention-only block: TransformerLens has no resid_mid either
    if (attn.empty()) {
      out_.failures[name] = fmt::format("blocks.{} calls no module mapped to blocks.{}.attn", L, L);
      return;
    }
    bool serial = false;
    for (Value* m : mlp)
      for (Value* a : attn) serial = serial || depends_on(m, a);
    if (!serial) {
      out_.failures[name] = fmt::format(
          "blocks.{} runs attention and MLP in parallel (x + attn(ln1(x)) + mlp(ln2(x))): no value is "
          "resid_pre + attn_out, as in TransformerLens's parallel_attn_mlp models", L);
      return;
    }
    for (Value* a : attn)
      for (const auto& use : a->uses()) {
        if (kind_in(use.user, {"aten::add"})) {
          add_point(use.user->output(), {name, PointKind::ResidMid, L});
          return;
        }
      }
    out_.failures[name] = fmt::format("blocks.{}.attn's output is not added to the residual stream", L);
  }

  static bool depends_on(Value* v, const Value* on) {
    std::unordered_set<const Value*> seen{v};
    std::vector<Value*> st{v};
    while (!st.empty()) {
      Value* x = st.back();
      st.pop_back();
      if (x == on) return true;
      for (Value* in : x->node()->inputs())
        if (seen.insert(in).second) st.push_back(in);
    }
    return false;
  }

 public:
  // After the walk: what the whole model tells about single points.
  void finish() {
    if (rotary_ && out_.pos_embed_path.empty())
      out_.failures[point_name(PointKind::PosEmbed)] =
          "the model has no positional embedding module: positions enter through rotary embeddings of q and k "
          "(blocks.L.attn.hook_rot_q / hook_rot_k)";
  }

 private:
  const torch::jit::Module& root_;
  bool folded_ = false;
  const NameMap& names_;
  Rewrite& out_;
  bool rotary_ = false;  // some attention module applies rotary embeddings
  std::unordered_map<std::string, int> call_count_;
};

}  // namespace

Rewrite rewrite_forward(const torch::jit::Module& module, const NameMap& names) {
  Rewrite out;
  torch::jit::Function* fn = module.type()->findMethod("forward");
  torch::jit::GraphFunction* gf = fn ? torch::jit::tryToGraphFunction(*fn) : nullptr;
  if (!gf) throw Error("the module has no TorchScript forward method to rewrite");
  out.graph = gf->graph()->copy();
  Rewriter rw(module, names, out);
  rw.instrument(out.graph, "");
  rw.finish();
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
  EdgePoints(Rewrite& rw, int64_t n_heads, int64_t n_kv_heads) : rw_(rw), g_(*rw.graph), H_(n_heads), KV_(n_kv_heads) {
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
      if (kind != PointKind::Q && KV_ != H_) {
        rw_.failures[name] = fmt::format(
            "grouped-query attention: {} key/value heads serve {} query heads, so a key or value input per head "
            "is not defined; patch {} (per key/value head) instead", KV_, H_, point_name(kind, L));
        continue;
      }
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
    if (!mid && out) {
      if (auto f = rw_.failures.find(point_name(PointKind::ResidMid, L));
          f != rw_.failures.end() && f->second.find("parallel") != std::string::npos) {
        parallel_mlp_in(L, out);
        return;
      }
    }
    if (!mid || !out) {
      rw_.failures[name] = fmt::format("needs {} and {}", point_name(PointKind::ResidMid, L), point_name(PointKind::MlpOut, L));
      return;
    }
    Value* m = mid->output();
    // resid_mid as the skip connection reads it: m itself, or m through value-preserving ops (a traced
    // norm's x.float() on a float x is recorded as the value the residual add reads)
    std::unordered_set<Value*> same{m};
    for (std::vector<Value*> st{m}; !st.empty();) {
      Value* v = st.back();
      st.pop_back();
      for (const auto& u : v->uses())
        if ((u.user->kind() == hook_symbol() || (kind_in(u.user, {"aten::to", "aten::contiguous"}) && u.offset == 0)) &&
            u.user->owningBlock() == g_.block() && same.insert(u.user->output()).second)
          st.push_back(u.user->output());
    }
    Node* skip = nullptr;
    for (Value* v : same)
      for (const auto& u : std::vector<torch::jit::Use>(v->uses()))
        if (u.user->kind() == c10::aten::add && u.user->owningBlock() == g_.block() &&
            (u.user->input(0) == out->output() || u.user->input(1) == out->output())) {
          skip = u.user;
          skip->replaceInput(u.offset, m);  // the skip reads resid_mid itself (same value)
        }
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

  // A parallel block's MLP reads the block input: hook_mlp_in is resid_pre as the MLP's path sees it
  // (the uses of resid_pre on the way to the MLP output and not to the attention output).
  void parallel_mlp_in(int L, Node* mlp_out) {
    const std::string name = point_name(PointKind::MlpIn, L);
    Node* pre = hook_of(PointKind::ResidPre, L);
    Node* attn_out = hook_of(PointKind::AttnOut, L);
    if (!pre || !attn_out) {
      rw_.failures[name] = fmt::format("needs {} and {}", point_name(PointKind::ResidPre, L), point_name(PointKind::AttnOut, L));
      return;
    }
    std::string why;
    Value* x = pre->output();
    auto to_mlp = slice(x, mlp_out->input(0), &why);
    auto to_attn = slice(x, attn_out->input(0), &why);
    std::unordered_set<Node*> mlp_path(to_mlp.begin(), to_mlp.end()), attn_path(to_attn.begin(), to_attn.end());
    std::vector<torch::jit::Use> uses;
    for (const auto& u : x->uses())
      if (mlp_path.count(u.user) && !attn_path.count(u.user)) uses.push_back(u);
    if (uses.empty()) {
      rw_.failures[name] = fmt::format("blocks.{}'s MLP does not read {} in the graph", L, point_name(PointKind::ResidPre, L));
      return;
    }
    torch::jit::WithInsertPoint guard(pre->next());
    Value* in = new_point(x, PointKind::MlpIn, L);
    for (const auto& u : uses) u.user->replaceInput(u.offset, in);
  }

  Rewrite& rw_;
  Graph& g_;
  int64_t H_, KV_;
  std::unordered_map<int64_t, Node*> hook_node_;
};

}  // namespace

void add_edge_points(Rewrite& rw, int n_layers, int64_t n_heads, int64_t n_kv_heads) {
  EdgePoints ep(rw, n_heads, n_kv_heads);
  for (int L = 0; L < n_layers; ++L) ep.layer(L);
  torch::jit::EliminateDeadCode(rw.graph);
}

}  // namespace interp::detail
