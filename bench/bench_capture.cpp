// Capture throughput: tokens/s written to an activation store (all residual-stream points) vs the
// plain forward pass's tokens/s over the same batches, same process. Runs adjacent plain/capture
// pairs, alternating which goes first (machine speed drifts on shared hosts), and reports the
// median of the pairs' ratios; the store is deleted after every run.
//
//   bench_capture MODEL TOKENS.safetensors|--random VOCAB [--batches 6] [--batch 32] [--ctx 128]
//                 [--dtype f32] [--rounds 11] [--dir build/bench-store]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "interp/data.h"
#include "interp/error.h"
#include "interp/hooks.h"
#include "interp/store.h"
#include "bench_util.h"

int main(int argc, char** argv) {
  std::string model_path, data, dtype = "f32", dir = "build/bench-store";
  int64_t batches = 6, batch = 32, ctx = 128;
  int rounds = 11;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return std::string(i + 1 < argc ? argv[++i] : ""); };
    if (a == "--batches") batches = std::stoll(next());
    else if (a == "--batch") batch = std::stoll(next());
    else if (a == "--ctx") ctx = std::stoll(next());
    else if (a == "--dtype") dtype = next();
    else if (a == "--rounds") rounds = std::stoi(next());
    else if (a == "--dir") dir = next();
    else if (a == "-h" || a == "--help") {
      fmt::print("usage: bench_capture MODEL TOKENS.safetensors [--batches 6] [--batch 32] [--ctx 128] [--dtype f32] "
                 "[--rounds 11] [--dir build/bench-store]\n");
      return 0;
    } else if (model_path.empty()) model_path = a;
    else data = a;
  }
  try {
    if (model_path.empty() || data.empty()) throw interp::Error("name MODEL and a token file (see --help)");
    auto model = interp::HookedModel::load(model_path);
    interp::TokenizedCorpus tc = interp::token_file_load(data);
    interp::PackOptions po;
    po.ctx = ctx;
    interp::PackedContexts contexts(tc, po);
    std::vector<std::string> hooks;
    for (const auto& p : model.hook_points())
      if (p.name.find("hook_resid_") != std::string::npos) hooks.push_back(p.name);
    const int64_t tokens = batches * batch * ctx;
    fmt::print("{}: {} layers, d_model {}; {} batches of {} x {} tokens; {} resid points stored as {}; threads {}\n",
               model_path, model.info().n_layers, model.info().d_model, batches, batch, ctx, hooks.size(), dtype,
               at::get_num_threads());

    auto plain = [&] {
      auto t0 = std::chrono::steady_clock::now();
      for (int64_t b = 0; b < batches; ++b) (void)model.forward_unhooked(contexts.batch(b * batch, batch)).sum().item<float>();
      return static_cast<double>(tokens) / interp::bench::seconds_since(t0);
    };
    auto capture = [&] {
      std::filesystem::remove_all(dir);
      interp::CaptureOptions o;
      o.hooks = hooks;
      o.n_tokens = tokens;
      o.batch = batch;
      o.dtype = dtype;
      o.pack = po;
      auto t0 = std::chrono::steady_clock::now();
      auto r = interp::capture(model, contexts, dir, o);
      double s = interp::bench::seconds_since(t0);
      std::filesystem::remove_all(dir);
      fmt::print("  capture: {:.1f} s = forward {:.1f} s + waiting for the writer {:.1f} s + other {:.1f} s; writer "
                 "thread CPU {:.2f} s\n",
                 s, r.forward_seconds, r.wait_seconds, s - r.forward_seconds - r.wait_seconds, r.writer_cpu_seconds);
      return static_cast<double>(r.tokens) / s;
    };
    plain();  // warm-up both paths (the profiling executor specialises over the first runs)
    capture();
    std::vector<double> ratios;
    for (int r = 0; r < rounds; ++r) {
      double p, c;
      if (r % 2 == 0) {
        p = plain();
        c = capture();
      } else {
        c = capture();
        p = plain();
      }
      ratios.push_back(c / p);
      fmt::print("  round {}: plain {:.0f} tokens/s, capture {:.0f} tokens/s, ratio {:.3f}\n", r + 1, p, c, c / p);
    }
    auto [lo, hi] = std::minmax_element(ratios.begin(), ratios.end());
    fmt::print("median ratio capture/plain over {} rounds: {:.3f} (min {:.3f}, max {:.3f}; target >= 0.9)\n", rounds,
               interp::bench::median(ratios), *lo, *hi);
  } catch (const interp::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
