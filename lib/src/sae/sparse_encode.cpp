// The TopK encoder's backward as a sparse kernel. With k of d_sae latents active per row, the
// gradient of the pre-activations is 99% zeros; autograd would still build it densely ([B, d_sae]),
// multiply x^T by it (a full GEMM) and sum it over rows. Here the k gradients per row go straight to
// the latents' columns: grad_W_enc[:, j] = sum over (b, i) with idx[b, i] = j of g[b, i] * x[b],
// grad_bias[j] = sum of those g[b, i]. Entries are grouped by latent with a counting sort, and latents
// are split across LibTorch's intra-op threads, each writing only its own rows of grad_W_enc^T.
#include "sae/sparse_encode.h"

#include "interp/error.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <cstring>
#include <limits>
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

namespace {

// A candidate as one integer whose order is (value descending, index ascending): the float's bits
// made monotonic in the high half, the inverted index in the low half. Comparing candidates is then
// one integer compare. Numbers only (NaN never becomes a candidate); -0 is stored as +0.
inline uint64_t encode(float v, int64_t j) {
  uint32_t u;
  v += 0.0f;  // -0 -> +0
  std::memcpy(&u, &v, sizeof u);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<uint64_t>(u) << 32) | static_cast<uint32_t>(~static_cast<uint32_t>(j));
}
inline float decode_value(uint64_t c) {
  uint32_t u = static_cast<uint32_t>(c >> 32);
  u = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}
inline int64_t decode_index(uint64_t c) { return ~static_cast<uint32_t>(c); }

// The best k of a row in (value descending, index ascending) order, NaN ranked below every number:
// the slow path for rows with fewer than k numbers above -inf.
void topk_whole_row(const float* row, const float* bias, int64_t n, int64_t k, float* vals, int64_t* idx) {
  std::vector<std::pair<float, int64_t>> all(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = {row[i] + bias[i], i};
  auto key = [](float v) { return v != v ? -std::numeric_limits<float>::infinity() : v; };
  std::partial_sort(all.begin(), all.begin() + k, all.end(), [&](const auto& a, const auto& b) {
    return key(a.first) > key(b.first) || (key(a.first) == key(b.first) && a.second < b.second);
  });
  for (int64_t i = 0; i < k; ++i) {
    vals[i] = all[static_cast<size_t>(i)].first;
    idx[i] = all[static_cast<size_t>(i)].second;
  }
}

// The best k of one row (values row[j] + bias[j]) into vals/idx, sorted best first. Values above
// the k-th best so far (the floor) are appended to a buffer; when it holds 4k, nth_element keeps the
// best k and raises the floor. Blocks of 16 values all at or below the floor are skipped after one
// vector compare. A value equal to the floor loses to the kept one (it has a smaller index), so the
// strict comparison keeps exactly the first k in (value descending, index ascending) order.
void topk_one_row(const float* row, const float* bias, int64_t n, int64_t k, std::vector<uint64_t>& buf, float* vals,
                  int64_t* idx) {
  constexpr int64_t kBlock = 16;
  const size_t cap = static_cast<size_t>(4 * k);
  buf.clear();
  float floor = -std::numeric_limits<float>::infinity();
  auto compact = [&]() {
    std::nth_element(buf.begin(), buf.begin() + (k - 1), buf.end(), std::greater<uint64_t>());
    buf.resize(static_cast<size_t>(k));
    floor = decode_value(buf[static_cast<size_t>(k - 1)]);
  };
  // GCC/Clang vector extensions: 4-wide compares on any target, no intrinsics.
  typedef float f4 __attribute__((vector_size(16)));
  typedef int i4 __attribute__((vector_size(16)));
  int64_t j = 0;
  for (; j + kBlock <= n; j += kBlock) {
    f4 v[kBlock / 4];
    i4 any = {0, 0, 0, 0};
    for (int64_t q = 0; q < kBlock / 4; ++q) {
      f4 a, b;
      std::memcpy(&a, row + j + 4 * q, sizeof a);
      std::memcpy(&b, bias + j + 4 * q, sizeof b);
      v[q] = a + b;
      any |= v[q] > floor;
    }
    if (!(any[0] | any[1] | any[2] | any[3])) continue;
    float vs[kBlock];
    std::memcpy(vs, v, sizeof vs);
    for (int64_t c = 0; c < kBlock; ++c)
      if (vs[c] > floor) buf.push_back(encode(vs[c], j + c));
    if (buf.size() >= cap) compact();
  }
  for (; j < n; ++j) {
    const float v = row[j] + bias[j];
    if (v > floor) buf.push_back(encode(v, j));
  }
  if (static_cast<int64_t>(buf.size()) < k) return topk_whole_row(row, bias, n, k, vals, idx);
  if (static_cast<int64_t>(buf.size()) > k)
    std::nth_element(buf.begin(), buf.begin() + (k - 1), buf.end(), std::greater<uint64_t>());
  std::sort(buf.begin(), buf.begin() + k, std::greater<uint64_t>());
  for (int64_t i = 0; i < k; ++i) {
    vals[i] = decode_value(buf[static_cast<size_t>(i)]);
    idx[i] = decode_index(buf[static_cast<size_t>(i)]);
  }
}

}  // namespace

// Per row a bounded candidate buffer (topk_one_row), rows split across LibTorch's intra-op threads:
// several times faster than at::topk's sort-based selection at k << n.
std::pair<at::Tensor, at::Tensor> row_topk(const at::Tensor& pre_in, int64_t k, const at::Tensor& bias_in) {
  if (!pre_in.device().is_cpu() || pre_in.scalar_type() != at::kFloat || pre_in.dim() != 2 || pre_in.requires_grad() ||
      (bias_in.defined() && (!bias_in.device().is_cpu() || bias_in.scalar_type() != at::kFloat || bias_in.requires_grad()))) {
    auto [v, i] = (bias_in.defined() ? pre_in + bias_in : pre_in).topk(k, -1);
    return {v, i};
  }
  const at::Tensor pre = pre_in.contiguous();
  const int64_t B = pre.size(0), n = pre.size(1);
  if (k < 0 || k > n) throw Error(fmt::format("top-k: k = {} must be in [0, {}] (the row length)", k, n));
  if (n > std::numeric_limits<uint32_t>::max()) throw Error(fmt::format("top-k: rows of {} values are too long (at most 2^32)", n));
  at::Tensor vals = at::empty({B, k}, pre.options());
  at::Tensor idx = at::empty({B, k}, pre.options().dtype(at::kLong));
  if (k == 0 || B == 0) return {vals, idx};
  const at::Tensor bias = bias_in.defined() ? bias_in.contiguous() : at::zeros({n}, pre.options());
  const float* p = pre.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* vp = vals.data_ptr<float>();
  int64_t* ip = idx.data_ptr<int64_t>();
  at::parallel_for(0, B, 16, [&](int64_t r0, int64_t r1) {
    std::vector<uint64_t> buf;
    buf.reserve(static_cast<size_t>(4 * k + 16));
    for (int64_t r = r0; r < r1; ++r) topk_one_row(p + r * n, bp, n, k, buf, vp + r * k, ip + r * k);
  });
  return {vals, idx};
}

at::Tensor ScratchLease::get(int64_t rows, int64_t cols, const at::Tensor& like) {
  if (!s_) return at::empty({rows, cols}, like.options());
  at::Tensor& b = s_->buffer;
  if (!b.defined() || b.size(0) != rows || b.size(1) != cols || b.device() != like.device() ||
      b.scalar_type() != like.scalar_type()) {
    b.reset();  // the old buffer freed before the new one is made
    b = at::empty({rows, cols}, like.options());
  }
  return b;
}

at::Tensor sparse_pre_activations(const at::Tensor& x, const at::Tensor& W_enc, const at::Tensor& bias,
                                  const at::Tensor& idx, const at::Tensor& vals) {
  return SparsePre::apply(W_enc, bias, x, idx, vals);
}

at::Tensor sparse_decode(const at::Tensor& W, const at::Tensor& idx, const at::Tensor& vals) {
  return SparseDecode::apply(W, vals, idx);
}

}  // namespace interp::sae_detail
