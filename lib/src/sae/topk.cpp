// topk (Gao et al. 2024): keep each row's k largest pre-activations, ReLU'd; no sparsity penalty
// (k sets the sparsity); the AuxK loss on dead latents keeps them learning.
//
// On the CPU the selection is a per-row min-heap of k (most of the d_sae values are rejected by
// one comparison with the heap's smallest), rows split across LibTorch's intra-op threads; this is
// several times faster than at::topk's sort-based selection at k << d_sae. Same values and indices
// as at::topk, sorted descending (ties may pick other indices of equal value).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <functional>
#include <utility>
#include <vector>

#include "sae/architectures.h"

namespace interp::sae_detail {
namespace {

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

}  // namespace

SAEArchitecture topk() {
  SAEArchitecture a;
  a.name = "topk";
  a.uses_aux_k = true;
  a.uses_k = true;
  a.activate = [](const SAE& sae, const at::Tensor& pre, bool) {
    auto [vals, idx] = row_topk(pre, sae.config().k);
    return at::zeros_like(pre).scatter(-1, idx, at::relu(vals));
  };
  a.sparsity = [](const SAE&, const at::Tensor& pre, const at::Tensor&) { return at::zeros({}, pre.options()); };
  a.active = [](const SAE& sae, const at::Tensor& pre) {
    auto [vals, idx] = row_topk(pre, sae.config().k);
    return std::make_pair(idx, vals);
  };
  return a;
}

}  // namespace interp::sae_detail
