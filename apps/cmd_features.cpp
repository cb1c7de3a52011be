// interp features: what each SAE latent responds to, as a static dashboard site and a terminal summary.
#include <fmt/format.h>

#include <filesystem>
#include <optional>

#include "common.h"
#include "interp/error.h"
#include "interp/features.h"
#include "interp/sae.h"
#include "interp/store.h"
#include "interp/tokenizer.h"
#include "interp/util.h"

namespace interp::app {

void register_features(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "features", "Feature dashboards for an SAE: top activations, histograms, logit effects, POS purity (static site)");
  struct Args {
    std::string sae, activations, model, device = "cpu", name_map, hook, out;
    CorpusArgs corpus;
    int64_t tokens = 0, ctx = 128, top_k = 20, samples = 24, batch = 32;
    double purity = 0.8;
    bool baseline = false;
    uint64_t seed = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--sae", a->sae, "SAE folder (SAELens layout: cfg.json + sae_weights.safetensors)")->required();
  auto* act = cmd->add_option("--activations", a->activations, "activation store (interp capture) to read");
  cmd->add_option("--model", a->model,
                  "TorchScript model: the tokens' logit effects (promoted/suppressed), and with --data the activations");
  cmd->add_option("--device", a->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--name-map", a->name_map, "module name map for models not named as in TransformerLens");
  a->corpus.add_to(*cmd, false);
  cmd->get_option("--data")->excludes(act);
  cmd->add_option("--hook", a->hook, "hook point (default: the SAE's hook_name, else the store's only per-token point)");
  cmd->add_option("--tokens", a->tokens, "scan at most this many tokens (0: all)")->check(non_negative())->capture_default_str();
  cmd->add_option("--ctx", a->ctx, "with --data: tokens per context")->check(positive())->capture_default_str();
  cmd->add_option("--top-k", a->top_k, "top activations kept per latent")->check(positive())->capture_default_str();
  cmd->add_option("--samples", a->samples, "random firings kept per latent (shown by band of the max)")
      ->check(non_negative())->capture_default_str();
  cmd->add_option("--purity-threshold", a->purity, "purity that counts a latent as pure in the summary")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  cmd->add_flag("--baseline", a->baseline,
                "also score random directions (TopK with the SAE's k and b_dec, random unit encoder rows) on the same "
                "tokens, for comparison");
  cmd->add_option("--batch", a->batch, "contexts encoded at once")->check(positive())->capture_default_str();
  cmd->add_option("--seed", a->seed, "seed (random firings, random directions; with --data the context order)")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--out", a->out, "output folder (index.html, latent.html#N, features.json)")->required();
  cmd->callback([a] {
    if (a->activations.empty() && a->corpus.data.empty())
      throw Error("features needs activations: --activations STORE, or --model M --data CORPUS");
    if (!a->corpus.data.empty() && a->model.empty())
      throw Error("--data needs --model: the activations are computed by running the model over the corpus");
    if (a->tokens < 0) throw Error(fmt::format("--tokens {}: use 0 (all) or a positive count", a->tokens));
    check_feature_site_folder(a->out);
    SAE sae = SAE::load(a->sae);
    std::optional<ActivationStore> store;
    if (!a->activations.empty()) store.emplace(ActivationStore::open(a->activations));
    std::string hook = a->hook.empty() ? sae.config().hook_name : a->hook;
    if (hook.empty() && store) {
      std::vector<std::string> per_token;
      for (const auto& h : store->hooks())
        if (h.per_token) per_token.push_back(h.name);
      if (per_token.size() != 1)
        throw Error(fmt::format("{} holds {} per-token points ({}); choose one with --hook", a->activations,
                                per_token.size(), fmt::join(per_token, ", ")));
      hook = per_token[0];
    }
    if (hook.empty()) throw Error("the SAE's cfg.json names no hook_name; pass --hook");
    std::string tok_path = a->corpus.tokenizer;
    if (tok_path.empty() && store) tok_path = store->tokenizer_path();
    if (tok_path.empty())
      throw Error("pass --tokenizer (the sentencepiece .model the activations were made with) to show the tokens");
    Tokenizer tok = Tokenizer::load(tok_path);
    std::optional<HookedModel> model;
    if (!a->model.empty()) {
      model.emplace(load_model(a->model, a->device, a->name_map));
      sae.to(model->device());
    }

    FeatureOptions o;
    o.top_k = a->top_k;
    o.samples = a->samples;
    o.purity_threshold = a->purity;
    o.batch_contexts = a->batch;
    o.max_tokens = a->tokens;
    o.seed = a->seed;
    std::optional<Progress> progress;
    o.progress = [&](int64_t done, int64_t total) {
      if (!progress) progress.emplace(total, "features: tokens", true);
      progress->update(done);
    };
    FeatureRun run;
    if (store) {
      fmt::print("features: {} latents on {} from {} ({} tokens stored{})\n", sae.config().d_sae, hook, a->activations,
                 store->n_tokens(), store->tag_names().empty() ? ", no tags: no purity" : ", tagged");
      std::fflush(stdout);
      run = collect_features(sae, *store, hook, o, a->baseline);
    } else {
      TokenizedCorpus tc = a->corpus.load();
      PackOptions po;
      po.ctx = a->ctx;
      po.seed = a->seed;
      PackedContexts contexts(tc, po);
      fmt::print("features: {} latents on {} of {} over {}\n", sae.config().d_sae, hook, a->model, a->corpus.data);
      std::fflush(stdout);
      run = collect_features(sae, *model, contexts, hook, o, a->baseline);
    }
    if (progress) progress->finish();
    run.stats.sae_path = a->sae;
    if (model) logit_effects(sae, *model, run.stats);
    else run.stats.logit_path = "not computed: pass --model for the tokens each latent promotes and suppresses";
    FeatureSiteOptions so;
    so.title = fmt::format("interp features: {} on {}", std::filesystem::path(a->sae).filename().string(), hook);
    so.random_baseline = run.random_baseline.get();
    write_feature_site(run.stats, tok, a->out, so);
    fmt::print("{}", run.stats.terminal_summary(&tok, 10));
    if (run.random_baseline)
      fmt::print("random directions (baseline): {} of {} live, {} ({:.1f}% of live) with purity >= {}, of which {} ({:.1f}% "
                 "of live) over >= {} distinct tokens; over all firings {} ({:.1f}% of live)\n",
                 run.random_baseline->live(), run.random_baseline->d_sae, run.random_baseline->pure(),
                 100 * run.random_baseline->pure_fraction(), a->purity, run.random_baseline->pure_multi_token(),
                 100 * run.random_baseline->pure_multi_token_fraction(), run.random_baseline->min_distinct,
                 run.random_baseline->pure_firings(), 100 * run.random_baseline->pure_firings_fraction());
    fmt::print("wrote {}/index.html (latents: {}/latent.html#N), {}/features.json\n", a->out, a->out, a->out);
  });
}

}  // namespace interp::app
