// The SAE training forward + backward of interp (sparse kernels: only the active latents are decoded
// and get gradient) against the same step written as the dense rule with ATen ops (dense h, dense
// decode, autograd's dense backward), in one process, paired rounds, median ratio. One line per
// architecture with a sparse path (topk, batchtopk).
//
//   build/bench/bench_sae_paths [--d-in 256] [--d-sae 4096] [--k 32] [--batch 4096] [--rounds 5] [--threads 2]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "interp/sae.h"

int main(int argc, char** argv) {
  int64_t d_in = 256, d_sae = 4096, k = 32, batch = 4096, rounds = 5, threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int64_t v = std::atoll(argv[i + 1]);
    if (a == "--d-in") d_in = v;
    else if (a == "--d-sae") d_sae = v;
    else if (a == "--k") k = v;
    else if (a == "--batch") batch = v;
    else if (a == "--rounds") rounds = v;
    else if (a == "--threads") threads = v;
    else {
      fmt::print(stderr, "usage: bench_sae_paths [--d-in 256] [--d-sae 4096] [--k 32] [--batch 4096] [--rounds 5] [--threads 2]\n");
      return 2;
    }
  }
  at::set_num_threads(static_cast<int>(threads));
  fmt::print("SAE forward + backward, d_in {} d_sae {} k {} batch {}, {} intra-op threads, {} paired rounds\n", d_in,
             d_sae, k, batch, at::get_num_threads(), rounds);
  at::manual_seed(0);
  const at::Tensor x = at::randn({batch, d_in});
  for (const std::string arch : {"topk", "batchtopk"}) {
    interp::SAEConfig c;
    c.architecture = arch, c.d_in = d_in, c.d_sae = d_sae, c.k = k, c.aux_k = 0;
    interp::SAE sae(c);
    auto ours = [&] {
      auto o = sae.forward(x);
      auto g = torch::autograd::grad({o.loss}, sae.parameters());
    };
    auto dense = [&] {
      at::Tensor pre = at::addmm(sae.b_enc() - at::matmul(sae.b_dec(), sae.W_enc()), x, sae.W_enc());
      at::Tensor h;
      if (arch == "topk") {
        auto [v, i] = pre.topk(k, -1);
        h = at::zeros_like(pre).scatter(-1, i, at::relu(v));
      } else {
        auto [v, i] = at::relu(pre).flatten().topk(k * batch);
        h = at::zeros_like(pre).flatten().scatter(0, i, v).view_as(pre);
      }
      at::Tensor loss = (at::addmm(sae.b_dec(), h, sae.W_dec()) - x).pow(2).sum(-1).mean();
      auto g = torch::autograd::grad({loss}, sae.parameters());
    };
    ours(), dense();  // warm-up
    std::vector<double> ratios, t_ours, t_dense;
    for (int64_t r = 0; r < rounds; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      ours();
      auto t1 = std::chrono::steady_clock::now();
      dense();
      auto t2 = std::chrono::steady_clock::now();
      t_ours.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      t_dense.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
      ratios.push_back(t_dense.back() / t_ours.back());
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    fmt::print("  {:<10} interp {:7.1f} ms   dense rule {:7.1f} ms   median ratio {:.2f}x\n", arch, median(t_ours),
               median(t_dense), median(ratios));
  }
  return 0;
}
