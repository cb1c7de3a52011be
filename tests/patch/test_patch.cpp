// Patching against goldens written by models/make_patch_goldens.py: every site patched by hand, one
// plain-PyTorch forward per site, with reference.py's functional forward (no interp code). Batched
// runs (every reuse mode) must equal those goldens and the one-variant-per-forward runs.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <set>

#include "interp/error.h"
#include "interp/hooks.h"
#include "interp/metrics.h"
#include "interp/patch.h"
#include "interp/prompts.h"
#include "interp/report.h"
#include "interp/safetensors.h"
#include "interp/tokenizer.h"
#include "interp/util.h"
#include "test_util.h"

using interp::HookedModel;
using interp::test::close;
using interp::test::fixture;
using Reuse = interp::VariantOptions::Reuse;

namespace {

using Fixture = interp::test::ModelFixture;

const Fixture kFixtures[] = {
    {"tiny_script.pt", "patch_tiny.golden.safetensors", ""},
    {"tiny_trace.pt", "patch_tiny.golden.safetensors", ""},
    {"tiny_hf_script.pt", "patch_tiny_hf.golden.safetensors", "tiny_hf_script.pt.names.json"},
    {"tiny_hf_trace.pt", "patch_tiny_hf.golden.safetensors", "tiny_hf_trace.pt.names.json"},
};

class Patch : public ::testing::TestWithParam<Fixture> {
 protected:
  void SetUp() override {
    model_ = std::make_unique<HookedModel>(interp::test::load(GetParam()));
    golden_ = interp::safetensors_load(fixture(GetParam().golden));
  }
  const at::Tensor& g(const std::string& name) { return golden_.tensors.at(name); }
  interp::Metric metric() { return interp::logit_diff(g("answers"), g("wrong")); }
  const HookedModel& model() { return *model_; }
  std::unique_ptr<HookedModel> model_;
  interp::SafetensorsFile golden_;
};

struct Sweep {
  std::string hook, by;
};
const Sweep kSweeps[] = {{"resid_pre", "layer,pos"}, {"resid_pre", "layer"},   {"resid_mid", "layer,pos"},
                         {"resid_post", "layer,pos"}, {"attn_out", "layer,pos"}, {"mlp_out", "layer,pos"},
                         {"z", "layer,head"},          {"z", "layer,head,pos"},   {"pattern", "layer,head"}};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t a = 0;
  for (size_t b; (b = s.find(',', a)) != std::string::npos; a = b + 1) out.push_back(s.substr(a, b - a));
  out.push_back(s.substr(a));
  return out;
}

TEST_P(Patch, EverySweepMatchesHandPatchedGoldenInEveryMode) {
  for (Reuse reuse : {Reuse::Auto, Reuse::Layers, Reuse::None}) {
    for (const auto& s : kSweeps) {
      interp::VariantOptions o;
      o.reuse = reuse;
      auto r = interp::patch_sweep(model(), g("clean"), g("corrupted"), s.hook, split(s.by), metric(),
                                   interp::Direction::Denoise, o);
      std::string what = s.hook + " by " + s.by + " (mode " + r.stats.mode + ")";
      EXPECT_TRUE(close(r.values.reshape({-1}), g("sweep." + s.hook + "." + s.by), 1e-5, what)) << r.stats.fallback;
      EXPECT_NEAR(r.clean, g("metric.clean_logit_diff").item<double>(), 1e-5);
      EXPECT_NEAR(r.corrupted, g("metric.corrupted_logit_diff").item<double>(), 1e-5);
      if (reuse == Reuse::Auto && s.by.find("pos") != std::string::npos) {
        // The shipped exporters slice the causal mask by query and key length: the suffix shortcut applies.
        EXPECT_EQ(r.stats.mode, "suffix") << what << ": " << r.stats.fallback;
        EXPECT_LT(r.stats.check_max_diff, 1e-5);
      }
    }
  }
}

TEST_P(Patch, BatchedEqualsOneVariantPerForward) {
  for (const auto& s : kSweeps) {
    interp::VariantOptions one;
    one.reuse = Reuse::None;
    one.max_rows = 1;  // one variant (its 2 prompts) per forward: the plain TransformerLens loop
    auto a = interp::patch_sweep(model(), g("clean"), g("corrupted"), s.hook, split(s.by), metric(),
                                 interp::Direction::Denoise, one);
    auto b = interp::patch_sweep(model(), g("clean"), g("corrupted"), s.hook, split(s.by), metric());
    EXPECT_EQ(a.stats.forwards, static_cast<int64_t>(a.labels.size()));
    if (a.labels.size() > static_cast<size_t>(model().info().n_layers))  // else one forward per entry layer
      EXPECT_LT(b.stats.forwards, a.stats.forwards);
    EXPECT_TRUE(close(b.values, a.values, 1e-5, s.hook + " by " + s.by + ": batched vs one per forward"));
  }
}

TEST_P(Patch, NoisingMatchesGolden) {
  auto r = interp::patch_sweep(model(), g("clean"), g("corrupted"), "resid_pre", {"layer", "pos"}, metric(),
                               interp::Direction::Noise);
  EXPECT_TRUE(close(r.values.reshape({-1}), g("noise.resid_pre.layer,pos"), 1e-5, "noising resid_pre"));
  EXPECT_EQ(r.direction, "noise");
  // Patching the whole residual stream at layer 0 turns one run into the other: normalised 1 and 0.
  auto d = interp::patch_sweep(model(), g("clean"), g("corrupted"), "resid_pre", {"layer"}, metric());
  auto n = interp::patch_sweep(model(), g("clean"), g("corrupted"), "resid_pre", {"layer"}, metric(),
                               interp::Direction::Noise);
  EXPECT_NEAR(d.normalized[0].item<double>(), 1.0, 1e-5);
  EXPECT_NEAR(n.normalized[0].item<double>(), 0.0, 1e-5);
}

TEST_P(Patch, InterventionsMatchGolden) {
  const int last = model().info().n_layers - 1;
  const std::string z = interp::act_name("z", last);
  auto zero = interp::zero_ablation(z, {{}, {2}, {}});
  auto mean = interp::mean_ablation(model(), "blocks.0.hook_attn_out", g("reference"), true, {{3}, {}, {}});
  auto add = interp::add_direction("blocks.0.hook_resid_post", g("direction"), 2.5, {{4}, {}, {}});
  auto scale = interp::scale_by(interp::act_name("attn_out", last), 0.5);
  int64_t H = model().info().n_heads;
  auto replace = interp::replace_with("blocks.0.attn.hook_pattern", at::full({1, H, 8, 8}, 1.0 / 8), {{5}, {1}, {}});
  std::map<std::string, interp::Intervention> ivs = {
      {"zero", zero}, {"mean", mean}, {"add", add}, {"scale", scale}, {"replace", replace}};
  for (const auto& [kind, iv] : ivs)
    EXPECT_TRUE(close(interp::run_with_interventions(model(), g("clean"), {iv}), g("iv." + kind + ".logits"), 1e-5, kind));
  EXPECT_TRUE(close(interp::run_with_interventions(model(), g("clean"), {zero, mean, add, scale, replace}),
                    g("iv.all.logits"), 1e-5, "all five composed"));
  // A pooled mean (one value for every position) broadcasts, alone and in a batched ablation sweep.
  auto pooled = interp::mean_ablation(model(), "blocks.0.hook_attn_out", g("reference"), false, {{3}, {}, {}});
  auto [rl, rc] = model().run_with_cache(g("reference"), interp::names_filter(std::vector<std::string>{"blocks.0.hook_attn_out"}));
  at::Tensor want_mean = rc["blocks.0.hook_attn_out"].mean(at::IntArrayRef{0, 1}, true);
  EXPECT_TRUE(close(pooled.value, want_mean, 1e-6, "pooled mean"));
  at::Tensor by_hand = model().run_with_hooks(g("clean"), {{"blocks.0.hook_attn_out", [&](at::Tensor& a, const std::string&) {
                                                              a = a.clone();
                                                              a.select(1, 3).copy_(want_mean.select(1, 0).expand({2, -1}));
                                                            }}});
  EXPECT_TRUE(close(interp::run_with_interventions(model(), g("clean"), {pooled}), by_hand, 1e-6, "pooled mean ablation"));
  auto short_ref = g("reference").narrow(1, 0, 5);  // another length: pooled automatically
  auto sites = interp::sweep_sites(model(), "attn_out", {"layer", "pos"}, 8);
  auto ab = interp::ablation_sweep(model(), g("clean"), short_ref, sites, interp::Ablation::Mean, metric());
  EXPECT_EQ(ab.values.numel(), static_cast<int64_t>(sites.size()));
  EXPECT_TRUE(at::isfinite(ab.values).all().item<bool>());
  // The same interventions as batched variants give the same metric values.
  std::vector<std::vector<interp::Intervention>> variants = {{zero}, {mean}, {add}, {scale}, {replace}, {}};
  auto m = metric();
  auto vals = interp::run_variants(model(), g("clean"), variants, m);
  int i = 0;
  for (const char* kind : {"zero", "mean", "add", "scale", "replace"}) {
    at::Tensor want = g(std::string("iv.") + kind + ".logits");
    double w = m.fn(want.narrow(1, 7, 1)).mean().item<double>();
    EXPECT_NEAR(vals[i++].item<double>(), w, 1e-5) << kind;
  }
  EXPECT_NEAR(vals[5].item<double>(), g("metric.clean_logit_diff").item<double>(), 1e-5) << "empty variant";
}

TEST_P(Patch, ResampleIsSeededAndTakesWholePromptsFromTheSource) {
  const std::string hook = "blocks.0.hook_resid_post";
  auto a = interp::resample_ablation(model(), hook, g("reference"), 2, 7);
  auto b = interp::resample_ablation(model(), hook, g("reference"), 2, 7);
  EXPECT_TRUE(at::equal(a.value, b.value));
  auto [logits, cache] = model().run_with_cache(g("reference"), interp::names_filter(std::vector<std::string>{hook}));
  interp::Rng rng(7);
  for (int64_t i = 0; i < 2; ++i) {
    int64_t pick = static_cast<int64_t>(rng.below(4));
    EXPECT_TRUE(at::equal(a.value[i], cache[hook][pick])) << "prompt " << i << " should come from source " << pick;
  }
  auto sweep = interp::sweep_sites(model(), "resid_pre", {"layer", "pos"}, 8);
  auto r = interp::ablation_sweep(model(), g("clean"), g("reference"), sweep, interp::Ablation::Resample, metric(), 7);
  EXPECT_EQ(r.values.numel(), static_cast<int64_t>(sweep.size()));
}

TEST_P(Patch, MetricsMatchGolden) {
  at::Tensor cl = g("clean_logits");
  auto value = [&](const interp::Metric& m, const at::Tensor& logits) {
    at::Tensor at = m.positions.empty() ? logits : logits.narrow(1, 7, 1);
    return m.fn(at).mean().item<double>();
  };
  EXPECT_NEAR(value(interp::answer_prob(g("answers")), cl), g("metric.prob").item<double>(), 1e-6);
  EXPECT_NEAR(value(interp::answer_loss(g("answers")), cl), g("metric.loss").item<double>(), 1e-5);
  EXPECT_NEAR(value(interp::kl_to(cl), g("corrupted_logits")), g("metric.kl").item<double>(), 1e-6);
  EXPECT_NEAR(value(interp::kl_to(cl), cl), 0.0, 1e-7);
  // No positions means all of them: the sum of the per-position values (the last one is the golden).
  auto all = interp::kl_to(cl, {});
  EXPECT_TRUE(all.positions.empty());
  double sum = 0;
  for (int64_t p = 0; p < 8; ++p) sum += interp::kl_to(cl, {p}).fn(g("corrupted_logits").narrow(1, p, 1)).mean().item<double>();
  EXPECT_NEAR(all.fn(g("corrupted_logits")).mean().item<double>(), sum, 1e-6);
  EXPECT_GE(sum, g("metric.kl").item<double>() - 1e-7);
  EXPECT_NEAR(value(interp::sequence_loss(g("clean")), cl), g("metric.sequence_loss").item<double>(), 1e-5);
}

TEST_P(Patch, AttributionMatchesGoldenAndRanksLikeRealPatching) {
  for (const auto& s : {Sweep{"resid_pre", "layer,pos"}, Sweep{"z", "layer,head"}}) {
    auto a = interp::attribution_patching(model(), g("clean"), g("corrupted"), s.hook, split(s.by), metric());
    EXPECT_TRUE(close(a.values.reshape({-1}), g("attr." + s.hook + "." + s.by).reshape({-1}), 1e-5, "attribution " + s.hook));
    // Its ranking of sites by effect agrees with real patching on the top ones.
    auto p = interp::patch_sweep(model(), g("clean"), g("corrupted"), s.hook, split(s.by), metric());
    at::Tensor ea = (a.values.reshape({-1}) - a.corrupted).abs(), ep = (p.values.reshape({-1}) - p.corrupted).abs();
    auto top = [](const at::Tensor& t, int64_t k) {
      auto idx = std::get<1>(t.topk(k));
      return std::set<int64_t>(idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + k);
    };
    EXPECT_EQ(*top(ea, 1).begin(), *top(ep, 1).begin()) << s.hook << ": top site differs";
    std::set<int64_t> ta = top(ea, 3), tp = top(ep, 3);
    int common = 0;
    for (int64_t i : ta) common += static_cast<int>(tp.count(i));
    EXPECT_GE(common, 2) << s.hook << ": top-3 sites of attribution and patching share " << common;
  }
}

TEST_P(Patch, PathPatchingMatchesGolden) {
  const int last = model().info().n_layers - 1;
  std::vector<interp::PatchSite> receivers;
  for (const char* x : {"q", "k", "v"}) receivers.push_back({interp::act_name(x, last), {{}, {0}, {}}, ""});
  double v = interp::path_patching(model(), g("clean"), g("corrupted"), {{"blocks.0.attn.hook_z", {{}, {1}, {}}, ""}},
                                   receivers, metric());
  EXPECT_NEAR(v, g("path.value").item<double>(), 1e-5);
  auto heads = interp::path_patch_heads(model(), g("clean"), g("corrupted"), receivers, metric());
  EXPECT_TRUE(close(heads.values, g("path.heads"), 1e-5, "path patching every sender head"));
  EXPECT_EQ(heads.stats.forwards, 2) << "all 8 senders share the two batched runs";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Patch, ::testing::ValuesIn(kFixtures));

// The same weights exported before the exporters sliced the causal mask by query and key length
// (mask[:p, :p]): the suffix shortcut's check must catch it, fall back, and still be right.
TEST(PatchFallback, ModelWithSquareMaskFallsBackToLayersAndStaysExact) {
  auto model = HookedModel::load(fixture("tiny_script_square_mask.pt"));
  auto golden = interp::safetensors_load(fixture("patch_tiny.golden.safetensors"));
  auto g = [&](const char* n) { return golden.tensors.at(n); };
  auto metric = interp::logit_diff(g("answers"), g("wrong"));
  auto r = interp::patch_sweep(model, g("clean"), g("corrupted"), "resid_pre", {"layer", "pos"}, metric);
  EXPECT_EQ(r.stats.mode, "layers");
  EXPECT_NE(r.stats.fallback.find("suffix mode not used"), std::string::npos) << r.stats.fallback;
  // one plain sentence, not the TorchScript traceback
  EXPECT_NE(r.stats.fallback.find("a causal mask sliced [:T, :T]"), std::string::npos) << r.stats.fallback;
  EXPECT_EQ(r.stats.fallback.find('\n'), std::string::npos) << r.stats.fallback;
  EXPECT_EQ(r.stats.fallback.find("Traceback"), std::string::npos) << r.stats.fallback;
  EXPECT_TRUE(close(r.values.reshape({-1}), g("sweep.resid_pre.layer,pos"), 1e-5, "after falling back"));
  interp::VariantOptions forced;
  forced.reuse = Reuse::Suffix;
  EXPECT_THROW(interp::patch_sweep(model, g("clean"), g("corrupted"), "resid_pre", {"layer", "pos"}, metric,
                                   interp::Direction::Denoise, forced),
               interp::Error);
}

TEST(PatchErrors, BadInputsSayWhatIsWrong) {
  auto model = HookedModel::load(fixture("tiny_script.pt"));
  at::Tensor a = at::zeros({2, 8}, at::kLong), b = at::zeros({2, 7}, at::kLong);
  auto m = interp::logit_diff(at::zeros({2}, at::kLong), at::ones({2}, at::kLong));
  auto expect_error = [](auto fn, const std::string& part) {
    try {
      fn();
      ADD_FAILURE() << "no error; expected one mentioning '" << part << "'";
    } catch (const interp::Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_error([&] { interp::patch_sweep(model, a, b, "resid_pre", {"layer", "pos"}, m); }, "same shape");
  expect_error([&] { interp::patch_sweep(model, a, a, "resid_pre", {"layer", "head"}, m); }, "no head axis");
  expect_error([&] { interp::patch_sweep(model, a, a, "resid_pre", {"pos"}, m); }, "layer,pos");
  expect_error([&] { interp::patch_sweep(model, a, a, "resid_pree", {"layer"}, m); }, "resid_pre");
  expect_error([&] { interp::run_with_interventions(model, a, {interp::zero_ablation("blocks.0.attn.hook_z", {{}, {9}, {}})}); },
               "head 9");
  expect_error([&] { interp::run_with_interventions(model, a, {interp::zero_ablation("blocks.0.hook_resid_pre", {{8}, {}, {}})}); },
               "position 8");
  expect_error([&] { interp::run_with_interventions(model, a, {interp::replace_with("blocks.0.hook_resid_pre", at::zeros({3}))}); },
               "does not fit");
  auto m3 = interp::logit_diff(at::zeros({3}, at::kLong), at::ones({3}, at::kLong));
  expect_error([&] { interp::run_variants(model, a, {{interp::scale_by("blocks.0.hook_resid_pre", 2)}}, m3); },
               "one token id per prompt");
}

}  // namespace

namespace {

// Mutated and truncated prompt files load or fail with interp::Error, never anything else.
TEST(PromptPairs, FuzzedFilesLoadOrSayWhatIsWrong) {
  const std::string good = R"({"pairs": [{"clean_tokens": [1, 5, 9], "corrupted_tokens": [1, 6, 9], "answer": 3, "wrong": 4},
    {"clean_tokens": [2, 5, 9], "corrupted_tokens": [2, 6, 9], "answer": 3, "wrong": 4}], "prepend_bos": false})";
  const std::string path = ::testing::TempDir() + "interp-fuzz-pairs.json";
  auto load = [&](const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
    return interp::load_prompt_pairs(path, nullptr);
  };
  auto p = load(good);
  EXPECT_EQ(p.clean.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(p.corrupted[1][1].item<int64_t>(), 6);
  EXPECT_EQ(p.answers[0].item<int64_t>(), 3);
  EXPECT_FALSE(p.position.has_value());
  std::string with_pos = good;
  with_pos.insert(with_pos.size() - 1, ", \"position\": -2");
  EXPECT_EQ(load(with_pos).position.value_or(0), -2);
  std::string bad_pos = good;
  bad_pos.insert(bad_pos.size() - 1, ", \"position\": 3");
  EXPECT_THROW(load(bad_pos), interp::Error);
  interp::Rng rng(11);
  const std::string alphabet = "{}[]\",:0123456789-. abcnulltrue";
  int loaded = 0, rejected = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string t = good;
    int edits = 1 + static_cast<int>(rng.below(4));
    for (int e = 0; e < edits && !t.empty(); ++e) {
      size_t at = rng.below(t.size());
      switch (rng.below(3)) {
        case 0: t[at] = alphabet[rng.below(alphabet.size())]; break;
        case 1: t.erase(at, 1 + rng.below(8)); break;
        default: t = t.substr(0, at); break;
      }
    }
    try {
      load(t);
      ++loaded;
    } catch (const interp::Error&) {
      ++rejected;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not an interp::Error: " << e.what() << "\nfor input: " << t;
    }
  }
  EXPECT_GT(rejected, 1000);
  std::remove(path.c_str());
}

}  // namespace

namespace {

// Text prompts go through the tokenizer: compared with sentencepiece's own encoding of each text.
TEST(PromptPairs, TextIsTokenizedWithBosAndOneTokenAnswers) {
  auto tok = interp::Tokenizer::load(fixture("brown-1k.model"));
  const std::string path = ::testing::TempDir() + "interp-text-pairs.json";
  auto load = [&](const std::string& text) {
    std::ofstream(path) << text;
    return interp::load_prompt_pairs(path, &tok);
  };
  auto p = load(R"({"pairs": [{"clean": "The man said that his", "corrupted": "The man said that her",
                               "answer": " he", "wrong": " she"}]})");
  std::vector<int64_t> want{tok.bos_id()};
  for (int32_t id : tok.encode("The man said that his")) want.push_back(id);
  ASSERT_EQ(p.clean.size(1), static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(p.clean[0][static_cast<int64_t>(i)].item<int64_t>(), want[i]);
  EXPECT_EQ(p.answers[0].item<int64_t>(), tok.encode(" he").at(0));
  EXPECT_EQ(p.wrong[0].item<int64_t>(), tok.encode(" she").at(0));
  EXPECT_EQ(p.pos_labels.at(0), tok.piece(tok.bos_id()));
  auto no_bos = load(R"({"pairs": [{"clean": "The man", "answer": 5}], "prepend_bos": false})");
  EXPECT_EQ(no_bos.clean.size(1), static_cast<int64_t>(tok.encode("The man").size()));
  try {
    load(R"({"pairs": [{"clean": "The man", "answer": " John"}]})");
    ADD_FAILURE() << "a multi-token answer was accepted";
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find(fmt::format("is {} tokens", tok.encode(" John").size())), std::string::npos)
        << e.what();
  }
  std::remove(path.c_str());
}

}  // namespace

// An answer id outside the vocabulary is an interp::Error naming the prompt, from every metric that
// reads answers, and check_token_ids names the pair and field before any run.
TEST(Metrics, TokenIdsOutsideTheVocabularyAreAnError) {
  at::Tensor logits = at::randn({2, 1, 10});
  const at::Tensor good = at::tensor({3, 4}, at::kLong), bad = at::tensor({3, 12}, at::kLong);
  for (const interp::Metric& m : {interp::logit_diff(bad, good, -1), interp::logit_diff(good, bad, -1),
                                  interp::answer_prob(bad, -1), interp::answer_loss(at::tensor({-1, 2}, at::kLong), -1)}) {
    try {
      m.fn(logits);
      ADD_FAILURE() << m.name << ": no error";
    } catch (const interp::Error& e) {
      EXPECT_NE(std::string(e.what()).find("outside the model's vocabulary of 10"), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(interp::logit_diff(good, good, -1).fn(logits));
  interp::PromptPairs p;
  p.clean = at::tensor({1, 2, 3, 4, 5, 11}, at::kLong).view({2, 3});
  try {
    interp::check_token_ids(p, 10, "pairs.json");
    ADD_FAILURE() << "no error";
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("pairs.json: pair 2 'clean_tokens' has token id 11"), std::string::npos) << e.what();
  }
  p.clean = at::tensor({1, 2, 3, 4, 5, 6}, at::kLong).view({2, 3});
  p.wrong = at::tensor({0, -2}, at::kLong);
  EXPECT_THROW(interp::check_token_ids(p, 10, "pairs.json"), interp::Error);
  p.wrong = at::tensor({0, 9}, at::kLong);
  EXPECT_NO_THROW(interp::check_token_ids(p, 10, "pairs.json"));
}
