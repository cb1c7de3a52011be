// Where `interp features` gets latent activations (a store, shard by shard; or a model run over a
// corpus), the random-directions baseline, and the logit effects of each latent's decoder row.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <optional>

#include "interp/error.h"
#include "interp/features.h"
#include "interp/hooks.h"
#include "interp/sae.h"
#include "interp/store.h"

namespace interp {

SAE random_directions_like(const SAE& sae, uint64_t seed) {
  SAEConfig c = sae.config();
  // TopK with the SAE's k (32 for architectures without one): each token gets the k random directions
  // it projects on most, as the SAE gives each token its k best latents.
  if (!sae_architecture(c.architecture).uses_k) c.k = 32;
  c.architecture = "topk";
  c.matryoshka_prefixes.clear();
  c.seed = seed;
  SAE r(c);  // unit-norm random decoder rows, encoder = their transpose, b_enc = 0
  at::NoGradGuard g;
  r.b_dec().copy_(sae.b_dec().detach().to(at::kCPU, at::kFloat));  // same centring as the SAE
  return r;
}

namespace {

struct Collectors {
  FeatureCollector main;
  std::optional<FeatureCollector> baseline;
  std::optional<SAE> random;
  Collectors(const SAE& sae, int64_t ctx, const std::vector<std::string>& tags, const FeatureOptions& o, bool with_baseline)
      : main(sae.config().d_sae, ctx, tags, o) {
    if (with_baseline) {
      random.emplace(random_directions_like(sae, o.seed + 1));
      random->to(sae.W_enc().device());
      baseline.emplace(sae.config().d_sae, ctx, tags, o);
    }
  }
  // acts: [contexts * ctx, d_in]
  void add(const SAE& sae, const at::Tensor& acts, const at::Tensor& tokens, const at::Tensor& tags) {
    at::NoGradGuard g;
    main.add(sae.encode(acts.to(sae.W_enc().device(), at::kFloat)), tokens, tags);
    if (baseline) baseline->add(random->encode(acts.to(random->W_enc().device(), at::kFloat)), tokens, tags);
  }
  FeatureRun finish(const std::string& hook, const std::string& source) {
    FeatureRun run;
    run.stats = main.finish();
    run.stats.hook = hook;
    run.stats.source = source;
    if (baseline) {
      run.random_baseline = std::make_unique<FeatureStats>(baseline->finish());
      run.random_baseline->hook = hook;
      run.random_baseline->source = source + " (random directions)";
    }
    return run;
  }
};

void check_width(const SAE& sae, int64_t d_in, const std::string& hook, const std::string& where) {
  if (d_in != sae.config().d_in)
    throw Error(fmt::format("{}: '{}' has {} values per token but the SAE reads {} (d_in); pick the hook the SAE was "
                            "trained on ({})",
                            where, hook, d_in, sae.config().d_in,
                            sae.config().hook_name.empty() ? "not recorded in its cfg.json" : sae.config().hook_name));
}

// Contexts to scan: all `available`, or as many as o.max_tokens needs (BOS positions are not scanned).
int64_t contexts_to_scan(int64_t available, int64_t ctx, const FeatureOptions& o) {
  const int64_t per = ctx - (o.skip_bos ? 1 : 0);
  return o.max_tokens > 0 ? std::min(available, (o.max_tokens + per - 1) / per) : available;
}

}  // namespace

FeatureRun collect_features(const SAE& sae, const ActivationStore& store, const std::string& hook,
                            const FeatureOptions& o, bool with_baseline) {
  const StoreHook& h = store.hook(hook);
  if (!h.per_token)
    throw Error(fmt::format("{}: '{}' is stored per context; features need a per-token point", store.dir(), hook));
  int64_t d_in = 1;
  for (size_t i = 1; i < h.shape.size(); ++i) d_in *= h.shape[i];
  check_width(sae, d_in, hook, store.dir());
  const int64_t ctx = store.ctx();
  const int64_t first_pos = o.skip_bos ? 1 : 0;
  const int64_t total_ctx = contexts_to_scan(store.n_contexts(), ctx, o);
  Collectors c(sae, ctx, store.tag_names(), o, with_baseline);
  int64_t done = 0;
  for (int64_t s = 0; s < static_cast<int64_t>(store.shards().size()) && done < total_ctx; ++s) {
    SafetensorsFile f = store.read_shard(s, true);
    at::Tensor acts = f.tensors.at(hook), tokens = f.tensors.at("tokens");
    at::Tensor tags = f.tensors.count("tags") ? f.tensors.at("tags") : at::Tensor();
    const int64_t n = std::min(acts.size(0), total_ctx - done);
    for (int64_t b = 0; b < n; b += o.batch_contexts) {
      const int64_t m = std::min(o.batch_contexts, n - b);
      at::Tensor a = acts.narrow(0, b, m).reshape({m * ctx, d_in});
      c.add(sae, a, tokens.narrow(0, b, m), tags.defined() ? tags.narrow(0, b, m) : at::Tensor());
      done += m;
      if (o.progress) o.progress(done * (ctx - first_pos), total_ctx * (ctx - first_pos));
    }
  }
  return c.finish(hook, store.dir());
}

FeatureRun collect_features(const SAE& sae, const HookedModel& model, const PackedContexts& contexts,
                            const std::string& hook_in, const FeatureOptions& o, bool with_baseline) {
  const HookPoint& p = model.find_point(hook_in);
  const std::string& hook = p.name;
  if (p.pos_axis != 1 || p.shape.empty() || p.shape[0] != HookPoint::kBatch)
    throw Error(fmt::format("{}: '{}' has shape {}; features need a per-token point [batch, pos, ...]", model.path(), hook,
                            p.shape_str()));
  int64_t d_in = 1;
  for (size_t i = 2; i < p.shape.size(); ++i) d_in *= p.shape[i];
  check_width(sae, d_in, hook, model.path());
  const int64_t ctx = contexts.ctx();
  const int64_t first_pos = o.skip_bos ? 1 : 0;
  const int64_t total_ctx = contexts_to_scan(contexts.size(), ctx, o);
  Collectors c(sae, ctx, contexts.tag_names(), o, with_baseline);
  RunOptions run;
  if (p.layer >= 0 && p.layer < model.info().n_layers) run.stop_at_layer = p.layer + 1;
  const NamesFilter filter = [&](const std::string& n) { return n == p.name; };
  for (int64_t b = 0; b < total_ctx; b += o.batch_contexts) {
    const int64_t m = std::min(o.batch_contexts, total_ctx - b);
    at::Tensor tokens = contexts.batch(b, m);
    auto [logits, cache] = model.run_with_cache(tokens, filter, run);
    at::Tensor a = cache[p.name].reshape({m * ctx, d_in});
    c.add(sae, a, tokens, contexts.has_tags() ? contexts.tags(b, m) : at::Tensor());
    if (o.progress) o.progress((b + m) * (ctx - first_pos), total_ctx * (ctx - first_pos));
  }
  return c.finish(hook, model.path());
}

void logit_effects(const SAE& sae, const HookedModel& model, FeatureStats& stats, int n) {
  const ModelInfo& info = model.info();
  if (static_cast<int64_t>(stats.latents.size()) != sae.config().d_sae)
    throw Error(fmt::format("logit effects: the statistics hold {} latents but the SAE has {}", stats.latents.size(),
                            sae.config().d_sae));
  if (info.n_layers <= 0 || info.d_model != sae.config().d_in) {
    stats.logit_path = fmt::format("not computed: the SAE reads {} values per token, the residual stream has {}",
                                   sae.config().d_in, info.d_model);
    return;
  }
  const std::string last = point_name(PointKind::ResidPost, info.n_layers - 1);
  model.hook_point(last);  // throws with the names it has if the model lacks it
  const bool exact = stats.hook == last;
  stats.logit_path =
      exact ? fmt::format("exact: the SAE reads {}, after which only the final norm and the unembedding follow; each "
                          "latent's decoder row d through them as (logits(+d) - logits(-d)) / 2",
                          last)
            : fmt::format("direct path: each latent's decoder row d started at {} (the layers between {} and it "
                          "skipped), through the final norm and the unembedding as (logits(+d) - logits(-d)) / 2",
                          last, stats.hook);
  at::NoGradGuard g;
  const c10::Device dev = model.device();
  at::Tensor W = sae.W_dec().detach().to(dev, at::kFloat);  // [d_sae, d_model]
  const int64_t d_sae = W.size(0), chunk = 256;
  for (int64_t j0 = 0; j0 < d_sae; j0 += chunk) {
    const int64_t m = std::min(chunk, d_sae - j0);
    at::Tensor d = W.narrow(0, j0, m);
    at::Tensor x = at::cat({d, -d}, 0).unsqueeze(1);  // [2m, 1, d_model]
    RunOptions run;
    run.start_at = last;
    run.start_value = x;
    at::Tensor logits = model.forward(at::zeros({2 * m, 1}, at::TensorOptions(dev).dtype(at::kLong)), run);
    at::Tensor eff = ((logits.narrow(0, 0, m) - logits.narrow(0, m, m)) / 2).squeeze(1).to(at::kCPU, at::kFloat);
    const int64_t k = std::min<int64_t>(n, eff.size(1));
    auto [top_v, top_i] = eff.topk(k, 1, true);
    auto [bot_v, bot_i] = eff.topk(k, 1, false);
    auto tv = top_v.accessor<float, 2>(), bv = bot_v.accessor<float, 2>();
    auto ti = top_i.accessor<int64_t, 2>(), bi = bot_i.accessor<int64_t, 2>();
    for (int64_t i = 0; i < m; ++i) {
      LatentStats& L = stats.latents[static_cast<size_t>(j0 + i)];
      L.promoted.clear();
      L.suppressed.clear();
      for (int64_t q = 0; q < k; ++q) {
        L.promoted.emplace_back(static_cast<int32_t>(ti[i][q]), tv[i][q]);
        L.suppressed.emplace_back(static_cast<int32_t>(bi[i][q]), bv[i][q]);
      }
    }
  }
}

}  // namespace interp
