// jumprelu (Rajamanoharan et al. 2024): h = pre * H(pre - theta). H has no useful gradient, so the
// thresholds learn through a straight-through estimator with a rectangle kernel of width
// `bandwidth` (eps):
//   d h / d theta   := -(theta / eps) * K((pre - theta) / eps)
//   d L0 / d theta  := -(1 / eps) * K((pre - theta) / eps),   K(u) = 1 if |u| < 1/2
// Both are built as "value 0, chosen gradient" terms added to detached forward values.
// The sparsity penalty is L0 (mean active latents per row).
#include <ATen/ATen.h>

#include "sae/architectures.h"

namespace interp::sae_detail {
namespace {

// K((pre - theta)/eps)/eps, no gradient
at::Tensor kernel(const SAE& sae, const at::Tensor& pre) {
  const double eps = sae.config().bandwidth;
  const at::Tensor& theta = sae.threshold();
  return (((pre.detach() - theta.detach()) / eps).abs() < 0.5).to(pre.scalar_type()) / eps;
}

}  // namespace

SAEArchitecture jumprelu() {
  SAEArchitecture a;
  a.name = "jumprelu";
  a.extra_parameters = [](const SAEConfig& c) {
    return std::map<std::string, at::Tensor>{{"threshold", at::full({c.d_sae}, c.threshold_init, at::kFloat)}};
  };
  a.after_step = [](SAE& sae) { sae.threshold().detach().clamp_min_(0); };
  a.activate = [](const SAE& sae, const at::Tensor& pre, bool training) {
    const at::Tensor& theta = sae.threshold();
    at::Tensor gate = (pre > theta).to(pre.scalar_type()).detach();
    at::Tensor h = pre * gate;
    if (!training) return h;
    at::Tensor ste = -(theta.detach() * kernel(sae, pre)) * (theta - theta.detach());  // value 0
    return h + ste;
  };
  a.sparsity = [](const SAE& sae, const at::Tensor& pre, const at::Tensor&) {
    const at::Tensor& theta = sae.threshold();
    at::Tensor gate = (pre > theta).to(pre.scalar_type()).detach();
    at::Tensor ste = -kernel(sae, pre) * (theta - theta.detach());  // value 0
    return (gate + ste).sum(-1).mean();
  };
  return a;
}

}  // namespace interp::sae_detail
