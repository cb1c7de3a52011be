#include "interp/steer.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <memory>

#include "interp/error.h"

namespace interp {

std::pair<std::string, HookFn> steering_hook(const HookedModel& model, const SAE& sae, const SteerOptions& o) {
  const SAEConfig& c = sae.config();
  if (o.feature < 0 || o.feature >= c.d_sae)
    throw Error(fmt::format("steer: feature {} is out of range; the SAE has {} latents (0..{})", o.feature, c.d_sae,
                            c.d_sae - 1));
  if (o.mode != "add" && o.mode != "clamp")
    throw Error(fmt::format("steer: mode '{}' is not add or clamp", o.mode));
  const std::string hook = o.hook.empty() ? c.hook_name : o.hook;
  if (hook.empty()) throw Error("steer: the SAE names no hook point (hook_name); give one");
  const HookPoint& p = model.find_point(hook);
  if (p.shape.empty() || p.shape.back() != c.d_in)
    throw Error(fmt::format("steer: '{}' has shape {}, but the SAE reads {}-dimensional activations", hook,
                            p.shape_str(), c.d_in));
  // latent f's direction in the activations' units: decode(e_f) - decode(0) (norm_scale included).
  // An SAE that normalises each token (SAELens's constant_norm_rescale, layer_norm) maps it back
  // with each token's own statistics, so there it is computed per token in the hook.
  const bool per_token = sae.per_token_norm();
  at::Tensor direction;
  {
    at::NoGradGuard g;
    if (per_token) {
      direction = sae.W_dec()[o.feature].detach().clone();  // in the SAE's units
    } else {
      at::Tensor e = at::zeros({2, c.d_sae}, sae.W_dec().options());
      e[0][o.feature] = 1;
      at::Tensor dec = sae.decode(e);
      direction = (dec[0] - dec[1]).detach().to(model.device());
    }
  }
  const bool clamp = o.mode == "clamp";
  const double scale = o.scale;
  const int64_t f = o.feature;
  auto sae_ptr = std::make_shared<const SAE>(sae);  // the hook may outlive the caller's reference
  HookFn fn = [direction, clamp, scale, f, sae_ptr, per_token](at::Tensor& x, const std::string&) {
    at::NoGradGuard g;
    if (!clamp && !per_token) {
      x = x + scale * direction;
      return;
    }
    const auto shape = x.sizes().vec();
    at::Tensor rows = x.reshape({-1, shape.back()});
    at::Tensor rows_sae = rows.to(sae_ptr->W_dec().device(), at::kFloat);
    // how far to move along the direction, per token (in latent units)
    at::Tensor amount = clamp ? (scale - sae_ptr->encode(rows_sae).select(1, f)).unsqueeze(1)
                              : at::full({rows.size(0), 1}, scale, rows_sae.options());
    at::Tensor delta;
    if (per_token) {
      at::Tensor y = amount * direction.unsqueeze(0);  // [N, d_in] in the SAE's units
      delta = sae_ptr->normalize_out(y, rows_sae) - sae_ptr->normalize_out(at::zeros_like(y), rows_sae);
    } else {
      delta = amount * direction.to(rows_sae.device()).unsqueeze(0);
    }
    x = (rows + delta.to(x.device(), x.scalar_type())).reshape(shape);
  };
  return {p.name, fn};
}

}  // namespace interp
