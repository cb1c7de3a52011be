// Feature dashboards from C++: capture a model's residual stream over a tagged corpus into a store,
// train a TopK SAE on it, then stream the store through the SAE into per-latent statistics, add each
// latent's logit effects, write the static site and print the latents with the purest part of speech.
//
//   example-features MODEL.pt CORPUS TOKENIZER.model HOOK OUT_DIR
//   (e.g. models/brown_lm/brown_lm_trace.pt data/brown models/brown_lm/brown-4k.model blocks.1.hook_resid_post out/ex)
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "interp/data.h"
#include "interp/error.h"
#include "interp/features.h"
#include "interp/hooks.h"
#include "interp/sae.h"
#include "interp/sae_train.h"
#include "interp/store.h"
#include "interp/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 6) {
    std::cerr << "usage: example-features MODEL.pt CORPUS TOKENIZER.model HOOK OUT_DIR\n";
    return 2;
  }
  try {
    const std::string out = argv[5], hook = argv[4];
    auto model = interp::HookedModel::load(argv[1]);
    auto tok = interp::Tokenizer::load(argv[3]);
    auto tc = interp::tokenize(interp::corpus_load(argv[2]), tok);  // Brown: every token keeps its POS tag
    interp::PackOptions po;
    po.ctx = model.info().n_ctx > 0 ? std::min<int64_t>(model.info().n_ctx, 64) : 64;
    interp::PackedContexts contexts(tc, po);

    // 1. Activations into a store (tags and tag names travel with them).
    interp::CaptureOptions co;
    co.hooks = {hook};
    co.n_tokens = std::min<int64_t>(16384, contexts.size() * contexts.ctx());
    co.tokenizer_path = tok.path();
    std::filesystem::remove_all(out + "/store");
    interp::capture(model, contexts, out + "/store", co);
    auto store = interp::ActivationStore::open(out + "/store");

    // 2. A small TopK SAE on them.
    interp::SAEConfig cfg;
    cfg.architecture = "topk";
    cfg.d_in = model.info().d_model;
    cfg.d_sae = 128;
    cfg.k = 8;
    cfg.hook_name = hook;
    interp::SAE sae(cfg);
    auto source = interp::store_source(store, hook);
    interp::TrainOptions to;
    to.steps = 100;
    to.batch = 1024;
    to.lr = 1e-3;
    interp::train_sae(sae, *source, to);

    // 3. Per-latent statistics, streamed shard by shard, with the random-directions baseline.
    interp::FeatureOptions fo;
    interp::FeatureRun run = interp::collect_features(sae, store, hook, fo, /*with_random_baseline=*/true);
    interp::logit_effects(sae, model, run.stats);  // promoted / suppressed tokens
    interp::FeatureSiteOptions so;
    so.random_baseline = run.random_baseline.get();
    interp::write_feature_site(run.stats, tok, out + "/site", so);
    std::cout << run.stats.terminal_summary(&tok, 5);
    std::printf("random directions: %.1f%% of live latents pure; SAE: %.1f%%\n",
                100 * run.random_baseline->pure_fraction(), 100 * run.stats.pure_fraction());
    std::printf("open %s/site/index.html\n", out.c_str());
  } catch (const interp::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
