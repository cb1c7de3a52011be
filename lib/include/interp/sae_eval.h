// interp/sae_eval.h: evaluate an SAE the way the field does, on a model and a corpus.
//
// Reconstruction (L0, MSE, fraction of variance unexplained), latent statistics (dead and dense
// fractions, a log10 feature-density histogram) and the downstream cost: the SAE's reconstruction
// spliced into the model at its hook, next-token cross-entropy and KL against the clean model and
// against zero-ablating the hook. CE loss recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean).
//
//   interp::SAEEvalOptions o; o.tokens = 65536;
//   interp::SAEEval e = interp::evaluate_sae(sae, model, contexts, o);
//   std::cout << e.to_json() << e.summary();
#pragma once

#include <string>
#include <vector>

#include "interp/data.h"
#include "interp/hooks.h"
#include "interp/sae.h"

namespace interp {

struct SAEEvalOptions {
  std::string hook;         // default: the SAE's hook_name
  int64_t tokens = 65536;   // rounded up to whole contexts
  int64_t batch = 16;       // contexts per forward
  double dense_threshold = 0.1;  // a latent firing on more than this fraction of tokens is dense
  bool progress = false;         // a progress line (contexts done, rate, ETA) on stderr
};

struct SAEEval {
  std::string hook;
  int64_t tokens = 0;
  double l0 = 0, mse = 0, fvu = 0;                // per token; fvu = sum |x - x_hat|^2 / sum |x - mean|^2
  double dead_fraction = 0, dense_fraction = 0;   // of latents, over the evaluated tokens
  double ce_clean = 0, ce_sae = 0, ce_zero = 0, ce_loss_recovered = 0;
  double kl_sae = 0, kl_zero = 0;                 // KL(clean || spliced), nats per token
  std::vector<double> density_edges;              // log10 density bin edges
  std::vector<int64_t> density_counts;            // latents per bin (dead latents not counted)
  std::string to_json() const;
  std::string summary() const;
};

SAEEval evaluate_sae(const SAE& sae, const HookedModel& model, const PackedContexts& contexts,
                     const SAEEvalOptions& options = {});

}  // namespace interp
