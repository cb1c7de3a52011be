// gated (Rajamanoharan et al. 2024): a gate path decides which latents fire, a magnitude path how
// strongly; the magnitude path shares the gate's encoder, rescaled per latent by exp(r_mag):
//   pi_gate = (x - b_dec) W_enc + b_enc            (b_enc is SAELens's b_gate)
//   pi_mag  = (x - b_dec) W_enc * exp(r_mag) + b_mag = (pi_gate - b_enc) * exp(r_mag) + b_mag
//   h       = 1[pi_gate > 0] * ReLU(pi_mag)
// The gate gets no gradient through the step function, so two terms train it:
//   sparsity = sum_i ReLU(pi_gate)_i * |W_dec[i]|        (times l1_coefficient)
//   extra    = |x - (ReLU(pi_gate) W_dec' + b_dec')|^2   (W_dec, b_dec frozen: no gradient)
#include <ATen/ATen.h>

#include "sae/architectures.h"

namespace interp::sae_detail {

SAEArchitecture gated() {
  SAEArchitecture a;
  a.name = "gated";
  a.saelens_b_enc = "b_gate";
  a.extra_parameters = [](const SAEConfig& c) {
    return std::map<std::string, at::Tensor>{{"b_mag", at::zeros({c.d_sae}, at::kFloat)},
                                             {"r_mag", at::zeros({c.d_sae}, at::kFloat)}};
  };
  a.activate = [](const SAE& sae, const at::Tensor& pre, bool) {
    at::Tensor mag = (pre - sae.b_enc()) * sae.param("r_mag").exp() + sae.param("b_mag");
    return (pre > 0).to(pre.scalar_type()) * at::relu(mag);
  };
  a.sparsity = [](const SAE& sae, const at::Tensor& pre, const at::Tensor&) {
    return (at::relu(pre) * sae.W_dec().norm(2, {1})).sum(-1).mean();
  };
  a.extra_loss = [](const SAE& sae, const at::Tensor& x, const at::Tensor& pre, const at::Tensor&) {
    at::Tensor via_gate = at::addmm(sae.b_dec().detach(), at::relu(pre), sae.W_dec().detach());
    return (via_gate - x).pow(2).sum(-1).mean();
  };
  return a;
}

}  // namespace interp::sae_detail
