// matryoshka (Bussmann et al. 2025; Nabeshima 2024): BatchTopK latents in nested prefixes
// m_1 < m_2 < ... < m_n = d_sae (SAEConfig::prefixes()). Each prefix must reconstruct x on its own,
// so the first latents learn the general directions and later ones refine them:
//   extra = sum over i < n of |x - (h[:, :m_i] W_dec[:m_i] + b_dec)|^2      (mean over rows)
// the full reconstruction (i = n) being the usual mse term. Activation, inference threshold and
// AuxK are BatchTopK's.
#include <ATen/ATen.h>

#include "sae/architectures.h"

namespace interp::sae_detail {

SAEArchitecture matryoshka() {
  SAEArchitecture a = batchtopk();
  a.name = "matryoshka";
  a.active = nullptr;  // its prefix losses read the dense h
  a.extra_loss = [](const SAE& sae, const at::Tensor& x, const at::Tensor&, const at::Tensor& h) {
    const std::vector<int64_t> prefixes = sae.config().prefixes();
    at::Tensor y = sae.b_dec().unsqueeze(0).expand_as(x);
    at::Tensor total = at::zeros({}, x.options());
    int64_t start = 0;
    for (size_t i = 0; i + 1 < prefixes.size(); ++i) {  // the running reconstruction, one group at a time
      const int64_t end = prefixes[i];
      y = at::addmm(y, h.narrow(1, start, end - start), sae.W_dec().narrow(0, start, end - start));
      total = total + (y - x).pow(2).sum(-1).mean();
      start = end;
    }
    return total;
  };
  return a;
}

}  // namespace interp::sae_detail
