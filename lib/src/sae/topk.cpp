// topk (Gao et al. 2024): keep each row's k largest pre-activations, ReLU'd; no sparsity penalty
// (k sets the sparsity); the AuxK loss on dead latents keeps them learning.
#include <ATen/ATen.h>

#include "sae/architectures.h"

namespace interp::sae_detail {

SAEArchitecture topk() {
  SAEArchitecture a;
  a.name = "topk";
  a.uses_aux_k = true;
  a.uses_k = true;
  a.activate = [](const SAE& sae, const at::Tensor& pre, bool) {
    auto [vals, idx] = pre.topk(sae.config().k, -1);
    return at::zeros_like(pre).scatter(-1, idx, at::relu(vals));
  };
  a.sparsity = [](const SAE&, const at::Tensor& pre, const at::Tensor&) { return at::zeros({}, pre.options()); };
  a.active = [](const SAE& sae, const at::Tensor& pre) {
    auto [vals, idx] = pre.topk(sae.config().k, -1);
    return std::make_pair(idx, vals);
  };
  return a;
}

}  // namespace interp::sae_detail
