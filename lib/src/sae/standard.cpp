// standard: h = ReLU(pre); sparsity = sum_i h_i * |W_dec[i]| (L1 weighted by decoder row norms,
// as in Anthropic's April 2024 update), averaged over the batch.
#include <ATen/ATen.h>

#include "sae/architectures.h"

namespace interp::sae_detail {

SAEArchitecture standard() {
  SAEArchitecture a;
  a.name = "standard";
  a.unit_decoder = false;  // the L1 is weighted by the decoder norms instead
  a.activate = [](const SAE&, const at::Tensor& pre, bool) { return at::relu(pre); };
  a.sparsity = [](const SAE& sae, const at::Tensor&, const at::Tensor& h) {
    at::Tensor norms = sae.W_dec().norm(2, {1});
    return (h * norms).sum(-1).mean();
  };
  return a;
}

}  // namespace interp::sae_detail
