// SAEs: ground truth (synthetic superposition), file round trips, architecture invariants.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <limits>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "interp/error.h"
#include "interp/sae.h"
#include "interp/sae_train.h"
#include "interp/safetensors.h"
#include "interp/sae_eval.h"
#include "interp/data.h"
#include "interp/hooks.h"
#include "interp/tokenizer.h"
#include "interp/lm_eval.h"
#include "interp/steer.h"
#include "sae/sparse_encode.h"
#include "test_util.h"

namespace {

// The CI check: uniform frequencies, 256 features in d=128, TopK SAE with 512 latents.
TEST(GroundTruth, TopKRecoversUniformFeatures) {
  interp::SyntheticConfig sc;
  sc.n_features = 256;
  sc.d = 128;
  sc.mean_active = 5;
  sc.seed = 1;
  interp::SyntheticData data(sc);
  interp::SAEConfig cfg;
  cfg.architecture = "topk";
  cfg.d_in = 128;
  cfg.d_sae = 512;
  cfg.k = 8;
  cfg.seed = 2;
  interp::SAE sae(cfg);
  auto before = interp::feature_recovery(data.features(), sae.W_dec());
  interp::TrainOptions o;
  o.steps = 1200;
  o.batch = 1024;
  o.lr = 2e-3;
  o.dead_window = 200000;
  o.log_every = 300;
  o.progress = [](const interp::TrainProgress& p) {
    std::printf("  step %lld: mse %.4f l0 %.2f aux %.3f dead %.3f (%.0f tokens/s)\n", static_cast<long long>(p.step),
                p.mse, p.l0, p.aux, p.dead_fraction, p.tokens_per_s);
  };
  auto source = interp::synthetic_source(data);
  auto t0 = std::chrono::steady_clock::now();
  auto r = interp::train_sae(sae, *source, o);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto after = interp::feature_recovery(data.features(), sae.W_dec());
  std::printf("  MMCS %.4f -> %.4f, recovered %lld/256 (> 0.9), %.1f s\n", before.mmcs, after.mmcs,
              static_cast<long long>(after.recovered), s);
  EXPECT_LT(before.mmcs, 0.5) << "random init should not already match";
  EXPECT_GE(after.mmcs, 0.99);
  EXPECT_GE(after.recovered, 250);
}

TEST(GroundTruth, RecoveryMetricIsExact) {
  at::Tensor f = at::eye(4);
  // decoder rows: feature 0 exactly, feature 1 at 60 degrees, nothing near 2 and 3 except noise
  at::Tensor w = at::tensor({1.f, 0.f, 0.f, 0.f, 0.5f, 0.8660254f, 0.f, 0.f, 0.f, 0.f, 0.7071f, 0.7071f}).view({3, 4}) * 3;
  auto r = interp::feature_recovery(f, w, 0.9);
  EXPECT_NEAR(r.mmcs, (1 + 0.8660254 + 0.7071 + 0.7071) / 4, 1e-4);
  EXPECT_EQ(r.recovered, 1);
}

TEST(Synthetic, FrequenciesAndDeterminism) {
  interp::SyntheticConfig sc;
  sc.n_features = 512;
  sc.d = 256;
  sc.frequencies = "geometric";
  interp::SyntheticData a(sc), b(sc);
  EXPECT_TRUE(at::equal(a.sample(64), b.sample(64)));
  EXPECT_NEAR(a.probabilities().sum().item<double>(), 5.0, 1e-3);
  EXPECT_NEAR(a.probabilities()[10].item<double>() / a.probabilities()[0].item<double>(), std::pow(0.99, 10), 1e-4);
  EXPECT_TRUE(at::allclose(a.features().norm(2, {1}), at::ones({512}), 1e-5, 1e-5));
  // mean number of active features ~ 5: recover the codes by least squares on the (overcomplete)
  // features is not possible, so count through a direct sample of the activity instead
  interp::SyntheticConfig u = sc;
  u.frequencies = "uniform";
  interp::SyntheticData c(u);
  EXPECT_NEAR(c.probabilities()[0].item<double>(), 5.0 / 512, 1e-6);
  EXPECT_THROW(interp::SyntheticData({0, 3}), interp::Error);
}

TEST(SAE, GeometricMedianIsRobust) {
  at::Tensor x = at::zeros({101, 2});
  x.slice(0, 0, 100).normal_(0, 0.01);
  x[100][0] = 1000;  // one outlier drags the mean, not the median
  at::Tensor m = interp::geometric_median(x);
  EXPECT_LT(m.norm().item<double>(), 0.05);
  EXPECT_GT(x.mean(0).norm().item<double>(), 9);
}

TEST(SAE, ConfigValidationNamesTheField) {
  interp::SAEConfig c;
  c.d_in = 8;
  c.d_sae = 16;
  c.architecture = "topk";
  c.k = 20;
  try {
    interp::SAE sae(c);
    FAIL();
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("k must be in 1..d_sae (16)"), std::string::npos) << e.what();
  }
  c.architecture = "crosscoder";
  try {
    interp::SAE sae(c);
    FAIL();
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not one of standard, topk, batchtopk, jumprelu, gated, matryoshka"),
              std::string::npos)
        << e.what();
  }
  c.architecture = "matryoshka";
  c.k = 4;
  for (std::vector<int64_t> bad : {std::vector<int64_t>{4, 4, 16}, {0, 16}, {4, 8}}) {
    c.matryoshka_prefixes = bad;
    try {
      interp::SAE sae(c);
      FAIL();
    } catch (const interp::Error& e) {
      EXPECT_NE(std::string(e.what()).find("matryoshka_prefixes must"), std::string::npos) << e.what();
    }
  }
  c.matryoshka_prefixes = {};
  EXPECT_EQ(c.prefixes(), (std::vector<int64_t>{1, 2, 4, 8, 16}));
  c.architecture = "topk";
  c.matryoshka_prefixes = {4, 16};
  EXPECT_THROW(interp::SAE sae(c), interp::Error);
}

TEST(SAE, SaveLoadRoundTripFoldsTheScale) {
  for (const std::string arch : interp::sae_architectures()) {
    interp::SAEConfig c;
    c.architecture = arch;
    c.d_in = 16;
    c.d_sae = 64;
    if (arch == "matryoshka") c.matryoshka_prefixes = {8, 40, 64};
    c.k = 4;
    c.hook_name = "blocks.1.hook_resid_post";
    c.threshold_init = 0.05;
    interp::SAE sae(c);
    sae.set_norm_scale(2.5);  // as training sets it
    {
      at::NoGradGuard g;
      sae.b_enc().detach().normal_(0, 0.1);
      sae.b_dec().detach().normal_(0, 0.1);
      for (const auto& [name, t] : sae.extra_parameters()) t.detach().uniform_(0.01, 0.1);
    }
    if (interp::sae_architecture(arch).batch_threshold) sae.set_inference_threshold(0.2);
    at::Tensor x = at::randn({32, 16});
    at::Tensor h = sae.encode(x), y = sae.decode(h);
    std::string dir = ::testing::TempDir() + "/sae-" + arch;
    sae.save(dir);
    interp::SAE back = interp::SAE::load(dir);
    EXPECT_EQ(back.config().norm_scale, 1.0);
    EXPECT_EQ(back.config().hook_name, "blocks.1.hook_resid_post");
    EXPECT_EQ(back.config().prefixes(), sae.config().prefixes());
    EXPECT_GT((h > 0).sum().item<int64_t>(), 0) << arch;
    EXPECT_TRUE(interp::test::close(back.encode(x), h, 1e-5, arch + " h after reload"));
    EXPECT_TRUE(interp::test::close(back.decode(back.encode(x)), y, 1e-5, arch + " x_hat after reload"));
  }
  EXPECT_THROW(interp::SAE::load(::testing::TempDir() + "/no-such-sae"), interp::Error);
}

namespace {
// An SAE with nonzero biases, and x [300, 64] with a random 30% of latents dead.
interp::SAE sparse_test_sae(interp::SAEConfig c, at::Tensor* x, at::Tensor* dead) {
  interp::SAE sae(c);
  {
    at::NoGradGuard g;
    sae.b_enc().detach().normal_(0, 0.1);
    sae.b_dec().detach().normal_(0, 0.1);
  }
  at::manual_seed(4);
  *x = at::randn({300, c.d_in});
  *dead = at::rand({c.d_sae}) < 0.3;
  return sae;
}

// The sparse path's loss and gradients against the dense autograd path (taken when x needs a
// gradient), AuxK active.
void expect_sparse_equals_dense(const interp::SAE& sae, const interp::SAEOutput& sparse, const at::Tensor& x,
                                const at::Tensor& dead, const std::string& label) {
  auto gs = torch::autograd::grad({sparse.loss}, sae.parameters());
  at::Tensor xg = x.clone().requires_grad_(true);
  auto dense = sae.forward(xg, 1.0, dead);
  auto gd = torch::autograd::grad({dense.loss}, sae.parameters());
  EXPECT_GT(sparse.aux.item<double>(), 0);
  EXPECT_TRUE(interp::test::close(sparse.loss, dense.loss, 1e-6, "loss"));
  const char* names[] = {"W_enc", "W_dec", "b_enc", "b_dec"};
  for (size_t i = 0; i < gs.size(); ++i) {
    auto r = interp::test::close(gs[i], gd[i], 1e-5, label + names[i]);
    EXPECT_TRUE(r);
    std::printf("  %s\n", r.message());
  }
}
}  // namespace

// TopK's sparse backward (no dense [B, d_sae] gradient) against autograd's dense one: the dense path
// runs when x itself needs a gradient. AuxK included: with 64 of 1024 latents through the same
// kernel, with 256 through dense products.
class SparseTopK : public ::testing::TestWithParam<int64_t> {};
INSTANTIATE_TEST_SUITE_P(AuxK, SparseTopK, ::testing::Values(64, 256));
TEST_P(SparseTopK, BackwardEqualsTheDenseOne) {
  interp::SAEConfig c;
  c.architecture = "topk";
  c.d_in = 64;
  c.d_sae = 1024;
  c.k = 16;
  c.aux_k = GetParam();
  c.seed = 3;
  at::Tensor x, dead;
  interp::SAE sae = sparse_test_sae(c, &x, &dead);
  auto sparse = sae.forward(x, 1.0, dead);
  expect_sparse_equals_dense(sae, sparse, x, dead, "sparse vs dense grad ");
}

// BatchTopK's training forward decodes only the k * batch kept entries (rows padded to the busiest
// row): the same latents, loss and gradients as the dense activation, AuxK included.
TEST(SparseBatchTopK, EqualsTheDenseActivation) {
  interp::SAEConfig c;
  c.architecture = "batchtopk";
  c.d_in = 64, c.d_sae = 1024, c.k = 16, c.aux_k = 32, c.seed = 3;
  at::Tensor x, dead;
  interp::SAE sae = sparse_test_sae(c, &x, &dead);
  auto sparse = sae.forward(x, 1.0, dead);
  ASSERT_FALSE(sparse.h.defined()) << "the sparse path was not taken";
  // independent: the dense rule written out here (top k * batch of ReLU(pre) over the whole batch)
  at::Tensor pre = sae.encode_pre(x);
  auto [vals, idx] = at::relu(pre).flatten().topk(16 * 300);
  at::Tensor h = at::zeros_like(pre).flatten().scatter(0, idx, vals).view_as(pre);
  at::Tensor x_hat = at::matmul(h, sae.W_dec()) + sae.b_dec();
  EXPECT_TRUE(interp::test::close(sparse.dense_h(), h.detach(), 1e-6, "latents"));
  const at::Tensor want_mse = (x_hat - x).pow(2).sum(-1).mean();
  EXPECT_TRUE(interp::test::close(sparse.mse, want_mse, 1e-6 * want_mse.item<double>(), "mse (relative 1e-6)"));
  EXPECT_NEAR(sparse.l0.item<double>(), (h > 0).sum(-1).to(at::kFloat).mean().item<double>(), 1e-6);
  expect_sparse_equals_dense(sae, sparse, x, dead, "batchtopk sparse vs dense grad ");
  // one row far louder than the rest takes more than its 4k candidates: the whole-batch selection
  at::Tensor loud = x.clone();
  loud[0].mul_(50);
  auto lo = sae.forward(loud);
  at::Tensor lpre = sae.encode_pre(loud);
  auto [lv, li] = at::relu(lpre).flatten().topk(16 * 300);
  at::Tensor lh = at::zeros_like(lpre).flatten().scatter(0, li, lv).view_as(lpre);
  EXPECT_GT((lh[0] > 0).sum().item<int64_t>(), 64) << "the loud row should exceed 4k = 64 candidates";
  EXPECT_TRUE(interp::test::close(lo.dense_h(), lh.detach(), 1e-5, "latents with one loud row"));
}

// The heap selection TopK uses against at::topk: the same values in the same order, and indices
// that hold those values (rows with repeated values included).
TEST(SAE, RowTopKEqualsAtTopK) {
  at::manual_seed(5);
  at::Tensor x = at::randn({257, 1000});
  x.narrow(0, 0, 10).copy_(at::randint(0, 5, {10, 1000}).to(at::kFloat));  // many ties
  for (int64_t k : {1, 7, 32, 1000}) {
    auto [v, i] = interp::sae_detail::row_topk(x, k);
    auto [wv, wi] = x.topk(k, -1);
    EXPECT_TRUE(at::equal(v, wv)) << "k " << k;
    EXPECT_TRUE(at::equal(x.gather(1, i), v)) << "k " << k;
    at::Tensor sorted = std::get<0>(i.sort(-1));
    EXPECT_FALSE((sorted.narrow(1, 1, k - 1) == sorted.narrow(1, 0, k - 1)).any().item<bool>() && k > 1)
        << "an index chosen twice, k " << k;
  }
  // With a bias added as the row is read: the same as adding it first. A bias of -inf masks latents
  // out (AuxK's dead-only selection), also when fewer than k are left above -inf in a row.
  at::Tensor bias = at::randn({1000});
  bias.narrow(0, 0, 600).fill_(-std::numeric_limits<float>::infinity());
  for (int64_t k : {1, 7, 32, 400, 500}) {
    auto [v, i] = interp::sae_detail::row_topk(x, k, bias);
    auto [wv, wi] = (x + bias).topk(k, -1);
    EXPECT_TRUE(at::equal(v, wv)) << "k " << k << " with bias";
    EXPECT_TRUE(at::equal((x + bias).gather(1, i), v)) << "k " << k << " with bias";
    at::Tensor sorted = std::get<0>(i.sort(-1));
    EXPECT_FALSE((sorted.narrow(1, 1, k - 1) == sorted.narrow(1, 0, k - 1)).any().item<bool>() && k > 1)
        << "an index chosen twice, k " << k << " with bias";
  }
  EXPECT_THROW(interp::sae_detail::row_topk(x, 1001), interp::Error);
}

TEST(SAE, ArchitectureInvariants) {
  interp::SAEConfig c;
  c.d_in = 8;
  c.d_sae = 32;
  c.k = 3;
  at::Tensor x = at::randn({10, 8});
  c.architecture = "topk";
  interp::SAE topk(c);
  EXPECT_TRUE(((topk.encode(x) > 0).sum(-1) <= 3).all().item<bool>());
  c.architecture = "batchtopk";
  interp::SAE btk(c);
  auto out = btk.forward(x);
  EXPECT_LE((out.dense_h() > 0).sum().item<int64_t>(), 30);  // k * batch over the whole batch
  c.architecture = "jumprelu";
  c.threshold_init = 0.3;
  c.bandwidth = 0.1;
  interp::SAE jr(c);
  at::Tensor pre = jr.encode_pre(x);
  at::Tensor h = jr.encode(x);
  EXPECT_TRUE(at::equal(h, pre * (pre > 0.3)));
  // straight-through estimator: d L0 / d theta = -(1/eps) * #(|pre - theta| < eps/2), per latent
  auto o = jr.forward(x);
  auto g = torch::autograd::grad({o.sparsity}, {jr.threshold()})[0];
  at::Tensor expect = -((pre - 0.3).abs() < 0.05).to(at::kFloat).sum(0) / 0.1 / 10;
  EXPECT_TRUE(interp::test::close(g, expect, 1e-4, "jumprelu threshold gradient"));
  // gated: latents fire only where the gate's pre-activation is positive; magnitudes from the
  // rescaled path (r_mag, b_mag set here by hand)
  c.architecture = "gated";
  interp::SAE gt(c);
  {
    at::NoGradGuard ng;
    gt.b_enc().detach().uniform_(-0.2, 0.2);
    gt.param("r_mag").detach().uniform_(-0.5, 0.5);
    gt.param("b_mag").detach().uniform_(-0.1, 0.1);
    at::Tensor gate = gt.encode_pre(x);
    at::Tensor mag = (x - gt.b_dec()).matmul(gt.W_enc() * gt.param("r_mag").exp()) + gt.param("b_mag");
    EXPECT_TRUE(interp::test::close(gt.encode(x), (gate > 0).to(at::kFloat) * at::relu(mag), 1e-5, "gated h"));
  }
  // standard: the L1 term is weighted by decoder row norms
  c.architecture = "standard";
  interp::SAE st(c);
  auto so = st.forward(x);
  at::Tensor expected = (so.h * st.W_dec().norm(2, {1})).sum(-1).mean();
  EXPECT_TRUE(interp::test::close(so.sparsity, expected, 1e-6, "standard sparsity"));
}

// Checkpoints: an interrupted run resumed from its last checkpoint ends bit-identical to an
// uninterrupted one, for architectures with and without extra state (thresholds, AuxK counters).
class Resume : public ::testing::TestWithParam<std::string> {};

TEST_P(Resume, IsBitForBit) {
  interp::SyntheticConfig sc;
  sc.n_features = 64;
  sc.d = 32;
  sc.seed = 3;
  interp::SAEConfig c;
  c.architecture = GetParam();
  c.d_in = 32;
  c.d_sae = 96;
  c.k = 4;
  c.l1_coefficient = 0.01;
  c.seed = 4;
  auto options = [&](const std::string& ckpt) {
    interp::TrainOptions o;
    o.steps = 120;
    o.batch = 256;
    o.lr = 1e-3;
    o.dead_window = 2000;  // small: AuxK and resampling kick in
    o.resample_every = 30;
    o.checkpoint_every = 40;
    o.checkpoint_path = ckpt;
    o.log_every = 20;
    return o;
  };
  auto make = [&] {  // latents 0..7 start dead, so resampling happens before and after the resume
    interp::SAE sae(c);
    at::NoGradGuard g;
    sae.b_enc().detach().slice(0, 0, 8).fill_(-100);
    if (sae.threshold().defined()) sae.threshold().detach().slice(0, 0, 8).fill_(100);
    return sae;
  };
  const std::string dir = ::testing::TempDir() + "/resume-" + GetParam();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);

  interp::SyntheticData d1(sc);
  interp::SAE whole = make();
  auto s1 = interp::synthetic_source(d1);
  auto whole_result = interp::train_sae(whole, *s1, options(dir + "/a.ckpt"));
  EXPECT_GT(whole_result.resampled, 0) << "resampling should be part of the run compared";

  interp::SyntheticData d2(sc);
  interp::SAE first = make();
  auto s2 = interp::synthetic_source(d2);
  auto o = options(dir + "/b.ckpt");
  o.progress = [](const interp::TrainProgress& p) {
    if (p.step == 100) throw std::runtime_error("interrupted");  // after the checkpoint of step 80
  };
  EXPECT_THROW(interp::train_sae(first, *s2, o), std::runtime_error);

  interp::SyntheticData d3(sc);
  interp::SAE resumed = make();
  auto s3 = interp::synthetic_source(d3);
  o = options(dir + "/b.ckpt");
  o.resume = true;
  auto r = interp::train_sae(resumed, *s3, o);
  EXPECT_EQ(r.resumed_from, 80);
  std::printf("  %s: %lld latents resampled in the whole run, %lld after the resume\n", GetParam().c_str(),
              static_cast<long long>(whole_result.resampled), static_cast<long long>(r.resampled));
  auto a = whole.parameters(), b = resumed.parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_TRUE(at::equal(a[i], b[i])) << "parameter " << i << " max diff " << interp::test::max_abs_diff(a[i], b[i]);
  EXPECT_EQ(whole.inference_threshold(), resumed.inference_threshold());
}

INSTANTIATE_TEST_SUITE_P(Architectures, Resume, ::testing::Values("topk", "batchtopk", "jumprelu", "standard"));

TEST(Train, ResamplingRevivesDeadLatents) {
  // Half the latents start dead (b_enc = -100: they never fire, so nothing trains them);
  // resampling brings them back, and without it they stay dead.
  interp::SyntheticConfig sc;
  sc.n_features = 64;
  sc.d = 32;
  interp::SAEConfig c;
  c.architecture = "standard";
  c.d_in = 32;
  c.d_sae = 128;
  c.l1_coefficient = 0.1;
  auto run = [&](int64_t every) {
    interp::SyntheticData data(sc);
    auto src = interp::synthetic_source(data);
    interp::SAE sae(c);
    {
      at::NoGradGuard g;
      sae.b_enc().detach().slice(0, 0, 64).fill_(-100);
    }
    interp::TrainOptions o;
    o.steps = 300;
    o.batch = 256;
    o.lr = 3e-3;
    o.dead_window = 256 * 40;
    o.resample_every = every;
    o.log_every = 0;
    auto r = interp::train_sae(sae, *src, o);
    return std::make_pair(r, interp::feature_recovery(data.features(), sae.W_dec()));
  };
  auto [plain, rec_plain] = run(0);
  auto [resampled, rec_resampled] = run(100);
  std::printf("  without resampling: dead %.3f, MMCS %.3f; with: %lld resampled, dead %.3f, MMCS %.3f\n",
              plain.dead_fraction, rec_plain.mmcs, static_cast<long long>(resampled.resampled), resampled.dead_fraction,
              rec_resampled.mmcs);
  EXPECT_EQ(plain.resampled, 0);
  EXPECT_GT(resampled.resampled, 0);
  EXPECT_GE(plain.dead_fraction, 0.5) << "the killed latents stay dead without resampling";
  EXPECT_GE(resampled.resampled, 64);
  EXPECT_LT(resampled.dead_fraction, 0.25);
}

// A source that turns bad after a number of batches.
class PoisonedSource : public interp::ActivationSource {
 public:
  PoisonedSource(interp::SyntheticData& d, int good) : d_(d), good_(good) {}
  at::Tensor next(int64_t n) override {
    at::Tensor x = d_.sample(n);
    if (calls_++ > good_) x[0][0] = std::numeric_limits<float>::quiet_NaN();
    return x;
  }
  int64_t d_in() const override { return d_.features().size(1); }
  std::string describe() const override { return "poisoned"; }

 private:
  interp::SyntheticData& d_;
  int good_, calls_ = 0;
};

TEST(Train, NaNStopsWithAClearErrorAndKeepsTheCheckpoint) {
  interp::SyntheticConfig sc;
  sc.n_features = 64;
  sc.d = 32;
  interp::SyntheticData data(sc);
  PoisonedSource source(data, 30);  // call 0 initialises; steps 0..29 are good
  interp::SAEConfig c;
  c.d_in = 32;
  c.d_sae = 64;
  c.k = 4;
  interp::SAE sae(c);
  interp::TrainOptions o;
  o.steps = 100;
  o.batch = 128;
  o.checkpoint_every = 10;
  o.checkpoint_path = ::testing::TempDir() + "/nan.ckpt";
  std::filesystem::remove(o.checkpoint_path);
  try {
    interp::train_sae(sae, source, o);
    FAIL() << "no error";
  } catch (const interp::Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("the loss is nan at step 30"), std::string::npos) << m;
    EXPECT_NE(m.find("keeps the weights of step 29"), std::string::npos) << m;
    EXPECT_NE(m.find("nan.ckpt its last checkpoint"), std::string::npos) << m;
  }
  for (const auto& p : sae.parameters()) EXPECT_TRUE(p.isfinite().all().item<bool>());
  auto ckpt = interp::safetensors_load(o.checkpoint_path);
  EXPECT_EQ(ckpt.metadata.at("step"), "30");
}

// The tiny language model on packed Brown fixture text (contexts of 32).
struct BrownLM {
  interp::HookedModel model = interp::HookedModel::load(interp::test::fixture("tiny_lm_trace.pt"));
  interp::Tokenizer tok = interp::Tokenizer::load(interp::test::fixture("brown-1k.model"));
  interp::PackedContexts contexts = pack(tok);
  static interp::PackedContexts pack(const interp::Tokenizer& t) {
    interp::PackOptions po;
    po.ctx = 32;
    return interp::PackedContexts(interp::tokenize(interp::corpus_load(interp::test::fixture("brown")), t), po);
  }
};

// evaluate_sae against exact invariants: a perfect reconstruction and an all-zero one.
TEST(Eval, PerfectAndZeroReconstructionBracketTheMetrics) {
  BrownLM lm;
  auto& model = lm.model;
  auto& contexts = lm.contexts;
  interp::SAEConfig c;
  c.architecture = "standard";
  c.d_in = 32;
  c.d_sae = 64;
  c.hook_name = "blocks.0.hook_resid_post";
  interp::SAE perfect(c);
  {  // h = [relu(x), relu(-x)], x_hat = relu(x) - relu(-x) = x exactly
    at::NoGradGuard g;
    at::Tensor eye = at::eye(32);
    perfect.W_enc().detach().copy_(at::cat({eye, -eye}, 1));
    perfect.W_dec().detach().copy_(at::cat({eye, -eye}, 0));
    perfect.b_enc().detach().zero_();
    perfect.b_dec().detach().zero_();
  }
  interp::SAEEvalOptions o;
  o.tokens = 32 * 24;
  o.batch = 8;
  auto e = interp::evaluate_sae(perfect, model, contexts, o);
  std::printf("%s", e.summary().c_str());
  EXPECT_EQ(e.tokens, 32 * 24);
  EXPECT_NEAR(e.fvu, 0, 1e-9);
  EXPECT_NEAR(e.kl_sae, 0, 1e-6);
  EXPECT_NEAR(e.ce_sae, e.ce_clean, 1e-6);
  EXPECT_NEAR(e.ce_loss_recovered, 1, 1e-4);
  EXPECT_NEAR(e.l0, 32, 1e-9);  // one of each pair fires for every nonzero coordinate
  EXPECT_GT(e.kl_zero, 0.01) << "zero-ablating the residual stream must change the output";
  EXPECT_NEAR(e.dead_fraction, 0, 1e-9);
  // the clean CE, recomputed here from the model's logits over the same three batches
  double ce = 0;
  for (int b = 0; b < 3; ++b) {
    at::Tensor tokens = contexts.batch(8 * b, 8);
    at::Tensor lp = model.forward(tokens).narrow(1, 0, 31).log_softmax(-1);
    ce += -lp.gather(-1, tokens.narrow(1, 1, 31).unsqueeze(-1)).mean().item<double>() / 3;
  }
  EXPECT_NEAR(e.ce_clean, ce, 1e-5);
  interp::SAE zero(c);
  {
    at::NoGradGuard g;
    zero.W_dec().detach().zero_();
  }
  auto z = interp::evaluate_sae(zero, model, contexts, o);
  EXPECT_NEAR(z.ce_sae, z.ce_zero, 1e-6);
  EXPECT_NEAR(z.ce_loss_recovered, 0, 1e-4);
  EXPECT_GT(z.fvu, 0.99);  // x_hat = b_dec = 0: FVU = sum |x|^2 / sum |x - mean|^2 >= 1
  auto json = nlohmann::json::parse(e.to_json());
  EXPECT_EQ(json["hook"], "blocks.0.hook_resid_post");
  EXPECT_EQ(json["density_histogram"]["counts"].size(), 16u);
  // a hook whose width differs from d_in is refused
  o.hook = "blocks.0.mlp.hook_post";
  EXPECT_THROW(interp::evaluate_sae(perfect, model, contexts, o), interp::Error);
}

TEST(Train, LiveSourceGivesTheModelsActivations) {
  BrownLM lm;
  auto& model = lm.model;
  auto& contexts = lm.contexts;
  auto src = interp::live_source(model, contexts, "blocks.1.hook_resid_pre", 4);
  EXPECT_EQ(src->d_in(), 32);
  at::Tensor rows = src->next(200);  // 6.25 contexts: crosses forward boundaries
  auto [l, cache] = model.run_with_cache(contexts.batch(0, 8), interp::names_filter("blocks.1.hook_resid_pre"));
  at::Tensor want = cache["blocks.1.hook_resid_pre"].reshape({-1, 32}).narrow(0, 0, 200);
  EXPECT_TRUE(interp::test::close(rows, want, 1e-5, "live rows"));
  EXPECT_THROW(interp::live_source(model, contexts, "blocks.1.attn.hook_pattern"), interp::Error);
}

// Forward, losses and gradients of every architecture against plain-PyTorch goldens
// (models/make_sae_goldens.py), loaded from SAELens-layout folders that Python wrote.
class Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Golden, ForwardLossesAndGradientsMatchPyTorch) {
  const std::string dir = interp::test::fixture("sae/" + GetParam());
  interp::SAE sae = interp::SAE::load(dir);
  auto g = interp::safetensors_load(dir + "/golden.safetensors");
  auto meta = [&](const char* k) { return std::stod(g.metadata.at(k)); };
  EXPECT_EQ(sae.config().architecture, GetParam());
  EXPECT_EQ(sae.config().hook_name, "blocks.0.hook_resid_post");
  if (interp::sae_architecture(GetParam()).uses_k) EXPECT_EQ(sae.config().k, 4) << "k from activation_fn_kwargs";
  if (GetParam() == "matryoshka") EXPECT_EQ(sae.config().prefixes(), (std::vector<int64_t>{6, 18, 48}));
  sae.set_loss_coefficients(meta("l1_coefficient"), static_cast<int64_t>(meta("aux_k")), meta("aux_coefficient"),
                            meta("bandwidth"));
  const auto& t = g.tensors;
  auto out = sae.forward(t.at("x"), 1.0, t.at("dead").to(at::kBool));
  EXPECT_TRUE(interp::test::close(out.dense_h(), t.at("h"), 1e-5, "h"));
  EXPECT_TRUE(at::equal(out.fired(), t.at("h").gt(0).any(0)));
  EXPECT_TRUE(interp::test::close(out.x_hat, t.at("x_hat"), 1e-5, "x_hat"));
  for (const char* k : {"mse", "sparsity", "aux", "extra", "loss"}) {
    const std::string s = k;
    at::Tensor got = s == "mse" ? out.mse : s == "sparsity" ? out.sparsity : s == "aux" ? out.aux : s == "extra" ? out.extra : out.loss;
    auto r = interp::test::close(got, t.at(k), 1e-4, k);
    EXPECT_TRUE(r);
    std::printf("  %s\n", r.message());
  }
  // parameters() order: W_enc, W_dec, b_enc, b_dec, then the architecture's own by name
  std::vector<std::string> names = {"W_enc", "W_dec", interp::sae_architecture(GetParam()).saelens_b_enc, "b_dec"};
  for (const auto& [name, v] : sae.extra_parameters()) names.push_back(name);
  auto grads = torch::autograd::grad({out.loss}, sae.parameters());
  ASSERT_EQ(grads.size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    auto r = interp::test::close(grads[i], t.at("grad." + names[i]), 1e-4, "grad " + names[i]);
    EXPECT_TRUE(r);
    std::printf("  %s\n", r.message());
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, Golden,
                         ::testing::Values("standard", "topk", "batchtopk", "jumprelu", "gated", "matryoshka"));

}  // namespace

// ---------------------------------------------------------------------------------------------
// Other tools' layouts, against models/make_sae_format_goldens.py (plain torch, following each
// tool's documented layout and arithmetic).

namespace {
std::string formats(const std::string& rel = "") {
  return interp::test::fixture("sae_formats") + (rel.empty() ? "" : "/" + rel);
}
}  // namespace

TEST(Formats, SparsifyAndSAELensFoldersReproduceTheirTools) {
  auto golden = interp::safetensors_load(formats("golden.safetensors"));
  const at::Tensor& x = golden.tensors.at("x");
  int n = 0;
  for (const std::string name : {"sparsify/layers.0", "sparsify/layers.1", "saelens_release/blocks.0.hook_resid_pre",
                                 "saelens_release/blocks.1.hook_resid_pre", "dictionary_learning/standard",
                                 "dictionary_learning/topk", "dictionary_learning/batchtopk",
                                 "dictionary_learning/jumprelu", "dictionary_learning/gated",
                                 "saelens_norm/constant_norm_rescale", "saelens_norm/layer_norm"}) {
    interp::SAE sae = interp::SAE::load(formats(name));
    at::NoGradGuard g;
    at::Tensor h = sae.encode(x);
    auto rh = interp::test::close(h, golden.tensors.at(name + ".h"), 1e-5, name + " latents");
    auto rx = interp::test::close(sae.decode(h, x), golden.tensors.at(name + ".x_hat"), 1e-5, name + " reconstruction");
    EXPECT_TRUE(at::equal(sae.reconstruct(x), sae.decode(h, x))) << name;
    EXPECT_TRUE(rh);
    EXPECT_TRUE(rx);
    std::printf("  %s\n  %s\n", rh.message(), rx.message());
    ++n;
  }
  EXPECT_EQ(n, 11);
  auto dl = interp::sae_inspect(formats("dictionary_learning"));
  ASSERT_EQ(dl.size(), 5u);
  std::vector<std::string> archs;
  for (const auto& i : dl) archs.push_back(i.config.architecture + "/" + i.format);
  EXPECT_EQ(archs, (std::vector<std::string>{"batchtopk/dictionary_learning", "gated/dictionary_learning",
                                             "jumprelu/dictionary_learning",
                                             "standard/dictionary_learning", "topk/dictionary_learning"}));
  EXPECT_EQ(dl[0].config.hook_name, "resid_post_layer_1");
  auto info = interp::sae_inspect(formats("sparsify/layers.1"));
  ASSERT_EQ(info.size(), 1u);
  EXPECT_EQ(info[0].format, "sparsify");
  EXPECT_EQ(info[0].config.architecture, "topk");
  EXPECT_EQ(info[0].config.k, 4);
  EXPECT_EQ(info[0].config.hook_name, "layers.1");
  EXPECT_EQ(info[0].weights_dtype, "BF16");
}

TEST(Formats, AFolderOfSAEsByHookIsListed) {
  auto all = interp::sae_inspect(formats("saelens_release"));
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].config.hook_name, "blocks.0.hook_resid_pre");
  EXPECT_EQ(all[1].config.hook_name, "blocks.1.hook_resid_pre");
  EXPECT_TRUE(all[0].notes.empty());
  ASSERT_EQ(all[1].notes.size(), 1u);
  EXPECT_NE(all[1].notes[0].find("apply_b_dec_to_input = false"), std::string::npos);
  try {
    interp::SAE::load(formats("saelens_release"));
    ADD_FAILURE() << "no error";
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds 2 SAEs, one per folder: blocks.0.hook_resid_pre, blocks.1.hook_resid_pre"),
              std::string::npos) << e.what();
  }
  try {
    interp::SAE::load(formats());
    ADD_FAILURE() << "no error";
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no SAE here"), std::string::npos) << e.what();
  }
}

TEST(Formats, ABrokenAePtIsAClearError) {
  const std::string dir = ::testing::TempDir() + "/sae-broken-ae";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/ae.pt") << "this is not a torch.save file";
  try {
    interp::SAE::load(dir);
    ADD_FAILURE() << "no error";
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a state dict saved with torch.save"), std::string::npos) << e.what();
  }
}

// Mutation fuzzing of every reader, in CI: each file of each layout's folder is truncated, has bytes
// flipped, or has bytes inserted (seeded), and SAE::load and sae_inspect must either read it or throw
// interp::Error; any other exception (a raw library error) or a crash fails. A libFuzzer harness is
// the deeper version of this (issue 13); this one runs everywhere.
TEST(Formats, MutatedFilesGiveAClearErrorOrLoad) {
  namespace fs = std::filesystem;
  const std::vector<std::pair<std::string, std::string>> targets = {
      {"sae_formats/saelens_release/blocks.0.hook_resid_pre", "cfg.json"},
      {"sae_formats/saelens_release/blocks.0.hook_resid_pre", "sae_weights.safetensors"},
      {"sae_formats/sparsify/layers.1", "cfg.json"},
      {"sae_formats/sparsify/layers.1", "sae.safetensors"},
      {"sae_formats/dictionary_learning/jumprelu", "ae.pt"},
      {"sae_formats/dictionary_learning/gated", "ae.pt"},
      {"sae_formats/dictionary_learning/topk", "config.json"},
      {"sae/gated", "sae_weights.safetensors"},
      {"sae/matryoshka", "cfg.json"}};
  std::mt19937_64 rng(12);
  int loaded = 0, refused = 0;
  for (const auto& [rel, file] : targets) {
    const std::string src = interp::test::fixture(rel);
    std::ifstream in(src + "/" + file, std::ios::binary);
    const std::string original((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_FALSE(original.empty()) << src << "/" << file;
    const std::string dir = ::testing::TempDir() + "/sae-mutated";
    for (int trial = 0; trial < 200; ++trial) {
      fs::remove_all(dir);
      fs::create_directories(dir);
      for (const auto& e : fs::directory_iterator(src))
        if (e.is_regular_file()) fs::copy_file(e.path(), dir + "/" + e.path().filename().string());
      std::string m = original;
      switch (trial % 3) {
        case 0: m.resize(rng() % m.size()); break;  // truncated
        case 1:
          for (int i = 0; i < 1 + static_cast<int>(rng() % 8); ++i) m[rng() % m.size()] = static_cast<char>(rng());
          break;
        default: m.insert(rng() % m.size(), std::string(1 + rng() % 16, static_cast<char>(rng()))); break;
      }
      std::ofstream(dir + "/" + file, std::ios::binary | std::ios::trunc) << m;
      try {
        interp::SAE sae = interp::SAE::load(dir);
        at::NoGradGuard g;
        (void)sae.decode(sae.encode(at::randn({2, sae.config().d_in})));
        (void)interp::sae_inspect(dir);
        ++loaded;
      } catch (const interp::Error&) {
        ++refused;
      } catch (const std::exception& e) {
        ADD_FAILURE() << rel << "/" << file << " trial " << trial << ": not an interp::Error: " << e.what();
      }
    }
  }
  std::printf("  %d mutated folders: %d loaded, %d refused with interp::Error\n", loaded + refused, loaded, refused);
  EXPECT_GT(refused, 0);
}

// SAELens's per-token normalisations: decoding needs the token's statistics, so decode(h) alone is
// an error rather than a number in the wrong units; an unknown name is refused; steering maps the
// decoder direction with each token's own statistics.
TEST(Formats, PerTokenNormalisationNeedsTheTokensStatistics) {
  at::NoGradGuard g;
  auto golden = interp::safetensors_load(formats("golden.safetensors"));
  const at::Tensor& x = golden.tensors.at("x");
  for (const std::string norm : {"constant_norm_rescale", "layer_norm"}) {
    interp::SAE sae = interp::SAE::load(formats("saelens_norm/" + norm));
    EXPECT_TRUE(sae.per_token_norm());
    EXPECT_EQ(sae.config().normalize_activations, norm);
    try {
      sae.decode(sae.encode(x));
      ADD_FAILURE() << "no error";
    } catch (const interp::Error& e) {
      EXPECT_NE(std::string(e.what()).find("call decode(h, x) or reconstruct(x)"), std::string::npos) << e.what();
    }
    EXPECT_THROW(sae.decode(sae.encode(x), x.narrow(0, 0, 3)), interp::Error);
    EXPECT_THROW(sae.save_sparsify(::testing::TempDir() + "/sae-norm-sparsify"), interp::Error);
    // saved in SAELens's layout and read back: the same SAE
    const std::string dir = ::testing::TempDir() + "/sae-norm-" + norm;
    std::filesystem::remove_all(dir);
    sae.save(dir);
    interp::SAE back = interp::SAE::load(dir);
    EXPECT_EQ(back.config().normalize_activations, norm);
    EXPECT_TRUE(interp::test::close(back.reconstruct(x), golden.tensors.at("saelens_norm/" + norm + ".x_hat"), 1e-5,
                                    norm + " saved and read back"));
  }
  const std::string src = formats("saelens_release/blocks.0.hook_resid_pre");
  const std::string dir = ::testing::TempDir() + "/sae-norm-unknown";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(src + "/sae_weights.safetensors", dir + "/sae_weights.safetensors");
  auto cfg = nlohmann::json::parse(std::ifstream(src + "/cfg.json"));
  cfg["normalize_activations"] = "rms_norm";
  std::ofstream(dir + "/cfg.json") << cfg.dump();
  try {
    interp::SAE::load(dir);
    ADD_FAILURE() << "no error";
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'rms_norm' is not one SAELens writes"), std::string::npos) << e.what();
  }
}

// Files whose meaning is ambiguous are refused with the field named, not read with a guess.
TEST(Formats, AmbiguousConfigsAndDamagedWeightsAreRefused) {
  const std::string src = formats("saelens_norm/layer_norm");  // a TopK SAE with k in both places
  const auto base = nlohmann::json::parse(std::ifstream(src + "/cfg.json"));
  struct Case {
    std::string name;
    std::function<void(nlohmann::json&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"no-k", [](nlohmann::json& c) { c.erase("k"), c["activation_fn_kwargs"].erase("k"); },
       "a topk SAE needs k (active latents per row)"},
      {"tanh-relu", [](nlohmann::json& c) { c["architecture"] = "standard", c["activation_fn_str"] = "tanh-relu"; },
       "activation function 'tanh-relu' is not one interp reads"},
      {"d-in-16.5", [](nlohmann::json& c) { c["d_in"] = 16.5; }, "'d_in' must be an integer (got 16.5)"},
      {"d-in-text", [](nlohmann::json& c) { c["d_in"] = "16"; }, "'d_in' must be an integer (got \"16\")"},
      {"k-2.5", [](nlohmann::json& c) { c["k"] = 2.5; }, "'k' must be an integer (got 2.5)"},
      {"norm", [](nlohmann::json& c) { c["normalize_activations"] = "rms"; }, "'rms' is not one SAELens writes"},
  };
  for (const Case& c : cases) {
    const std::string dir = ::testing::TempDir() + "/sae-ambiguous-" + c.name;
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(src + "/sae_weights.safetensors", dir + "/sae_weights.safetensors");
    nlohmann::json cfg = base;
    c.edit(cfg);
    std::ofstream(dir + "/cfg.json") << cfg.dump();
    try {
      interp::SAE::load(dir);
      ADD_FAILURE() << c.name << ": no error";
    } catch (const interp::Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << c.name << ": " << e.what();
    }
  }
  // NaN or infinite weights
  const std::string dir = ::testing::TempDir() + "/sae-nan-weights";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(src + "/cfg.json", dir + "/cfg.json");
  auto w = interp::safetensors_load(src + "/sae_weights.safetensors");
  std::map<std::string, at::Tensor> t(w.tensors.begin(), w.tensors.end());
  t.at("W_dec")[3][1] = std::numeric_limits<float>::infinity();
  interp::safetensors_save(dir + "/sae_weights.safetensors", t, w.metadata);
  try {
    interp::SAE::load(dir);
    ADD_FAILURE() << "no error";
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'W_dec' holds 1 NaN or infinite values"), std::string::npos) << e.what();
  }
}

TEST(Formats, WritingSparsifyReadsBackTheSameSAE) {
  interp::SAEConfig cfg;
  cfg.architecture = "topk";
  cfg.d_in = 16, cfg.d_sae = 64, cfg.k = 4, cfg.seed = 3;
  interp::SAE sae(cfg);
  sae.set_norm_scale(2.5);  // folded into the weights on save
  const std::string dir = ::testing::TempDir() + "/sae-sparsify-out/layers.3";
  std::filesystem::remove_all(dir);
  sae.save_sparsify(dir);
  interp::SAE back = interp::SAE::load(dir);
  at::NoGradGuard g;
  at::Tensor x = at::randn({20, 16});
  EXPECT_TRUE(interp::test::close(back.decode(back.encode(x)), sae.decode(sae.encode(x)), 1e-5, "round trip"));
  EXPECT_EQ(back.config().hook_name, "layers.3");
  interp::SAEConfig std_cfg = cfg;
  std_cfg.architecture = "standard";
  EXPECT_THROW(interp::SAE(std_cfg).save_sparsify(dir + "-x"), interp::Error);
}

// Activations made by other tools: every row once per epoch, shuffled, from .npy and .safetensors.
TEST(TensorFiles, EveryRowOncePerEpochFromNpyAndSafetensors) {
  auto golden = interp::safetensors_load(formats("golden.safetensors"));
  // rows ordered by a fixed projection (f16 rows share first values; projections do not)
  const at::Tensor w = at::linspace(1.0, 2.0, 16, at::kDouble).pow(3);
  auto sorted_rows = [&](const at::Tensor& t) {
    return t.index_select(0, std::get<1>(t.to(at::kDouble).matmul(w).sort()));
  };
  const at::Tensor npy = golden.tensors.at("activations/part0.npy");
  const at::Tensor st = golden.tensors.at("activations/part1.safetensors");
  // one file: the .npy (1000 rows), small chunks and windows so the shuffle crosses chunks
  auto src = interp::tensor_files_source(formats("activations/part0.npy"), "", 5, 300, 64);
  EXPECT_EQ(src->d_in(), 16);
  at::Tensor epoch = src->next(1000);
  EXPECT_FALSE(at::equal(epoch, npy)) << "not shuffled";
  EXPECT_TRUE(interp::test::close(sorted_rows(epoch), sorted_rows(npy), 0, "the .npy's rows, once each"));
  EXPECT_TRUE(interp::test::close(sorted_rows(src->next(1000)), sorted_rows(npy), 0, "second epoch"));
  // the folder: both files (the safetensors needs the tensor's name: it also holds "tokens")
  try {
    interp::tensor_files_source(formats("activations"), "", 5, 300, 64);
    ADD_FAILURE() << "no error";
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds 2 tensors (acts, tokens); name the activations with --hook"),
              std::string::npos) << e.what();
  }
  auto both = interp::tensor_files_source(formats("activations"), "acts", 9, 500, 100);
  at::Tensor all = both->next(1600);
  EXPECT_TRUE(interp::test::close(sorted_rows(all), sorted_rows(at::cat({npy, st})), 0, "both files' rows, once each"));
  // the same seed gives the same order
  EXPECT_TRUE(at::equal(interp::tensor_files_source(formats("activations"), "acts", 9, 500, 100)->next(1600), all));
  EXPECT_THROW(interp::tensor_files_source(formats("golden.safetensors"), "", 0), interp::Error);  // many tensors
  EXPECT_THROW(interp::tensor_files_source(formats("no-such"), "", 0), interp::Error);
}

// Steering against models/make_steer_goldens.py: the tiny model run by reference.py with the latent's
// decoder direction added (or the latent clamped) by hand at blocks.0.hook_resid_post.
TEST(Steer, AddAndClampMatchAHandSteeredPyTorchRun) {
  auto golden = interp::safetensors_load(interp::test::fixture("steer/golden.safetensors"));
  auto g = [&](const std::string& n) { return golden.tensors.at(n); };
  auto model = interp::HookedModel::load(interp::test::fixture("tiny_script.pt"));
  interp::SAE sae = interp::SAE::load(interp::test::fixture("steer/sae"));
  const int64_t n_new = std::stoll(golden.metadata.at("n_new"));
  EXPECT_TRUE(at::equal(interp::generate_greedy(model, g("prompt"), n_new), g("plain.tokens")));
  for (const std::string mode : {"add", "clamp"}) {
    interp::SteerOptions o;
    o.feature = std::stoll(golden.metadata.at("feature"));
    o.scale = std::stod(golden.metadata.at(mode + "_scale"));
    o.mode = mode;
    auto hook = interp::steering_hook(model, sae, o);
    EXPECT_EQ(hook.first, golden.metadata.at("hook"));
    auto r = interp::test::close(model.run_with_hooks(g("prompt"), {hook}), g(mode + ".logits"), 1e-5, mode + " logits");
    EXPECT_TRUE(r);
    std::printf("  %s\n", r.message());
    at::Tensor toks = interp::generate_greedy(model, g("prompt"), n_new, {hook});
    EXPECT_TRUE(at::equal(toks, g(mode + ".tokens"))) << mode << ": " << toks << " vs " << g(mode + ".tokens");
    EXPECT_FALSE(at::equal(toks, g("plain.tokens"))) << "steering changed nothing";
  }
  interp::SteerOptions bad;
  bad.feature = 64;
  EXPECT_THROW(interp::steering_hook(model, sae, bad), interp::Error);
  bad.feature = 0;
  bad.mode = "multiply";
  EXPECT_THROW(interp::steering_hook(model, sae, bad), interp::Error);
  bad.mode = "add";
  bad.hook = "blocks.0.attn.hook_pattern";  // last axis is not d_in
  EXPECT_THROW(interp::steering_hook(model, sae, bad), interp::Error);
}

// With an SAE that normalises each token, the decoder direction reaches the activations scaled by
// each token's own statistics; checked against the formulas written out here.
TEST(Steer, PerTokenNormalisationScalesTheDirectionPerToken) {
  auto model = interp::HookedModel::load(interp::test::fixture("tiny_script.pt"));
  at::manual_seed(21);
  at::Tensor x = at::randn({2, 5, 32}) * 3 + 1;
  const at::Tensor rows = x.reshape({-1, 32});
  for (const std::string norm : {"constant_norm_rescale", "layer_norm"}) {
    interp::SAEConfig c;
    c.architecture = "standard";
    c.d_in = 32, c.d_sae = 64, c.seed = 4;
    c.hook_name = "blocks.0.hook_resid_post";
    c.normalize_activations = norm;
    interp::SAE sae(c);
    {
      at::NoGradGuard g;
      const_cast<at::Tensor&>(sae.b_enc()).normal_(0, 0.3);
      const_cast<at::Tensor&>(sae.b_dec()).normal_(0, 0.3);
    }
    const at::Tensor Wd = sae.W_dec().detach(), We = sae.W_enc().detach();
    const at::Tensor be = sae.b_enc().detach(), bd = sae.b_dec().detach();
    at::Tensor mu = rows.mean(-1, true), sd = (rows - mu).std(-1, true, true);
    at::Tensor coeff = std::sqrt(32.0) / rows.norm(2, -1, true);
    at::Tensor xin = norm == "layer_norm" ? (rows - mu) / (sd + 1e-5) : rows * coeff;
    at::Tensor to_raw = norm == "layer_norm" ? sd : 1.0 / coeff;  // [N, 1]: how a unit moves per token
    const int64_t f = 7;
    at::Tensor h_f = at::relu(at::matmul(xin - bd, We) + be).select(1, f).unsqueeze(1);
    for (const std::string mode : {"add", "clamp"}) {
      interp::SteerOptions o;
      o.feature = f, o.scale = 2.5, o.mode = mode;
      auto hook = interp::steering_hook(model, sae, o);
      at::Tensor got = x.clone();
      hook.second(got, hook.first);
      at::Tensor amount = mode == "add" ? at::full_like(h_f, 2.5) : 2.5 - h_f;
      at::Tensor want = (rows + amount * to_raw * Wd[f].unsqueeze(0)).reshape(x.sizes());
      auto r = interp::test::close(got, want, 1e-4, norm + " " + mode);
      EXPECT_TRUE(r);
      std::printf("  %s\n", r.message());
    }
  }
}

// TopK training gradients at a realistic sparsity (4 of 512 latents) against autograd through plain
// dense ops written here (the goldens' sizes are small; this one is where a sparse backward would act).
TEST(SparseBackward, TopKGradientsEqualTheDenseComputation) {
  interp::SAEConfig cfg;
  cfg.architecture = "topk";
  cfg.d_in = 32, cfg.d_sae = 512, cfg.k = 4, cfg.seed = 11;
  interp::SAE sae(cfg);
  at::manual_seed(3);
  at::Tensor x = at::randn({64, 32});
  auto out = sae.forward(x);
  auto grads = torch::autograd::grad({out.loss}, sae.parameters());
  // independent: the same TopK forward written with dense ops
  std::vector<at::Tensor> p;
  for (const auto& t : sae.parameters()) p.push_back(t.detach().clone().set_requires_grad(true));
  const at::Tensor &W_enc = p[0], &W_dec = p[1], &b_enc = p[2], &b_dec = p[3];
  at::Tensor pre = at::matmul(x - b_dec, W_enc) + b_enc;
  auto [vals, idx] = pre.topk(4, -1);
  at::Tensor h = at::zeros_like(pre).scatter(-1, idx, at::relu(vals));
  at::Tensor loss = (at::matmul(h, W_dec) + b_dec - x).pow(2).sum(-1).mean();
  auto want = torch::autograd::grad({loss}, p);
  const char* names[] = {"W_enc", "W_dec", "b_enc", "b_dec"};
  for (size_t i = 0; i < 4; ++i) {
    auto r = interp::test::close(grads[i], want[i], 1e-5, std::string("grad ") + names[i]);
    EXPECT_TRUE(r);
    std::printf("  %s\n", r.message());
  }
}
