// interp features against independent references: the streamed per-latent statistics against a
// brute-force pass over the same dense activations; logit effects against the final norm and the
// unembedding computed here from the TorchScript module's own parameters; the site in a real
// browser (Debian's chromium, headless) when it is installed.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>

#include "interp/error.h"
#include "interp/features.h"
#include "interp/hooks.h"
#include "interp/sae.h"
#include "interp/tokenizer.h"
#include "test_util.h"

using interp::test::fixture;
namespace fs = std::filesystem;

namespace {

TEST(Features, CoarseTags) {
  EXPECT_EQ(interp::coarse_tag("np-tl"), "np");
  EXPECT_EQ(interp::coarse_tag("fw-nn"), "nn");
  EXPECT_EQ(interp::coarse_tag("nn-tl-hl"), "nn");
  EXPECT_EQ(interp::coarse_tag("vbd"), "vbd");
  EXPECT_EQ(interp::coarse_tag("ppss+md"), "ppss+md");
  EXPECT_EQ(interp::coarse_tag("-hl"), "-hl");  // nothing left: kept as it is
}

// Sparse activations with ties broken by chance only: values drawn from a continuous distribution.
struct Synthetic {
  int64_t n_ctx = 6, ctx = 10, d = 7;
  at::Tensor h, tokens, tags;
  std::vector<std::string> tag_names = {"nn", "nn-tl", "vb", "jj", "fw-vb"};  // coarse: nn nn vb jj vb
  Synthetic() {
    at::manual_seed(3);
    h = at::rand({n_ctx * ctx, d}) * 4;
    h = h * (at::rand({n_ctx * ctx, d}) < 0.35);  // ~35% firing
    tokens = at::randint(0, 50, {n_ctx, ctx}, at::kInt);
    tags = at::randint(-1, 5, {n_ctx, ctx}, at::kShort);
  }
};

TEST(Features, CollectorMatchesBruteForce) {
  Synthetic S;
  interp::FeatureOptions o;
  o.top_k = 3;
  o.samples = 1000;  // more than any latent's firings: the reservoir holds every firing
  o.before = 2;
  o.after = 1;
  o.tag_top = 4;
  o.min_tagged = 2;
  interp::FeatureCollector c(S.d, S.ctx, S.tag_names, o);
  // two calls: rows keep counting across them
  c.add(S.h.narrow(0, 0, 2 * S.ctx), S.tokens.narrow(0, 0, 2), S.tags.narrow(0, 0, 2));
  c.add(S.h.narrow(0, 2 * S.ctx, 4 * S.ctx), S.tokens.narrow(0, 2, 4), S.tags.narrow(0, 2, 4));
  interp::FeatureStats st = c.finish();
  ASSERT_EQ(st.tokens, S.n_ctx * (S.ctx - 1));  // position 0 skipped
  const std::map<int, std::string> coarse = {{0, "nn"}, {1, "nn"}, {2, "vb"}, {3, "jj"}, {4, "vb"}};
  auto H = S.h.accessor<float, 2>();
  auto T = S.tokens.accessor<int32_t, 2>();
  auto G = S.tags.accessor<int16_t, 2>();
  int scored = 0;
  for (int64_t j = 0; j < S.d; ++j) {
    // brute force: every firing (row, value), skipping position 0
    std::vector<std::pair<float, int64_t>> fires;
    for (int64_t r = 0; r < S.n_ctx * S.ctx; ++r)
      if (r % S.ctx != 0 && H[r][j] > 0) fires.push_back({H[r][j], r});
    std::sort(fires.begin(), fires.end(), [](auto a, auto b) { return a.first > b.first; });
    const auto& L = st.latents[static_cast<size_t>(j)];
    ASSERT_EQ(L.firings, static_cast<int64_t>(fires.size())) << "latent " << j;
    double sum = 0;
    std::vector<int64_t> hist(st.hist_edges.size() - 1, 0);
    for (auto [v, r] : fires) {
      sum += v;
      size_t b = 0;
      while (b + 1 < hist.size() && std::log10(v) >= st.hist_edges[b + 1]) ++b;
      hist[b]++;
    }
    EXPECT_NEAR(L.mean_act, sum / fires.size(), 1e-5);
    EXPECT_FLOAT_EQ(static_cast<float>(L.max_act), fires[0].first);
    EXPECT_EQ(L.histogram, hist) << "latent " << j;
    EXPECT_NEAR(L.density, static_cast<double>(fires.size()) / st.tokens, 1e-12);
    ASSERT_EQ(L.top.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      const auto& w = L.top[i];
      EXPECT_EQ(w.row, fires[i].second);
      EXPECT_EQ(w.value, fires[i].first);
      const int64_t c0 = w.row / S.ctx, p = w.row % S.ctx, lo = std::max<int64_t>(0, p - 2),
                    hi = std::min<int64_t>(S.ctx - 1, p + 1);
      ASSERT_EQ(static_cast<int64_t>(w.tokens.size()), hi - lo + 1);
      EXPECT_EQ(w.center, p - lo);
      for (int64_t q = lo; q <= hi; ++q) {
        EXPECT_EQ(w.tokens[static_cast<size_t>(q - lo)], T[c0][q]);
        EXPECT_EQ(w.acts[static_cast<size_t>(q - lo)], H[c0 * S.ctx + q][j]);
      }
    }
    // the reservoir kept every firing
    std::set<int64_t> rows, want;
    for (const auto& w : L.samples) rows.insert(w.row);
    for (auto [v, r] : fires) want.insert(r);
    EXPECT_EQ(rows, want);
    // tags of the top 4 activations, coarse
    std::map<std::string, int64_t> counts;
    std::set<int32_t> distinct;
    int64_t tagged = 0;
    for (size_t i = 0; i < 4 && i < fires.size(); ++i) {
      const int64_t r = fires[i].second;
      distinct.insert(T[r / S.ctx][r % S.ctx]);
      const int t = G[r / S.ctx][r % S.ctx];
      if (t >= 0) {
        counts[coarse.at(t)]++;
        ++tagged;
      }
    }
    EXPECT_EQ(L.tagged, tagged);
    EXPECT_EQ(L.distinct_tokens, static_cast<int64_t>(distinct.size()));
    // every firing, activation-weighted
    std::map<std::string, double> mass;
    int64_t n_tagged = 0;
    for (auto [v, r] : fires)
      if (const int t = G[r / S.ctx][r % S.ctx]; t >= 0) {
        mass[coarse.at(t)] += v;
        ++n_tagged;
      }
    double total = 0, top = 0;
    for (auto& [k, m] : mass) total += m, top = std::max(top, m);
    if (n_tagged >= 2) EXPECT_NEAR(L.firing_purity, top / total, 1e-9) << "latent " << j;
    else EXPECT_EQ(L.firing_purity, -1);
    int64_t best = 0;
    for (auto& [k, v] : counts) best = std::max(best, v);
    if (tagged >= 2) {
      ++scored;
      EXPECT_NEAR(L.purity, static_cast<double>(best) / tagged, 1e-12) << "latent " << j;
      EXPECT_EQ(L.tags.front().second, best);
    } else {
      EXPECT_EQ(L.purity, -1);
    }
  }
  EXPECT_EQ(st.scored(), scored);
  EXPECT_GT(scored, 0);
  int64_t multi = 0;
  for (const auto& L : st.latents) multi += L.purity >= 0.8 && L.distinct_tokens >= 5;
  EXPECT_EQ(st.pure_multi_token(), multi);
}

TEST(Features, ReservoirIsAUniformSampleOfFirings) {
  // One latent firing on every token with value = its row: a uniform sample of size 20 out of 990
  // firings has mean row ~ 495; over 40 seeds the mean of means is within a few standard errors.
  const int64_t ctx = 100, n = 10;
  at::Tensor h = at::arange(1, n * ctx + 1, at::kFloat).unsqueeze(1);
  at::Tensor tokens = at::zeros({n, ctx}, at::kInt);
  double total = 0;
  const int seeds = 40;
  for (int s = 0; s < seeds; ++s) {
    interp::FeatureOptions o;
    o.samples = 20;
    o.seed = static_cast<uint64_t>(s);
    interp::FeatureCollector c(1, ctx, {}, o);
    c.add(h, tokens, {});
    auto st = c.finish();
    ASSERT_EQ(st.latents[0].samples.size(), 20u);
    for (const auto& w : st.latents[0].samples) total += static_cast<double>(w.row);
  }
  const double mean = total / (seeds * 20), expect = 499.5 + 0.5;  // rows 1..999 without multiples of 100
  const double se = 289.0 / std::sqrt(seeds * 20.0);
  std::printf("reservoir: mean row %.1f, uniform %.1f, standard error %.1f\n", mean, expect, se);
  EXPECT_NEAR(mean, expect, 4 * se);
}

// Logit effects against LN + W_U computed here from the module's parameters.
TEST(Features, LogitEffectsMatchTheFinalNormAndUnembedding) {
  auto model = interp::HookedModel::load(fixture("tiny_script.pt"));
  torch::jit::Module m = torch::jit::load(fixture("tiny_script.pt"));
  std::map<std::string, at::Tensor> p;
  for (const auto& np : m.named_parameters()) p[np.name] = np.value;
  ASSERT_TRUE(p.count("ln_final.w") && p.count("unembed.W_U")) << "fixture layout changed";
  interp::SAEConfig cfg;
  cfg.d_in = model.info().d_model;
  cfg.d_sae = 12;
  cfg.k = 3;
  cfg.seed = 5;
  interp::SAE sae(cfg);
  interp::FeatureStats st;
  st.hook = "blocks.0.hook_resid_post";
  st.latents.resize(12);
  interp::logit_effects(sae, model, st, 5);
  EXPECT_NE(st.logit_path.find("direct path"), std::string::npos) << st.logit_path;
  at::Tensor W = sae.W_dec().detach();
  auto ln = [&](const at::Tensor& x) {
    at::Tensor c = x - x.mean(-1, true);
    return c / (c.pow(2).mean(-1, true) + 1e-5).sqrt() * p["ln_final.w"] + p["ln_final.b"];
  };
  at::Tensor want = ((ln(W) - ln(-W)).matmul(p["unembed.W_U"])) / 2;  // [12, vocab]
  double worst = 0;
  for (int64_t j = 0; j < 12; ++j) {
    auto [tv, ti] = want[j].topk(5);
    auto [bv, bi] = want[j].topk(5, 0, false);
    const auto& L = st.latents[static_cast<size_t>(j)];
    ASSERT_EQ(L.promoted.size(), 5u);
    for (int q = 0; q < 5; ++q) {
      EXPECT_EQ(L.promoted[q].first, ti[q].item<int64_t>());
      EXPECT_EQ(L.suppressed[q].first, bi[q].item<int64_t>());
      worst = std::max({worst, std::abs(L.promoted[q].second - tv[q].item<double>()),
                        std::abs(L.suppressed[q].second - bv[q].item<double>())});
    }
  }
  std::printf("logit effects: max diff %.3g against LN + W_U by hand\n", worst);
  EXPECT_LT(worst, 1e-4);
  st.hook = interp::point_name(interp::PointKind::ResidPost, model.info().n_layers - 1);
  interp::logit_effects(sae, model, st, 5);
  EXPECT_EQ(st.logit_path.rfind("exact", 0), 0u) << st.logit_path;
}

std::string read(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

interp::FeatureStats small_stats() {
  Synthetic S;
  interp::FeatureOptions o;
  interp::FeatureCollector c(S.d, S.ctx, S.tag_names, o);
  c.add(S.h, S.tokens, S.tags);
  auto st = c.finish();
  st.hook = "blocks.0.hook_resid_post";
  st.source = "synthetic";
  st.sae_path = "sae";
  return st;
}

TEST(Features, SiteIsWrittenAndReplacedWhole) {
  auto tok = interp::Tokenizer::load(fixture("brown-1k.model"));
  auto st = small_stats();
  const fs::path dir = fs::path(::testing::TempDir()) / "features-site";
  fs::remove_all(dir);
  interp::write_feature_site(st, tok, dir.string());
  for (const char* f : {"index.html", "latent.html", "features.json", "data/index.js", "data/vocab.js", "data/meta.js"})
    EXPECT_TRUE(fs::exists(dir / f)) << f;
  int pages = 0;
  for (const auto& l : st.latents) pages += l.firings > 0 && fs::exists(dir / "data/latents" / (std::to_string(l.index) + ".js"));
  EXPECT_EQ(pages, st.live());
  auto j = nlohmann::json::parse(read(dir / "features.json"));
  EXPECT_EQ(j["live"], st.live());
  EXPECT_EQ(j["scored"], st.scored());
  // an earlier site is replaced; a folder that is not a site is refused before anything is written
  fs::create_directories(dir / "data/latents/stale");
  interp::write_feature_site(st, tok, dir.string());
  EXPECT_FALSE(fs::exists(dir / "data/latents/stale"));
  const fs::path other = fs::path(::testing::TempDir()) / "features-not-a-site";
  fs::create_directories(other);
  std::ofstream(other / "notes.txt") << "mine";
  EXPECT_THROW(interp::write_feature_site(st, tok, other.string()), interp::Error);
  EXPECT_EQ(read(other / "notes.txt"), "mine");
  // token ids beyond the tokenizer: refused, nothing left behind
  auto bad = st;
  bad.latents[0].top.at(0).tokens[0] = 5000;
  const fs::path none = fs::path(::testing::TempDir()) / "features-bad";
  fs::remove_all(none);
  EXPECT_THROW(interp::write_feature_site(bad, tok, none.string()), interp::Error);
  EXPECT_FALSE(fs::exists(none));
}

// The site in a real browser: the index and a latent page load with no console messages (the pages
// log nothing, so any is an error), their scripts fill the DOM, and the screenshots are not empty.
TEST(Features, SiteRendersInHeadlessChromium) {
  if (std::system("command -v chromium >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "chromium is not installed (apt-get install chromium); the browser check is skipped";
  auto tok = interp::Tokenizer::load(fixture("brown-1k.model"));
  auto st = small_stats();
  const fs::path dir = fs::path(::testing::TempDir()) / "features-browser";
  fs::remove_all(dir);
  interp::write_feature_site(st, tok, dir.string());
  int64_t latent = -1;
  for (const auto& l : st.latents)
    if (l.firings > 0) latent = l.index;
  ASSERT_GE(latent, 0);
  const std::string chrome = "chromium --headless --no-sandbox --disable-gpu --enable-logging=stderr --v=0 ";
  struct Page {
    std::string url, must;
  };
  const std::vector<Page> pages = {
      {"file://" + fs::absolute(dir / "index.html").string(), "latent.html#" + std::to_string(latent)},
      {"file://" + fs::absolute(dir / "latent.html").string() + "#" + std::to_string(latent),
       "Latent " + std::to_string(latent)}};
  int shot = 0;
  for (const auto& p : pages) {
    const fs::path dom = dir.parent_path() / "dom.html";
    // the DOM to a file, chromium's log (console messages included) to us
    std::string log =
        interp::test::shell("(" + chrome + "--virtual-time-budget=5000 --dump-dom '" + p.url + "' > " + dom.string() + ")").out;
    std::string html = read(dom);
    EXPECT_NE(html.find(p.must), std::string::npos) << p.url << ": the page's script did not render; log:\n" << log;
    EXPECT_EQ(html.find(":CONSOLE"), std::string::npos) << "chromium's log went into the DOM file";
    std::istringstream lines(log);
    for (std::string line; std::getline(lines, line);)
      EXPECT_EQ(line.find(":CONSOLE"), std::string::npos) << p.url << ": " << line;
    const fs::path png = dir.parent_path() / ("shot" + std::to_string(shot++) + ".png");
    fs::remove(png);
    interp::test::shell(chrome + "--window-size=1000,800 --screenshot=" + png.string() + " '" + p.url + "'");
    ASSERT_TRUE(fs::exists(png)) << p.url;
    std::printf("%s: screenshot %ju bytes\n", p.url.c_str(), static_cast<uintmax_t>(fs::file_size(png)));
    EXPECT_GT(fs::file_size(png), 20000u) << "a blank page's screenshot is a few KB";
  }
}

}  // namespace
