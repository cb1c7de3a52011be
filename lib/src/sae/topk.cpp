// topk (Gao et al. 2024): keep each row's k largest pre-activations, ReLU'd; no sparsity penalty
// (k sets the sparsity); the AuxK loss on dead latents keeps them learning.
// The selection is row_topk (sparse_encode.cpp): a per-row candidate buffer on the CPU, the bias
// added as each row is read.
#include <ATen/ATen.h>

#include "sae/architectures.h"
#include "sae/sparse_encode.h"

namespace interp::sae_detail {

SAEArchitecture topk() {
  SAEArchitecture a;
  a.name = "topk";
  a.uses_aux_k = true;
  a.uses_k = true;
  a.activate = [](const SAE& sae, const at::Tensor& pre, bool) {
    auto [vals, idx] = row_topk(pre, sae.config().k);
    return at::zeros_like(pre).scatter(-1, idx, at::relu(vals));
  };
  a.active = [](const SAE& sae, const at::Tensor& xw, const at::Tensor& bias) {
    auto [vals, idx] = row_topk(xw, sae.config().k, bias);
    return std::make_pair(idx, vals);
  };
  return a;
}

}  // namespace interp::sae_detail
