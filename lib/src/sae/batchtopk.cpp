// batchtopk (Bussmann et al. 2024): in training keep the k * batch largest pre-activations over the
// whole batch (ReLU'd), so rows may use more or fewer than k latents; at inference, keep the
// pre-activations above a threshold estimated during training (the trainer's running mean of the
// smallest kept activation). Training decodes only the kept entries (`active`, padded rows).
#include <ATen/ATen.h>

#include <limits>

#include "sae/architectures.h"
#include "sae/sparse_encode.h"

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
  // Training: the same k * batch entries as rows padded to the busiest row's count, so the forward
  // decodes and back-propagates only them (SAE::forward's sparse path). A pad is index 0 with value
  // -inf: ReLU makes it 0 and passes it no gradient, and the kernels skip zeros.
  a.active = [](const SAE& sae, const at::Tensor& xw, const at::Tensor& bias) {
    const int64_t B = xw.size(0), m = xw.size(1);
    const int64_t n = std::min<int64_t>(sae.config().k * B, xw.numel());
    at::Tensor vals, rows, cols;
    // The batch's best n are among the rows' best c = 4k each unless some row gives all c of its
    // candidates (then it may hold more): select from B x c candidates, and fall back to the
    // whole batch only in that case. Exact either way; the candidates cost a row_topk pass.
    const int64_t c = std::min<int64_t>(m, 4 * sae.config().k);
    if (c < m) {
      auto [cv, ci] = row_topk(xw, c, bias);
      auto [v, pos] = cv.flatten().topk(n);
      at::Tensor r = pos.div(c, "floor");
      if (at::bincount(r, {}, B).max().item<int64_t>() < c) {
        vals = v, rows = r, cols = ci.flatten().index_select(0, pos);
      }
    }
    if (!vals.defined()) {
      const at::Tensor pre = bias.defined() ? xw + bias : xw;
      at::Tensor flat;
      std::tie(vals, flat) = pre.flatten().topk(n);
      rows = flat.div(m, "floor"), cols = flat.remainder(m);
    }
    at::Tensor order = std::get<1>((rows * m + cols).sort());  // by row, then latent
    rows = rows.index_select(0, order), cols = cols.index_select(0, order), vals = vals.index_select(0, order);
    const at::Tensor counts = at::bincount(rows, {}, B);
    const int64_t width = std::max<int64_t>(1, counts.max().item<int64_t>());
    const at::Tensor starts = counts.cumsum(0) - counts;
    const at::Tensor slot = at::arange(n, rows.options()) - starts.index_select(0, rows);
    at::Tensor idx = at::zeros({B, width}, rows.options());
    at::Tensor raw = at::full({B, width}, -std::numeric_limits<float>::infinity(), vals.options());
    idx.index_put_({rows, slot}, cols);
    raw = raw.index_put({rows, slot}, vals);  // out of place: raw carries vals' gradient (dense path)
    return std::make_pair(idx, raw);
  };
  return a;
}

}  // namespace interp::sae_detail
