// Internal: the encoder's pre-activations at a few latents per row, with a sparse backward.
#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>

namespace interp::sae_detail {

// vals [B, k] are (x @ W_enc + bias)[b, idx[b, j]], already computed (without gradient) by the
// caller; the result equals vals and carries their gradient to W_enc [d_in, d_sae] and bias [d_sae]
// without a dense [B, d_sae] gradient: each latent's column gathers the rows of x that chose it
// (grouped by a counting sort, then one latent per task, in parallel). x must not need a gradient.
// CPU float32; elsewhere the caller uses the dense path.
at::Tensor sparse_pre_activations(const at::Tensor& x, const at::Tensor& W_enc, const at::Tensor& bias,
                                  const at::Tensor& idx, const at::Tensor& vals);

// sum_j vals[b, j] * W[idx[b, j]] for every row b (W [d_sae, d], CPU float32), differentiable in W
// and vals; the backward groups the entries by latent as above instead of sorting (embedding_bag's).
at::Tensor sparse_decode(const at::Tensor& W, const at::Tensor& idx, const at::Tensor& vals);

// The k largest values of each row of a [B, n] tensor (plus bias [n] on every row, when given) and
// their indices, sorted descending, as at::topk gives them (ties go to the smaller index; NaN is
// never chosen over a number). CPU float32 without gradient; anything else goes to at::topk.
// Throws interp::Error unless 0 <= k <= n.
std::pair<at::Tensor, at::Tensor> row_topk(const at::Tensor& x, int64_t k, const at::Tensor& bias = {});

// The gradients themselves, for tests and benchmarks: grad_W [d_in, d_sae], grad_bias [d_sae].
std::pair<at::Tensor, at::Tensor> sparse_encoder_grad(const at::Tensor& x, const at::Tensor& idx,
                                                      const at::Tensor& grad_vals, int64_t d_sae);

// A buffer kept between training steps for the encoder's [B, d_sae] GEMM output: a fresh 64 MB
// tensor each step costs its page faults (~15% of a TopK step at the bench's sizes). One holder at
// a time: a concurrent forward on the same SAE gets a fresh tensor instead.
struct Scratch {
  std::atomic<bool> busy{false};
  at::Tensor buffer;
};
class ScratchLease {
 public:
  explicit ScratchLease(Scratch* s) : s_(s && !s->busy.exchange(true) ? s : nullptr) {}
  ~ScratchLease() {
    if (s_) s_->busy.store(false);
  }
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;
  // An uninitialised [rows, cols] tensor like `like`, valid while this lease lives.
  at::Tensor get(int64_t rows, int64_t cols, const at::Tensor& like);

 private:
  Scratch* s_;
};

}  // namespace interp::sae_detail
