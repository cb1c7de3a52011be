// HookedModel against goldens written by models/make_goldens.py (a plain-PyTorch functional forward
// that shares no code with the modules or with interp), for scripted, traced and HF-named exports.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "interp/error.h"
#include "interp/hooks.h"
#include "interp/safetensors.h"
#include "test_util.h"

using interp::HookedModel;
using interp::test::close;
using interp::test::fixture;

namespace {

using Fixture = interp::test::ModelFixture;
using interp::test::load;

const Fixture kFixtures[] = {
    {"tiny_script.pt", "tiny.golden.safetensors", ""},
    {"tiny_trace.pt", "tiny.golden.safetensors", ""},
    {"tiny_attn_only_script.pt", "tiny_attn_only.golden.safetensors", ""},
    {"tiny_attn_only_trace.pt", "tiny_attn_only.golden.safetensors", ""},
    {"tiny_hf_script.pt", "tiny_hf.golden.safetensors", "tiny_hf_script.pt.names.json"},
    {"tiny_hf_trace.pt", "tiny_hf.golden.safetensors", "tiny_hf_trace.pt.names.json"},
    // model families (models/families.py, goldens by models/make_family_goldens.py): no name map, the
    // shipped one is detected from the module names
    {"tiny_llama_script.pt", "tiny_llama.golden.safetensors", ""},
    {"tiny_llama_trace.pt", "tiny_llama.golden.safetensors", ""},
    {"tiny_neox_script.pt", "tiny_neox.golden.safetensors", ""},
    {"tiny_neox_trace.pt", "tiny_neox.golden.safetensors", ""},
    {"tiny_gemma_script.pt", "tiny_gemma.golden.safetensors", ""},
    {"tiny_gemma_trace.pt", "tiny_gemma.golden.safetensors", ""},
    // nanoGPT: forward(idx, targets=None) -> (logits, loss), the last position only without targets
    {"tiny_nanogpt_script.pt", "tiny_nanogpt.golden.safetensors", ""},
    {"tiny_nanogpt_trace.pt", "tiny_nanogpt.golden.safetensors", ""},
};

// The TransformerLens points a fixture lacks: the golden's "expected_missing" (families); none for
// the others.
std::vector<std::string> expected_missing_list(const interp::SafetensorsFile& golden) {
  auto it = golden.metadata.find("expected_missing");
  if (it == golden.metadata.end()) return {};
  return nlohmann::json::parse(it->second).get<std::vector<std::string>>();
}
bool expected_missing(const interp::SafetensorsFile& golden, const interp::MissingPoint& m) {
  auto list = expected_missing_list(golden);
  return std::find(list.begin(), list.end(), m.name) != list.end();
}

class Golden : public ::testing::TestWithParam<Fixture> {
 protected:
  void SetUp() override {
    model_ = std::make_unique<HookedModel>(load(GetParam()));
    golden_ = interp::safetensors_load(fixture(GetParam().golden));
  }
  const at::Tensor& g(const std::string& name) { return golden_.tensors.at(name); }
  std::unique_ptr<HookedModel> model_;
  interp::SafetensorsFile golden_;
};

TEST_P(Golden, EveryHookPointMatchesReference) {
  auto [logits, cache] = model_->run_with_cache(g("tokens"));
  EXPECT_TRUE(close(logits, g("logits"), 1e-5, "logits"));
  int compared = 0;
  for (const auto& [key, want] : golden_.tensors) {
    if (key.rfind("act.", 0) != 0) continue;
    std::string name = key.substr(4);
    ASSERT_TRUE(cache.contains(name)) << name << " was not captured";
    auto r = close(cache[name], want, 1e-5, name);
    EXPECT_TRUE(r);
    std::printf("  %s\n", r.message());
    ++compared;
  }
  EXPECT_GE(compared, 23);
  // every TransformerLens point of the model was placed, except those the family does not have
  size_t n_expected = 0;
  for (const auto& m : model_->missing_points()) {
    if (expected_missing(golden_, m)) {
      std::printf("  missing as expected: %s: %s\n", m.name.c_str(), m.reason.c_str());
      ++n_expected;
    } else {
      ADD_FAILURE() << "not placed: " << m.name << ": " << m.reason;
    }
  }
  EXPECT_EQ(n_expected, expected_missing_list(golden_).size());
}

// Each family point replaced (times 0.5 at one position) equals the reference's hand-patched run:
// rotary q/k, GQA keys/values, the gated MLP's branches, a norm's scale seen as 1/rsqrt.
TEST_P(Golden, ReplacedFamilyPointsMatchHandPatchedReference) {
  auto it = golden_.metadata.find("half_pos");
  if (it == golden_.metadata.end()) GTEST_SKIP() << "not a family fixture (see ZeroOneHeadOfZ for these)";
  const int64_t pos = std::stoll(it->second);
  int n = 0;
  for (const auto& [key, want] : golden_.tensors) {
    if (key.rfind("patch.", 0) != 0) continue;
    const std::string point = key.substr(6, key.size() - 6 - std::string(".logits").size());
    const int axis = model_->hook_point(point).pos_axis;
    at::Tensor got = model_->run_with_hooks(g("tokens"), {{point, [&](at::Tensor& x, const std::string&) {
                                                             x = x.clone();
                                                             x.select(axis, pos).mul_(0.5);
                                                           }}});
    auto r = close(got, want, 1e-5, point + " halved at position " + std::to_string(pos));
    EXPECT_TRUE(r);
    std::printf("  %s\n", r.message());
    EXPECT_GT(interp::test::max_abs_diff(got, g("logits")), 1e-3) << point << ": the patch changed nothing";
    ++n;
  }
  EXPECT_GE(n, 3);
}

// Each point's structure is what its name says, on every export (scripted, traced, name-mapped):
// the kind and layer rebuild the name, and the axes match TransformerLens's layouts.
TEST_P(Golden, PointStructureMatchesTheName) {
  using interp::PointKind;
  const auto& pts = model_->hook_points();
  int tl = 0;
  for (size_t i = 0; i < pts.size(); ++i) {
    const auto& p = pts[i];
    EXPECT_EQ(p.order, static_cast<int64_t>(i)) << p.name;
    if (p.kind == PointKind::Module) continue;
    ++tl;
    const bool final_norm = p.kind == PointKind::LnFinal || p.kind == PointKind::LnFinalScale;
    int layer = final_norm ? -1 : p.layer;
    EXPECT_EQ(interp::point_name(p.kind, layer), p.name);
    EXPECT_EQ(interp::act_name(interp::kind_name(p.kind), layer < 0 ? std::nullopt : std::optional<int>(layer)), p.name);
    if (final_norm) EXPECT_EQ(p.layer, model_->info().n_layers);
    bool heads = p.kind == PointKind::Q || p.kind == PointKind::K || p.kind == PointKind::V || p.kind == PointKind::Z ||
                 p.kind == PointKind::RotQ || p.kind == PointKind::RotK;
    bool pattern = p.kind == PointKind::Pattern || p.kind == PointKind::AttnScores;
    EXPECT_EQ(p.head_axis, heads ? 2 : pattern ? 1 : -1) << p.name;
    EXPECT_EQ(p.key_axis, pattern ? 3 : -1) << p.name;
    // nanoGPT's hook_pos_embed is wpe(arange(T)): [pos, d_model]
    if (p.kind != PointKind::Embed) EXPECT_EQ(p.pos_axis, pattern ? 2 : p.shape.size() == 2 ? 0 : 1) << p.name;
    EXPECT_EQ(p.shape[static_cast<size_t>(p.pos_axis < 0 ? 1 : p.pos_axis)], interp::HookPoint::kPos) << p.name;
  }
  EXPECT_GE(tl, 23);
}

// The opt-in edge points (hook_q/k/v_input, attn.hook_result, hook_mlp_in) against
// models/make_edge_goldens.py, which sums each receiver's input from its senders in plain PyTorch.
TEST_P(Golden, EdgePointsMatchReference) {
  std::string golden = "edge_" + GetParam().golden;
  HookedModel m = load(GetParam(), /*edge_points=*/true);
  if (golden_.metadata.count("expected_missing")) {
    // families: the edge graph computes the same logits and points; with grouped-query attention the
    // key/value inputs per head are not defined and say so
    auto [logits, cache] = m.run_with_cache(g("tokens"));
    EXPECT_TRUE(close(logits, g("logits"), 1e-5, "logits with edge points"));
    for (const auto& [key, want] : golden_.tensors)
      if (key.rfind("act.", 0) == 0) EXPECT_TRUE(close(cache[key.substr(4)], want, 1e-5, key));
    const bool gqa = m.info().n_kv_heads != m.info().n_heads;
    for (const auto& mp : m.missing_points()) {
      if (expected_missing(golden_, mp)) continue;
      const bool kv_input = mp.name.find("hook_k_input") != std::string::npos || mp.name.find("hook_v_input") != std::string::npos;
      EXPECT_TRUE(gqa && kv_input && mp.reason.find("grouped-query") != std::string::npos) << mp.name << ": " << mp.reason;
    }
    EXPECT_TRUE(cache.contains("blocks.1.hook_q_input"));
    EXPECT_TRUE(cache.contains("blocks.1.attn.hook_result"));
    // the heads' results sum to hook_attn_out up to one constant vector (the output bias; NeoX has one)
    at::Tensor rest = g("act.blocks.1.hook_attn_out") - cache["blocks.1.attn.hook_result"].sum(2);
    EXPECT_LE(interp::test::max_abs_diff(rest, rest.select(0, 0).select(0, 0).expand_as(rest)), 1e-5);
    return;
  }
  auto eg = interp::safetensors_load(fixture(golden));
  EXPECT_TRUE(m.info().edge_points);
  auto [logits, cache] = m.run_with_cache(eg.tensors.at("tokens"));
  EXPECT_TRUE(close(logits, eg.tensors.at("logits"), 1e-5, "logits"));
  int compared = 0;
  for (const auto& [key, want] : eg.tensors) {
    if (key.rfind("act.", 0) != 0) continue;
    std::string name = key.substr(4);
    ASSERT_TRUE(cache.contains(name)) << name << " was not captured";
    auto r = close(cache[name], want, 1e-5, name);
    EXPECT_TRUE(r);
    std::printf("  %s\n", r.message());
    const auto& p = m.hook_point(name);
    EXPECT_EQ(p.pos_axis, 1);
    EXPECT_EQ(p.head_axis, want.dim() == 4 ? 2 : -1) << name;
    ++compared;
  }
  EXPECT_GE(compared, 8);
  for (const auto& mp : m.missing_points())
    if (!expected_missing(golden_, mp)) ADD_FAILURE() << "not placed: " << mp.name << ": " << mp.reason;
  // every other point is still there, with the values of the model loaded without edge points
  auto [plain_logits, plain] = model_->run_with_cache(eg.tensors.at("tokens"));
  for (const auto& name : plain.names()) EXPECT_TRUE(close(cache[name], plain[name], 1e-5, name));

  // Head 2 of layer 1 reads its query from the corrupted run's input; nothing else changes.
  auto [c_logits, c_cache] = m.run_with_cache(eg.tensors.at("corrupted_tokens"), interp::names_filter("hook_q_input"));
  at::Tensor other = c_cache["blocks.1.hook_q_input"];
  at::Tensor patched = m.run_with_hooks(eg.tensors.at("tokens"), {{"blocks.1.hook_q_input",
      [&](at::Tensor& x, const std::string&) { x = x.clone(); x.select(2, 2).copy_(other.select(2, 2)); }}});
  EXPECT_TRUE(close(patched, eg.tensors.at("all_into.logits"), 1e-5, "q input of head 1.2 from the corrupted run"));
}

TEST_P(Golden, PatchOnePositionOfResidPostFromAnotherRun) {
  const std::string hook = "blocks.0.hook_resid_post";
  const int64_t pos = std::stoll(golden_.metadata.at("patch_pos"));
  auto [src_logits, src] = model_->run_with_cache(g("source_tokens"), interp::names_filter({hook}));
  at::Tensor source = src[hook];
  at::Tensor patched = model_->run_with_hooks(g("tokens"), {{hook, [&](at::Tensor& x, const std::string&) {
                                                               x = x.clone();
                                                               x.select(1, pos).copy_(source.select(1, pos));
                                                             }}});
  EXPECT_TRUE(close(patched, g("patch_resid.logits"), 1e-5, "patched logits"));
  EXPECT_GT(interp::test::max_abs_diff(patched, g("logits")), 1e-3) << "the patch changed nothing";
}

TEST_P(Golden, StartAtAResidualPointSkipsWhatComesBefore) {
  // Starting at a residual point with the golden value there gives the golden logits; hooks before
  // the point do not run (that computation is gone), hooks on and after it do.
  const int L = model_->info().n_layers - 1;
  for (const std::string point : {std::string("blocks.0.hook_resid_pre"), interp::act_name("resid_pre", L),
                                  interp::act_name("resid_post", L)}) {
    interp::RunOptions o;
    o.start_at = point;
    o.start_value = g("act." + point);
    int before = 0, at_point = 0, after = 0;
    at::Tensor logits = model_->run_with_hooks(
        g("tokens"), {{"hook_embed", [&](at::Tensor&, const std::string&) { ++before; }},
                      {point, [&](at::Tensor&, const std::string&) { ++at_point; }},
                      {"ln_final.hook_normalized", [&](at::Tensor&, const std::string&) { ++after; }}},
        o);
    EXPECT_TRUE(close(logits, g("logits"), 1e-5, "logits started at " + point));
    EXPECT_EQ(before, 0) << point;
    EXPECT_EQ(at_point, 1) << point;
    EXPECT_EQ(after, 1) << point;
    // A different value at the start changes the result: the value is really used.
    o.start_value = at::zeros_like(o.start_value);
    EXPECT_GT(interp::test::max_abs_diff(model_->forward(g("tokens"), o), g("logits")), 1e-3) << point;
  }
  interp::RunOptions bad;
  bad.start_at = "blocks.0.hook_resid_pre";
  EXPECT_THROW(model_->forward(g("tokens"), bad), interp::Error);
}

TEST_P(Golden, ZeroOneHeadOfZ) {
  const std::string hook = golden_.metadata.at("zero_head_hook");
  const int64_t head = std::stoll(golden_.metadata.at("zero_head"));
  at::Tensor patched = model_->run_with_hooks(g("tokens"), {{hook, [&](at::Tensor& z, const std::string&) {
                                                               z = z.clone();
                                                               z.select(2, head).zero_();
                                                             }}});
  EXPECT_TRUE(close(patched, g("zero_head.logits"), 1e-5, "zero-head logits"));
}

TEST_P(Golden, InactiveHooksAreBitIdentical) {
  at::Tensor tokens = g("tokens");
  at::Tensor plain = model_->forward_unhooked(tokens);
  EXPECT_TRUE(at::equal(model_->forward(tokens), plain));
  {
    auto handle = model_->add_hook("blocks.0.hook_resid_pre", [](at::Tensor&, const std::string&) {});
    EXPECT_TRUE(at::equal(model_->forward(tokens), plain)) << "a read-only hook changed the logits";
  }
  EXPECT_TRUE(at::equal(model_->forward(tokens), plain)) << "after the hook was removed";
  auto [logits, cache] = model_->run_with_cache(tokens);
  EXPECT_TRUE(at::equal(logits, plain)) << "caching every point changed the logits";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Golden, ::testing::ValuesIn(kFixtures));

// ---------------------------------------------------------------------------------------------

class Tiny : public ::testing::Test {
 protected:
  Tiny() : model(HookedModel::load(fixture("tiny_script.pt"))) {
    golden = interp::safetensors_load(fixture("tiny.golden.safetensors"));
    tokens = golden.tensors.at("tokens");
  }
  HookedModel model;
  interp::SafetensorsFile golden;
  at::Tensor tokens;
};

TEST_F(Tiny, InfoFromProbe) {
  const auto& i = model.info();
  EXPECT_EQ(i.n_layers, 2);
  EXPECT_EQ(i.d_model, 32);
  EXPECT_EQ(i.d_vocab, 50);
  EXPECT_EQ(i.n_ctx, 16);
  EXPECT_EQ(i.n_heads, 4);
  EXPECT_EQ(i.d_head, 8);
  EXPECT_EQ(model.hook_point("blocks.0.attn.hook_pattern").shape_str(), "[batch, 4, pos, pos]");
  EXPECT_EQ(model.hook_point("blocks.1.mlp.hook_post").shape_str(), "[batch, pos, 64]");
  EXPECT_EQ(model.hook_point("blocks.0.attn").name, "blocks.0.hook_attn_out");  // module path is an alias
}

TEST_F(Tiny, CacheLookupsAndFilters) {
  auto [logits, cache] = model.run_with_cache(tokens, interp::names_filter("resid_pre|hook_attn_out"));
  EXPECT_EQ(cache.size(), 4u);  // 2 resid_pre + 2 attn_out
  EXPECT_TRUE(at::equal(cache.get("resid_pre", -1), cache["blocks.1.hook_resid_pre"]));
  EXPECT_TRUE(at::equal(cache.get("resid_pre", 0), cache["blocks.0.hook_resid_pre"]));
  EXPECT_TRUE(at::equal(cache["blocks.0.attn"], cache["blocks.0.hook_attn_out"]));  // alias
  EXPECT_FALSE(cache.contains("blocks.0.hook_mlp_out"));
  EXPECT_THROW(cache["blocks.0.hook_mlp_out"], interp::Error);
  auto [l2, by_alias] = model.run_with_cache(tokens, interp::names_filter(std::vector<std::string>{"blocks.1.mlp"}));
  ASSERT_EQ(by_alias.size(), 1u);
  EXPECT_TRUE(interp::test::close(by_alias["blocks.1.hook_mlp_out"], golden.tensors.at("act.blocks.1.hook_mlp_out"),
                                  1e-5, "mlp_out by module path"));
}

TEST_F(Tiny, HooksRunInOrderAndSeeEarlierReplacements) {
  std::vector<int> order;
  at::Tensor seen;
  at::Tensor out = model.run_with_hooks(
      tokens, {{"blocks.0.hook_resid_pre",
                [&](at::Tensor& x, const std::string&) {
                  order.push_back(1);
                  x = x * 2;
                }},
               {"blocks.0.hook_resid_pre", [&](at::Tensor& x, const std::string&) {
                  order.push_back(2);
                  seen = x;
                }}});
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  EXPECT_TRUE(close(seen, golden.tensors.at("act.blocks.0.hook_resid_pre") * 2, 1e-6, "second hook's input"));
}

TEST_F(Tiny, HandleRemovesHookOnDestruction) {
  int calls = 0;
  {
    interp::HookHandle h = model.add_hook("blocks.1.attn.hook_pattern", [&](at::Tensor&, const std::string&) { ++calls; });
    model.forward(tokens);
    EXPECT_EQ(calls, 1);
    interp::HookHandle moved = std::move(h);
    model.forward(tokens);
    EXPECT_EQ(calls, 2);
  }
  model.forward(tokens);
  EXPECT_EQ(calls, 2);
  interp::HookHandle h2 = model.add_hook("blocks.1.attn.hook_pattern", [&](at::Tensor&, const std::string&) { ++calls; });
  h2.remove();
  model.forward(tokens);
  EXPECT_EQ(calls, 2);
}

TEST_F(Tiny, StopAtLayer) {
  interp::RunOptions o;
  o.stop_at_layer = 1;
  EXPECT_TRUE(close(model.forward(tokens, o), golden.tensors.at("act.blocks.1.hook_resid_pre"), 1e-5, "stop at 1"));
  o.stop_at_layer = -2;
  EXPECT_TRUE(close(model.forward(tokens, o), golden.tensors.at("act.blocks.0.hook_resid_pre"), 1e-5, "stop at -2"));
  o.stop_at_layer = 2;
  EXPECT_TRUE(close(model.forward(tokens, o), golden.tensors.at("act.blocks.1.hook_resid_post"), 1e-5, "stop at 2"));
  o.stop_at_layer = 3;
  EXPECT_THROW(model.forward(tokens, o), interp::Error);
  // after a stopped run, a full run is unaffected
  EXPECT_TRUE(close(model.forward(tokens), golden.tensors.at("logits"), 1e-5, "full run after stop"));
}

TEST_F(Tiny, NoGradByDefaultGradientsWhenAsked) {
  auto [logits, cache] = model.run_with_cache(tokens, interp::names_filter("hook_embed|hook_pos_embed"));
  EXPECT_FALSE(logits.requires_grad());
  interp::RunOptions o;
  o.grad = true;
  auto [glogits, gcache] = model.run_with_cache(tokens, interp::names_filter("hook_embed|hook_pos_embed"), o);
  ASSERT_TRUE(glogits.requires_grad());
  // resid_pre(0) = embed + pos_embed, so the gradient w.r.t. each is the same tensor.
  at::Tensor metric = glogits.select(1, 3).select(1, 7).sum();  // logit 7 at position 3
  auto grads = torch::autograd::grad({metric}, {gcache["hook_embed"], gcache["hook_pos_embed"]});
  EXPECT_TRUE(at::allclose(grads[0], grads[1], 0, 1e-7));
  // causal attention: positions 0..3 matter, positions 4..6 cannot
  EXPECT_GT(grads[0].slice(1, 0, 4).abs().sum().item<double>(), 0.0);
  EXPECT_EQ(grads[0].slice(1, 4).abs().sum().item<double>(), 0.0);
}

// ---------------------------------------------------------------------------------------------
// Error paths: each an interp::Error whose message says what and where.

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const interp::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("WRONG EXCEPTION TYPE: ") + e.what();
  }
  return "NO ERROR";
}

TEST(Errors, MissingFile) {
  auto msg = error_of([] { HookedModel::load("/nonexistent/model.pt"); });
  EXPECT_NE(msg.find("/nonexistent/model.pt: no such model file"), std::string::npos) << msg;
}

TEST(Errors, NotTorchScript) {
  std::string path = ::testing::TempDir() + "/garbage.pt";
  std::ofstream(path) << "this is not a zip archive";
  auto msg = error_of([&] { HookedModel::load(path); });
  EXPECT_NE(msg.find("not a TorchScript file"), std::string::npos) << msg;
  // a golden safetensors file is not a model either
  msg = error_of([] { HookedModel::load(fixture("tiny.golden.safetensors")); });
  EXPECT_NE(msg.find("not a TorchScript file"), std::string::npos) << msg;
}

TEST_F(Tiny, UnknownHookNameSuggestsClosest) {
  auto msg = error_of([&] { model.run_with_hooks(tokens, {{"blocks.0.hook_resid_pr", [](at::Tensor&, const std::string&) {}}}); });
  EXPECT_NE(msg.find("no hook point named 'blocks.0.hook_resid_pr'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("closest: blocks.0.hook_resid_pre"), std::string::npos) << msg;
  msg = error_of([&] { (void)model.add_hook("blocks.9.attn.hook_z", [](at::Tensor&, const std::string&) {}); });
  EXPECT_NE(msg.find("closest:"), std::string::npos) << msg;
}

TEST_F(Tiny, TokenOutsideVocabulary) {
  at::Tensor bad = tokens.clone();
  bad[0][2] = 50;
  auto msg = error_of([&] { model.forward(bad); });
  EXPECT_NE(msg.find("token id 50 is outside the vocabulary of 50"), std::string::npos) << msg;
  bad[0][2] = -1;
  msg = error_of([&] { model.forward(bad); });
  EXPECT_NE(msg.find("token id -1"), std::string::npos) << msg;
  msg = error_of([&] { model.forward(at::zeros({1, 17}, at::kLong)); });
  EXPECT_NE(msg.find("context of 16"), std::string::npos) << msg;
  msg = error_of([&] { model.forward(at::zeros({1, 3})); });
  EXPECT_NE(msg.find("integer ids"), std::string::npos) << msg;
}

TEST_F(Tiny, ReplacingHookWithWrongShape) {
  auto msg = error_of([&] {
    model.run_with_hooks(tokens, {{"blocks.0.attn.hook_z", [](at::Tensor& z, const std::string&) { z = z.sum(2); }}});
  });
  EXPECT_NE(msg.find("hook on 'blocks.0.attn.hook_z' replaced a [2, 7, 4, 8]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2, 7, 8]"), std::string::npos) << msg;
  msg = error_of([&] {
    model.run_with_hooks(tokens, {{"hook_embed", [](at::Tensor& x, const std::string&) { x = x.to(at::kDouble); }}});
  });
  EXPECT_NE(msg.find("must keep shape, dtype and device"), std::string::npos) << msg;
  // an exception thrown by a hook reaches the caller as it was thrown
  msg = error_of([&] {
    model.run_with_hooks(tokens, {{"hook_embed", [](at::Tensor&, const std::string&) { throw interp::Error("mine"); }}});
  });
  EXPECT_EQ(msg, "mine");
  EXPECT_TRUE(close(model.forward(tokens), golden.tensors.at("logits"), 1e-5, "model still works"));
}

TEST(Errors, BadNameMaps) {
  std::string path = ::testing::TempDir() + "/map.json";
  std::ofstream(path) << R"({"transformer.h.{L}": "blocks.{L}.attention"})";
  interp::LoadOptions o;
  o.name_map = path;
  auto msg = error_of([&] { HookedModel::load(fixture("tiny_hf_script.pt"), o); });
  EXPECT_NE(msg.find("'blocks.{L}.attention' is not a TransformerLens module name"), std::string::npos) << msg;
  std::ofstream(path) << "{not json";
  msg = error_of([&] { HookedModel::load(fixture("tiny_hf_script.pt"), o); });
  EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;
}

// A traced identity module (the planted model has no LayerNorm) keeps no output: the reason says so.
TEST(Errors, TracedIdentityModuleSaysWhy) {
  HookedModel m = HookedModel::load(fixture("planted_induction_trace.pt"));
  bool found = false;
  for (const auto& mp : m.missing_points())
    if (mp.name == "blocks.0.ln1.hook_normalized") {
      found = true;
      EXPECT_NE(mp.reason.find("returns its input unchanged"), std::string::npos) << mp.reason;
    }
  EXPECT_TRUE(found);
  EXPECT_TRUE(m.hook_points().size() > 10u);  // everything else is there
}

TEST(Errors, LogitsOfTheLastPositionOnlyAreRefused) {
  // nanoGPT traced without targets returns the last position's logits: nothing to pass targets to
  try {
    HookedModel::load(fixture("tiny_nanogpt_last_only_trace.pt"));
    ADD_FAILURE() << "no error";
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("forward returns logits for 1 of 3 positions; interp needs every position's "
                                         "logits"), std::string::npos) << e.what();
  }
  // scripted, forward(idx, targets=None): the tokens go in as targets and every position comes out
  HookedModel m = HookedModel::load(fixture("tiny_nanogpt_script.pt"));
  EXPECT_EQ(m.forward(at::zeros({2, 5}, at::kLong)).sizes(), (std::vector<int64_t>{2, 5, 50}));
}

TEST(Errors, AFailingForwardSaysWhyInOneLine) {
  // tiny_llama's causal mask holds 16 positions and it has no position embedding for interp to read
  // the context from: 21 tokens fail inside the model, and the error is the model's own, in one line
  HookedModel m = HookedModel::load(fixture("tiny_llama_trace.pt"));
  EXPECT_EQ(m.info().n_ctx, 0);
  try {
    m.forward(at::zeros({1, 21}, at::kLong));
    ADD_FAILURE() << "no error";
  } catch (const interp::Error& e) {
    std::string w = e.what();
    EXPECT_NE(w.find("must match the size of tensor b (21)"), std::string::npos) << w;
    EXPECT_NE(w.find("interp does not know this model's context length"), std::string::npos) << w;
    EXPECT_EQ(w.find("Traceback"), std::string::npos) << w;
    EXPECT_EQ(w.find('\n'), std::string::npos) << w;
  }
  // a point the graph holds in another layout cannot be a start point
  interp::RunOptions o;
  o.start_at = "blocks.0.attn.hook_rot_q";
  o.start_value = at::zeros({1, 3, 4, 8});
  try {
    m.forward(at::zeros({1, 3}, at::kLong), o);
    ADD_FAILURE() << "no error";
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("in another layout"), std::string::npos) << e.what();
  }
}

TEST(Errors, AFusedLayerNormsScaleIsReadOnly) {
  // nn.LayerNorm / F.layer_norm (HF GPT-2, NeoX, nanoGPT) compute their scale inside one op: interp
  // derives hook_scale from the norm's input for reading (checked against the goldens), and a hook
  // that replaces it is an error rather than a silent no-op
  HookedModel m = HookedModel::load(fixture("tiny_nanogpt_trace.pt"));
  at::Tensor tokens = at::zeros({1, 4}, at::kLong);
  try {
    m.run_with_hooks(tokens, {{"blocks.0.ln1.hook_scale", [](at::Tensor& s, const std::string&) { s = s * 2; }}});
    ADD_FAILURE() << "no error";
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("may read it, not replace it"), std::string::npos) << e.what();
  }
  double seen = 0;
  at::Tensor logits = m.run_with_hooks(tokens, {{"blocks.0.ln1.hook_scale", [&](at::Tensor& s, const std::string&) {
                                                  seen = s.sum().item<double>();
                                                }}});
  EXPECT_GT(seen, 0);
  EXPECT_TRUE(at::equal(logits, m.forward_unhooked(tokens)));
  // started after the norm's input, the derived point still fires
  auto [l, cache] = m.run_with_cache(tokens, interp::names_filter(std::vector<std::string>{"blocks.1.hook_resid_pre"}));
  interp::RunOptions o;
  o.start_at = "blocks.1.hook_resid_pre";
  o.start_value = cache["blocks.1.hook_resid_pre"];
  int fired = 0;
  m.run_with_hooks(tokens, {{"blocks.1.ln1.hook_scale", [&](at::Tensor&, const std::string&) { ++fired; }}}, o);
  EXPECT_EQ(fired, 1);
}

TEST(Names, FindPointBySuffixForHooksNamedFromAnotherRoot) {
  // sparsify records hookpoints relative to the base model: "layers.1" is "model.layers.1" here
  HookedModel m = HookedModel::load(fixture("tiny_llama_trace.pt"));
  EXPECT_EQ(m.find_point("layers.1").name, "blocks.1.hook_resid_post");
  EXPECT_EQ(m.find_point("blocks.0.hook_resid_pre").name, "blocks.0.hook_resid_pre");
  try {
    m.find_point("hook_resid_post");
    ADD_FAILURE() << "no error";
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("matches several hook points"), std::string::npos) << e.what();
  }
  // three or more matches are just as ambiguous (the nanoGPT fixture has hook_scale at five points)
  HookedModel nano = HookedModel::load(fixture("tiny_nanogpt_script.pt"));
  EXPECT_THROW(nano.find_point("hook_scale"), interp::Error);
  EXPECT_THROW(m.find_point("layers.9"), interp::Error);
}

TEST(Errors, UnmappedModelSaysWhy) {
  interp::LoadOptions o;
  o.name_map = "transformer_lens";  // the HF names are detected without a map; insist on TL's names
  HookedModel m = HookedModel::load(fixture("tiny_hf_trace.pt"), o);
  ASSERT_FALSE(m.missing_points().empty());
  EXPECT_EQ(m.missing_points()[0].name, "hook_embed");
  EXPECT_NE(m.missing_points()[0].reason.find("--name-map"), std::string::npos);
  // module paths still work without a map
  EXPECT_EQ(m.hook_point("transformer.h.1.attn").shape_str(), "[batch, pos, 32]");
}

TEST(Errors, BadDevice) {
  interp::LoadOptions o;
  o.device = "gpu0";
  auto msg = error_of([&] { HookedModel::load(fixture("tiny_script.pt"), o); });
  EXPECT_NE(msg.find("'gpu0' is not a device"), std::string::npos) << msg;
}

// Same fixtures on every backend: when a GPU is present, CUDA must match the CPU reference.
TEST(Cuda, MatchesCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  interp::LoadOptions o;
  o.device = "cuda";
  HookedModel m = HookedModel::load(fixture("tiny_script.pt"), o);
  auto golden = interp::safetensors_load(fixture("tiny.golden.safetensors"));
  auto [logits, cache] = m.run_with_cache(golden.tensors.at("tokens"));
  EXPECT_TRUE(close(logits, golden.tensors.at("logits"), 1e-4, "cuda logits"));
  EXPECT_TRUE(close(cache["blocks.1.attn.hook_pattern"], golden.tensors.at("act.blocks.1.attn.hook_pattern"), 1e-4,
                    "cuda pattern"));
}

}  // namespace
