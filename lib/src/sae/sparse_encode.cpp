// The TopK encoder's backward as a sparse kernel. With k of d_sae latents active per row, the
// gradient of the pre-activations is 99% zeros; autograd would still build it densely ([B, d_sae]),
// multiply x^T by it (a full GEMM) and sum it over rows. Here the k gradients per row go straight to
// the latents' columns: grad_W_enc[:, j] = sum over (b, i) with idx[b, i] = j of g[b, i] * x[b],
// grad_bias[j] = sum of those g[b, i]. Entries are grouped by latent with a counting sort, and latents
// are split across LibTorch's intra-op threads, each writing only its own rows of grad_W_enc^T.
#include "sae/sparse_encode.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <vector>

namespace interp::sae_detail {

std::pair<at::Tensor, at::Tensor> sparse_encoder_grad(const at::Tensor& x_in, const at::Tensor& idx_in,
                                                      const at::Tensor& grad_in, int64_t d_sae) {
  const at::Tensor x = x_in.detach().contiguous().to(at::kFloat);
  const at::Tensor idx = idx_in.contiguous().to(at::kLong);
  const at::Tensor g = grad_in.detach().contiguous().to(at::kFloat);
  const int64_t B = x.size(0), d_in = x.size(1), k = idx.size(1), n = B * k;
  const float* xp = x.data_ptr<float>();
  const int64_t* ip = idx.data_ptr<int64_t>();
  const float* gp = g.data_ptr<float>();
  // counting sort of the nonzero entries by latent
  std::vector<int64_t> start(static_cast<size_t>(d_sae) + 1, 0);
  for (int64_t e = 0; e < n; ++e)
    if (gp[e] != 0.f) ++start[static_cast<size_t>(ip[e]) + 1];
  for (int64_t j = 0; j < d_sae; ++j) start[j + 1] += start[j];
  std::vector<int64_t> order(static_cast<size_t>(start[d_sae]));
  {
    std::vector<int64_t> pos(start.begin(), start.end() - 1);
    for (int64_t e = 0; e < n; ++e)
      if (gp[e] != 0.f) order[pos[ip[e]]++] = e;
  }
  at::Tensor gWt = at::zeros({d_sae, d_in}, x.options());
  at::Tensor gb = at::zeros({d_sae}, x.options());
  float* wp = gWt.data_ptr<float>();
  float* bp = gb.data_ptr<float>();
  at::parallel_for(0, d_sae, 16, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      float* row = wp + j * d_in;
      float sum = 0.f;
      for (int64_t s = start[j]; s < start[j + 1]; ++s) {
        const int64_t e = order[s];
        const float gv = gp[e];
        const float* xr = xp + (e / k) * d_in;
        for (int64_t c = 0; c < d_in; ++c) row[c] += gv * xr[c];
        sum += gv;
      }
      bp[j] = sum;
    }
  });
  return {gWt.t().contiguous(), gb};
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct SparsePre : public torch::autograd::Function<SparsePre> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& W_enc, const at::Tensor& bias, const at::Tensor& x,
                            const at::Tensor& idx, const at::Tensor& vals) {
    ctx->save_for_backward({x, idx});
    ctx->saved_data["d_sae"] = W_enc.size(1);
    return vals.detach().clone();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto [gW, gb] = sparse_encoder_grad(saved[0], saved[1], grads[0], ctx->saved_data["d_sae"].toInt());
    return {gW, gb, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor sparse_pre_activations(const at::Tensor& x, const at::Tensor& W_enc, const at::Tensor& bias,
                                  const at::Tensor& idx, const at::Tensor& vals) {
  return SparsePre::apply(W_enc, bias, x, idx, vals);
}

}  // namespace interp::sae_detail
