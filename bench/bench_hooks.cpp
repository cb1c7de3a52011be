// Hook overhead: the unmodified module's forward vs the rewritten graph with hooks inactive, with all
// residual-stream points cached, and with every point cached. Same process, same tokens, variants
// interleaved (rotated order each round), median of many rounds; prints ratios to the plain forward.
//
//   bench_hooks [--rounds N] [--threads N] MODEL:BATCH:CTX [MODEL:BATCH:CTX ...]
//   (bench/run.sh exports the models and runs the configurations named in the issues)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "interp/error.h"
#include "interp/hooks.h"
#include "bench_util.h"

using interp::bench::median;

int main(int argc, char** argv) {
  int rounds = 15, threads = 0;
  std::vector<std::string> configs;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--rounds" && i + 1 < argc) rounds = std::stoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::stoi(argv[++i]);
    else if (a == "-h" || a == "--help") {
      fmt::print("usage: bench_hooks [--rounds N (15)] [--threads N (LibTorch default)] MODEL:BATCH:CTX ...\n");
      return 0;
    } else configs.push_back(a);
  }
  if (configs.empty()) {
    fmt::print(stderr, "error: name at least one MODEL:BATCH:CTX (see --help)\n");
    return 2;
  }
  if (threads > 0) at::set_num_threads(threads);
  fmt::print("threads: {}, rounds: {} (median of each variant; variants interleaved)\n", at::get_num_threads(), rounds);
  try {
    for (const auto& cfg : configs) {
      auto c1 = cfg.find(':'), c2 = cfg.rfind(':');
      if (c1 == std::string::npos || c1 == c2) throw interp::Error(fmt::format("'{}' is not MODEL:BATCH:CTX", cfg));
      std::string path = cfg.substr(0, c1);
      int64_t batch = std::stoll(cfg.substr(c1 + 1, c2 - c1 - 1)), ctx = std::stoll(cfg.substr(c2 + 1));
      auto model = interp::HookedModel::load(path);
      at::manual_seed(0);
      at::Tensor tokens = at::randint(model.info().d_vocab, {batch, ctx}, at::kLong);
      auto resid = interp::names_filter("hook_resid_(pre|mid|post)$");
      size_t n_resid = model.run_with_cache(tokens, resid).second.size();
      size_t n_all = model.hook_points().size();
      struct Variant {
        std::string name;
        std::function<at::Tensor()> run;
        std::vector<double> ms;
      };
      std::vector<Variant> v = {
          {"plain module forward", [&] { return model.forward_unhooked(tokens); }, {}},
          {"hooks installed, inactive", [&] { return model.forward(tokens); }, {}},
          {fmt::format("cache all resid ({} points)", n_resid), [&] { return model.run_with_cache(tokens, resid).first; }, {}},
          {fmt::format("cache every point ({})", n_all), [&] { return model.run_with_cache(tokens).first; }, {}},
      };
      for (int w = 0; w < 3; ++w)
        for (auto& x : v) x.run();  // warm-up: the profiling executor specialises over the first runs
      for (int r = 0; r < rounds; ++r) {
        for (size_t k = 0; k < v.size(); ++k) {
          auto& x = v[(k + static_cast<size_t>(r)) % v.size()];
          auto t0 = std::chrono::steady_clock::now();
          at::Tensor out = x.run();
          (void)out.sum().item<float>();  // make sure the work is done (matters on CUDA)
          x.ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        }
      }
      const auto& i = model.info();
      fmt::print("\n{}: {} layers, d_model {}, batch {}, ctx {}\n", path, i.n_layers, i.d_model, batch, ctx);
      double base = median(v[0].ms);
      fmt::print("  {:<32} {:>10}  {:>7}\n", "variant", "median ms", "ratio");
      for (auto& x : v) fmt::print("  {:<32} {:>10.3f}  {:>6.3f}x\n", x.name, median(x.ms), median(x.ms) / base);
    }
  } catch (const interp::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
