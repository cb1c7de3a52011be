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

#include <algorithm>
#include <utility>
#include <vector>

namespace interp::sae_detail {

namespace {

// out[idx[b, i]] += w[b, i] * src[b] for every entry with w != 0: out [d_sae, d], plus, if sums is
// given, sums[j] = the sum of the w that went to row j. Entries are grouped by row with a counting
// sort; rows are split across threads, each writing only its own.
at::Tensor scatter_rows(const at::Tensor& src_in, const at::Tensor& idx_in, const at::Tensor& w_in, int64_t d_sae,
                        at::Tensor* sums) {
  const at::Tensor src = src_in.detach().contiguous().to(at::kFloat);
  const at::Tensor idx = idx_in.contiguous().to(at::kLong);
  const at::Tensor w = w_in.detach().contiguous().to(at::kFloat);
  const int64_t d = src.size(1), k = idx.size(1), n = idx.numel();
  const float* sp = src.data_ptr<float>();
  const int64_t* ip = idx.data_ptr<int64_t>();
  const float* wp = w.data_ptr<float>();
  std::vector<int64_t> start(static_cast<size_t>(d_sae) + 1, 0);
  for (int64_t e = 0; e < n; ++e)
    if (wp[e] != 0.f) ++start[static_cast<size_t>(ip[e]) + 1];
  for (int64_t j = 0; j < d_sae; ++j) start[j + 1] += start[j];
  std::vector<int64_t> order(static_cast<size_t>(start[d_sae]));
  {
    std::vector<int64_t> pos(start.begin(), start.end() - 1);
    for (int64_t e = 0; e < n; ++e)
      if (wp[e] != 0.f) order[pos[ip[e]]++] = e;
  }
  at::Tensor out = at::zeros({d_sae, d}, src.options());
  if (sums) *sums = at::zeros({d_sae}, src.options());
  float* op = out.data_ptr<float>();
  float* bp = sums ? sums->data_ptr<float>() : nullptr;
  at::parallel_for(0, d_sae, 16, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      float* row = op + j * d;
      float sum = 0.f;
      for (int64_t s = start[j]; s < start[j + 1]; ++s) {
        const int64_t e = order[s];
        const float wv = wp[e];
        const float* xr = sp + (e / k) * d;
        for (int64_t c = 0; c < d; ++c) row[c] += wv * xr[c];
        sum += wv;
      }
      if (bp) bp[j] = sum;
    }
  });
  return out;
}

// a . b with eight independent partial sums: a single running sum is one long dependency chain
// (float addition is not reassociated by the compiler), eight let it pipeline and vectorise.
float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8)
    for (int u = 0; u < 8; ++u) acc[u] += a[c + u] * b[c + u];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; c < n; ++c) s += a[c] * b[c];
  return s;
}

}  // namespace

std::pair<at::Tensor, at::Tensor> sparse_encoder_grad(const at::Tensor& x, const at::Tensor& idx,
                                                      const at::Tensor& grad_vals, int64_t d_sae) {
  at::Tensor gb;
  at::Tensor gWt = scatter_rows(x, idx, grad_vals, d_sae, &gb);
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

// y[b] = sum_i vals[b, i] * W[idx[b, i]]; backward: grad_W = scatter_rows(grad_y, idx, vals),
// grad_vals[b, i] = W[idx[b, i]] . grad_y[b]. Rows split across threads in both directions.
struct SparseDecode : public torch::autograd::Function<SparseDecode> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& W_in, const at::Tensor& vals_in,
                            const at::Tensor& idx_in) {
    const at::Tensor W = W_in.detach().contiguous(), vals = vals_in.detach().contiguous(), idx = idx_in.contiguous();
    ctx->save_for_backward({W_in, vals_in, idx_in});
    const int64_t B = idx.size(0), k = idx.size(1), d = W.size(1);
    at::Tensor y = at::zeros({B, d}, W.options());
    const float* wp = W.data_ptr<float>();
    const float* vp = vals.data_ptr<float>();
    const int64_t* ip = idx.data_ptr<int64_t>();
    float* yp = y.data_ptr<float>();
    at::parallel_for(0, B, 64, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        float* yr = yp + b * d;
        for (int64_t i = 0; i < k; ++i) {
          const float v = vp[b * k + i];
          if (v == 0.f) continue;
          const float* wr = wp + ip[b * k + i] * d;
          for (int64_t c = 0; c < d; ++c) yr[c] += v * wr[c];
        }
      }
    });
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor W = saved[0].detach().contiguous(), vals = saved[1], idx = saved[2].contiguous();
    const at::Tensor gy = grads[0].contiguous();
    at::Tensor gW = scatter_rows(gy, idx, vals, W.size(0), nullptr);
    const int64_t B = idx.size(0), k = idx.size(1), d = W.size(1);
    at::Tensor gv = at::empty({B, k}, W.options());
    const float* wp = W.data_ptr<float>();
    const float* gp = gy.data_ptr<float>();
    const int64_t* ip = idx.data_ptr<int64_t>();
    float* op = gv.data_ptr<float>();
    at::parallel_for(0, B, 64, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t i = 0; i < k; ++i) {
          const float* wr = wp + ip[b * k + i] * d;
          const float* gr = gp + b * d;
          op[b * k + i] = dot(wr, gr, d);
        }
    });
    return {gW, gv, at::Tensor()};
  }
};

}  // namespace

// Per row, a min-heap of k (most values are rejected by one comparison with the heap's smallest),
// rows split across LibTorch's intra-op threads: several times faster than at::topk's sort-based
// selection at k << n.
std::pair<at::Tensor, at::Tensor> row_topk(const at::Tensor& pre_in, int64_t k) {
  if (!pre_in.device().is_cpu() || pre_in.scalar_type() != at::kFloat || pre_in.dim() != 2 || pre_in.requires_grad()) {
    auto [v, i] = pre_in.topk(k, -1);
    return {v, i};
  }
  const at::Tensor pre = pre_in.contiguous();
  const int64_t B = pre.size(0), n = pre.size(1);
  at::Tensor vals = at::empty({B, k}, pre.options());
  at::Tensor idx = at::empty({B, k}, pre.options().dtype(at::kLong));
  const float* p = pre.data_ptr<float>();
  float* vp = vals.data_ptr<float>();
  int64_t* ip = idx.data_ptr<int64_t>();
  at::parallel_for(0, B, 16, [&](int64_t r0, int64_t r1) {
    using Item = std::pair<float, int64_t>;  // (value, index); the heap's top is the smallest kept
    auto worse = [](const Item& a, const Item& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
    std::vector<Item> heap(static_cast<size_t>(k));
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = p + r * n;
      for (int64_t j = 0; j < k; ++j) heap[j] = {row[j], j};
      std::make_heap(heap.begin(), heap.end(), worse);
      float floor = heap.front().first;
      for (int64_t j = k; j < n; ++j) {
        if (!(row[j] > floor)) continue;
        std::pop_heap(heap.begin(), heap.end(), worse);
        heap.back() = {row[j], j};
        std::push_heap(heap.begin(), heap.end(), worse);
        floor = heap.front().first;
      }
      std::sort_heap(heap.begin(), heap.end(), worse);  // descending by value
      for (int64_t j = 0; j < k; ++j) {
        vp[r * k + j] = heap[j].first;
        ip[r * k + j] = heap[j].second;
      }
    }
  });
  return {vals, idx};
}

at::Tensor sparse_pre_activations(const at::Tensor& x, const at::Tensor& W_enc, const at::Tensor& bias,
                                  const at::Tensor& idx, const at::Tensor& vals) {
  return SparsePre::apply(W_enc, bias, x, idx, vals);
}

at::Tensor sparse_decode(const at::Tensor& W, const at::Tensor& idx, const at::Tensor& vals) {
  return SparseDecode::apply(W, vals, idx);
}

}  // namespace interp::sae_detail
