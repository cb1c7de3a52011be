// interp/steer.h: steer a model with an SAE latent.
//
//   add    x + scale * d_f at every position of the SAE's hook point (d_f: latent f's decoder direction,
//          in the activations' units)
//   clamp  x + (scale - h_f(x)) * d_f: latent f set to `scale` through the SAE, the SAE's
//          reconstruction error kept (x - x_hat is untouched)
//   An SAE that normalises each token (SAELens's constant_norm_rescale, layer_norm) maps d_f to the
//   activations' units with each token's own statistics: d_f / coeff(x), or d_f * std(x).
//
//   interp::SteerOptions o; o.feature = 5; o.scale = 4;
//   auto hook = interp::steering_hook(model, sae, o);
//   at::Tensor logits = model.run_with_hooks(tokens, {hook});
//   at::Tensor text = interp::generate_greedy(model, tokens, 20, {hook});
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "interp/hooks.h"
#include "interp/sae.h"

namespace interp {

struct SteerOptions {
  int64_t feature = 0;
  double scale = 0;
  std::string mode = "add";  // "add" or "clamp"
  std::string hook;          // default: the SAE's hook_name
};

// The hook (name, function) that steers; throws interp::Error for a feature out of range, an
// unknown mode, or a point whose last axis is not the SAE's d_in.
std::pair<std::string, HookFn> steering_hook(const HookedModel& model, const SAE& sae, const SteerOptions& options);

}  // namespace interp
