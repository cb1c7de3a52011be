// TopK SAE training throughput: interp's trainer vs a plain PyTorch Python loop
// (bench/sae_reference.py) on the same data with the same number of threads, plus the achieved
// GFLOP/s against this machine's measured matmul rate.
//
//   bench_sae [--d-in 256] [--d-sae 4096] [--k 32] [--batch 4096] [--steps 20] [--threads N]
//             [--data build/bench-sae.safetensors] [--python /usr/bin/python3]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "interp/error.h"
#include "interp/safetensors.h"
#include "interp/sae.h"
#include "interp/sae_train.h"
#include "bench_util.h"

namespace {

class CycleSource : public interp::ActivationSource {
 public:
  explicit CycleSource(at::Tensor x) : x_(std::move(x)) {}
  at::Tensor next(int64_t n) override {
    int64_t nb = x_.size(0) / n;
    at::Tensor out = x_.narrow(0, (i_ % nb) * n, n);
    ++i_;
    return out;
  }
  int64_t d_in() const override { return x_.size(1); }
  std::string describe() const override { return "bench data"; }

 private:
  at::Tensor x_;
  int64_t i_ = 0;
};

using interp::bench::seconds_since;

}  // namespace

int main(int argc, char** argv) {
  int64_t d_in = 256, d_sae = 4096, k = 32, batch = 4096, steps = 20;
  int threads = 0;
  std::string data = "build/bench-sae.safetensors", python = "/usr/bin/python3";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return std::string(i + 1 < argc ? argv[++i] : ""); };
    if (a == "--d-in") d_in = std::stoll(next());
    else if (a == "--d-sae") d_sae = std::stoll(next());
    else if (a == "--k") k = std::stoll(next());
    else if (a == "--batch") batch = std::stoll(next());
    else if (a == "--steps") steps = std::stoll(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--data") data = next();
    else if (a == "--python") python = next();
    else {
      fmt::print("usage: bench_sae [--d-in 256] [--d-sae 4096] [--k 32] [--batch 4096] [--steps 20] [--threads N] "
                 "[--data FILE] [--python /usr/bin/python3]\n");
      return a == "-h" || a == "--help" ? 0 : 2;
    }
  }
  try {
    if (threads > 0) at::set_num_threads(threads);
    threads = at::get_num_threads();
    // Shared data: 8 batches of Gaussian activations with some structure (a random low-rank part).
    at::manual_seed(0);
    at::Tensor x = at::randn({8 * batch, d_in}) + at::mm(at::randn({8 * batch, 16}), at::randn({16, d_in}));
    interp::safetensors_save(data, {{"x", x}});

    // This machine's matmul rate for the encoder's shape.
    at::Tensor A = at::randn({batch, d_in}), Bm = at::randn({d_in, d_sae});
    (void)at::mm(A, Bm);
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; ++i) (void)at::mm(A, Bm).sum().item<float>();
    double mm_gflops = 5 * 2.0 * batch * d_in * d_sae / seconds_since(t0) / 1e9;

    interp::SAEConfig cfg;
    cfg.architecture = "topk";
    cfg.d_in = d_in;
    cfg.d_sae = d_sae;
    cfg.k = k;
    cfg.aux_k = 0;  // the reference has no AuxK either
    interp::SAE sae(cfg);
    CycleSource source(x);
    interp::TrainOptions o;
    o.steps = steps + 3;
    o.batch = batch;
    o.init_samples = batch;
    o.log_every = 0;
    o.b_dec_init = "zeros";
    o.normalize_activations = false;
    double ours = 0;
    {
      // time the steps after 3 warm-up steps: measure the whole run and subtract a 3-step run
      interp::SAE warm(cfg);
      CycleSource ws(x);
      interp::TrainOptions w = o;
      w.steps = 3;
      auto tw = std::chrono::steady_clock::now();
      interp::train_sae(warm, ws, w);
      double warm_s = seconds_since(tw);
      auto tr = std::chrono::steady_clock::now();
      interp::train_sae(sae, source, o);
      double s = seconds_since(tr) - warm_s;
      ours = static_cast<double>(steps * batch) / s;
    }
    // FLOPs per token that a TopK step needs: the dense encoder forward (2*d*m), the sparse encoder
    // backward (2*k*d) and the sparse decoder forward and backward (~6*k*d). The dense weight gradient
    // a plain loop computes (another 2*d*m) is not needed, so it is not counted.
    double flops_per_token = 2.0 * d_in * d_sae + 8.0 * k * d_in;
    std::string cmd = fmt::format("{} {}/sae_reference.py {} {} {} {} {} {}", python,
                                  std::filesystem::path(__FILE__).parent_path().string(), data, d_sae, k, batch, steps,
                                  threads);
    double ref = 0;
    if (FILE* p = popen(cmd.c_str(), "r")) {
      char line[256];
      while (fgets(line, sizeof line, p))
        if (std::sscanf(line, "tokens_per_s=%lf", &ref) == 1) break;
      pclose(p);
    }
    fmt::print("TopK SAE d_in {} d_sae {} k {} batch {}, {} steps, {} threads\n", d_in, d_sae, k, batch, steps, threads);
    fmt::print("  interp trainer      {:>10.0f} tokens/s  ({:.1f} GFLOP/s of useful work; matmul peak here {:.1f} GFLOP/s, "
               "{:.0f}%)\n",
               ours, ours * flops_per_token / 1e9, mm_gflops, 100 * ours * flops_per_token / 1e9 / mm_gflops);
    if (ref > 0)
      fmt::print("  PyTorch Python loop {:>10.0f} tokens/s\n  ratio {:.2f}x (target >= 3)\n", ref, ours / ref);
    else
      fmt::print("  PyTorch reference did not run ({}); ratio unavailable\n", cmd);
  } catch (const interp::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
