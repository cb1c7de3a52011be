// batchtopk (Bussmann et al. 2024): in training keep the k * batch largest pre-activations over the
// whole batch (ReLU'd), so rows may use more or fewer than k latents; at inference, keep the
// pre-activations above a threshold estimated during training (the trainer's running mean of the
// smallest kept activation).
#include <ATen/ATen.h>

#include "sae/architectures.h"

namespace interp::sae_detail {

SAEArchitecture batchtopk() {
  SAEArchitecture a;
  a.name = "batchtopk";
  a.uses_aux_k = true;
  a.uses_k = true;
  a.batch_threshold = true;
  a.activate = [](const SAE& sae, const at::Tensor& pre, bool training) {
    at::Tensor r = at::relu(pre);
    if (!training) return r * (r > sae.inference_threshold());
    int64_t n = std::min<int64_t>(sae.config().k * pre.size(0), pre.numel());
    auto [vals, idx] = r.flatten().topk(n);
    return at::zeros_like(r).flatten().scatter(0, idx, vals).view_as(r);
  };
  return a;
}

}  // namespace interp::sae_detail
