// interp/features.h: what each SAE latent responds to, streamed over a store or a corpus, and a static
// dashboard site of it (sae_vis-style; opens from disk, no server).
//
// One pass over the tokens keeps, per latent, bounded state: firing count, sum and max, a log10
// activation histogram, the top activating tokens (with the window of context around each and the
// latent's activation on every token of it), a reservoir of random firings (shown by quantile band of
// the max), and the tags of its top activations. Memory does not grow with the number of tokens.
//
//   interp::FeatureOptions o;
//   interp::FeatureCollector c(sae.config().d_sae, tag_names, o);
//   c.add(h, tokens, tags);                           // h [contexts * ctx, d_sae]; tokens, tags [contexts, ctx]
//   interp::FeatureStats stats = c.finish();
//   interp::logit_effects(sae, model, stats);          // promoted/suppressed tokens (direct path)
//   interp::write_feature_site(stats, tokenizer, "out/features");
//
// Or all at once from a store: interp::collect_features(sae, store, hook, o) (baselines included).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace interp {

class SAE;
class HookedModel;
class ActivationStore;
class PackedContexts;
class Tokenizer;

struct FeatureOptions {
  int64_t top_k = 20;           // top activating tokens kept per latent (each with its context window)
  int64_t samples = 24;         // reservoir of random firings per latent, shown by quantile band of the max
  int64_t before = 12, after = 4;  // window: tokens shown before and after the activating token
  int64_t tag_top = 50;         // top activations whose tags make the tag distribution and purity
  int64_t min_tagged = 10;      // fewer tagged top activations than this: no purity (not scored)
  int64_t min_distinct = 5;     // a pure latent whose top activations span this many distinct tokens is
                                // pure beyond token identity (a part of speech, not one word)
  double purity_threshold = 0.8;
  bool skip_bos = true;         // position 0 (BOS) is not scanned: its activations are outliers
  int64_t max_tokens = 0;       // stop after this many tokens (0: all)
  int64_t batch_contexts = 32;  // contexts encoded at once
  uint64_t seed = 0;            // reservoir sampling
  std::function<void(int64_t tokens_done, int64_t tokens_total)> progress;
};

// Brown's fine tags reduced to their part of speech: modifiers -tl (title), -hl (headline), -nc
// (cited) and the fw- (foreign word) prefix dropped ("np-tl" -> "np", "fw-nn" -> "nn").
std::string coarse_tag(const std::string& tag);

struct FeatureWindow {
  int64_t row = 0;                 // the token's place: context * ctx + position
  int32_t center = 0;              // index of the activating token in `tokens`
  float value = 0;                 // its activation
  std::vector<int32_t> tokens;     // the window's token ids
  std::vector<float> acts;         // the latent's activation on each
};

struct LatentStats {
  int64_t index = 0;
  int64_t firings = 0;             // tokens with activation > 0
  double density = 0;              // firings / tokens scanned
  double max_act = 0, mean_act = 0;  // mean over firings
  std::vector<int64_t> histogram;  // firings per log10-activation bin (FeatureStats::hist_edges)
  std::vector<FeatureWindow> top;      // by activation, descending
  std::vector<FeatureWindow> samples;  // random firings, by activation descending
  std::vector<std::pair<std::string, int64_t>> tags;  // coarse tag counts among the top activations, descending
  int64_t tagged = 0;              // top activations that carry a tag
  double purity = -1;              // share of the commonest tag among them; -1: not scored (< min_tagged)
  int64_t distinct_tokens = 0;     // distinct token ids among the top activations (tag_top of them)
  // Over every firing, not only the top: the activation-weighted share of the commonest tag among
  // tagged firings (-1: fewer than min_tagged tagged firings), and that tag.
  double firing_purity = -1;
  std::string firing_tag;
  std::vector<std::pair<int32_t, float>> promoted, suppressed;  // logit effects (logit_effects), 10 each
};

struct FeatureStats {
  std::string hook, sae_path, source;
  int64_t tokens = 0, d_sae = 0, ctx = 0;
  int64_t tag_top = 0;             // FeatureOptions::tag_top
  int64_t min_distinct = 5;        // FeatureOptions::min_distinct
  std::vector<double> hist_edges;  // log10 activation bin edges
  std::vector<LatentStats> latents;
  std::string logit_path;          // how promoted/suppressed were computed ("" if not)
  double purity_threshold = 0.8;
  // Summary over latents: live (fired at least once), scored (purity computed), pure (purity >=
  // threshold), pure_multi_token (pure, and its top activations span >= min_distinct distinct tokens:
  // a part of speech rather than one word, which any direction aligned with a frequent token gets).
  int64_t live() const;
  int64_t scored() const;
  int64_t pure() const;
  int64_t pure_multi_token() const;
  int64_t pure_firings() const;    // firing_purity >= threshold
  double pure_firings_fraction() const;  // pure_firings / live
  double pure_fraction() const;    // pure / live (a live latent too rare to score counts as not pure)
  double pure_multi_token_fraction() const;  // pure_multi_token / live
  std::string summary_json() const;
  // Top `n` latents by purity (ties: more distinct top tokens, then more firings, first) with their
  // tag and top tokens, one per line.
  std::string terminal_summary(const Tokenizer* tokenizer, int n = 10) const;
};

class FeatureCollector {
 public:
  FeatureCollector(int64_t d_sae, int64_t ctx, std::vector<std::string> tag_names, const FeatureOptions& options);
  ~FeatureCollector();
  // h: [contexts * ctx, d_sae] float (latent activations, row = context * ctx + position);
  // tokens: [contexts, ctx] integer; tags: [contexts, ctx] int16 (-1 none) or undefined.
  // Contexts are numbered in the order added.
  void add(const at::Tensor& h, const at::Tensor& tokens, const at::Tensor& tags);
  int64_t tokens_seen() const;
  FeatureStats finish();

 private:
  struct State;
  std::unique_ptr<State> s_;
};

struct FeatureRun {
  FeatureStats stats;
  // The same statistics for random directions: an SAE of the same architecture, k and b_dec whose
  // encoder rows are random unit vectors (only computed with with_random_baseline).
  std::unique_ptr<FeatureStats> random_baseline;
};

// Streams a store's per-token hook through the SAE (shard by shard: memory bounded).
FeatureRun collect_features(const SAE& sae, const ActivationStore& store, const std::string& hook,
                            const FeatureOptions& options, bool with_random_baseline = false);
// Runs a model over packed contexts (tags from the corpus) and streams its hook through the SAE.
FeatureRun collect_features(const SAE& sae, const HookedModel& model, const PackedContexts& contexts,
                            const std::string& hook, const FeatureOptions& options, bool with_random_baseline = false);

// The SAE of random directions used as a baseline (see FeatureRun).
SAE random_directions_like(const SAE& sae, uint64_t seed);

// Tokens each latent promotes and suppresses: its decoder row d started at the model's last residual
// point (blocks.{n-1}.hook_resid_post), (logits(+d) - logits(-d)) / 2, which cancels the final norm's
// bias and the unembedding bias: the direct path through the final norm (applied to the direction)
// and the unembedding. Exact for an SAE on the last residual point; for earlier hooks the layers in
// between are skipped, and stats.logit_path says so. Needs d_in == d_model.
void logit_effects(const SAE& sae, const HookedModel& model, FeatureStats& stats, int n = 10);

struct FeatureSiteOptions {
  std::string title = "interp features";
  const FeatureStats* random_baseline = nullptr;  // shown on the index when given
};

// DIR/index.html (latents sortable by density, max activation, purity), DIR/latent.html#N (one
// latent), DIR/data/*.js, DIR/features.json. Written to a temporary folder and renamed into place:
// an existing DIR is replaced only once the new site is complete.
// Throws interp::Error unless DIR is absent, empty, or an earlier site (holds features.json): what
// write_feature_site would refuse, checked before any work.
void check_feature_site_folder(const std::string& dir);
void write_feature_site(const FeatureStats& stats, const Tokenizer& tokenizer, const std::string& dir,
                        const FeatureSiteOptions& options = {});

}  // namespace interp
