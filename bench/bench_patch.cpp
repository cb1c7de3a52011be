// Batched activation patching vs one forward per patch (the TransformerLens loop), same process, same
// model, same prompts; the results must agree. Also attribution patching vs full patching.
//
//   bench_patch [--rounds N (3)] [--pos T (32)] [--prompts B (1)] [--hook resid_pre] [--overhead N]
//               [--max-rows N] MODEL
//   (bench/run.sh runs it on the 6-layer d_model 256 benchmark model)
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "interp/error.h"
#include "interp/hooks.h"
#include "interp/patch.h"
#include "bench_util.h"

using Clock = std::chrono::steady_clock;
using interp::bench::median;

int main(int argc, char** argv) {
  int rounds = 3;
  int64_t T = 32, B = 1;
  std::string path, hook = "resid_pre";
  interp::VariantOptions defaults;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--rounds" && i + 1 < argc) rounds = std::stoi(argv[++i]);
    else if (a == "--pos" && i + 1 < argc) T = std::stoll(argv[++i]);
    else if (a == "--prompts" && i + 1 < argc) B = std::stoll(argv[++i]);
    else if (a == "--hook" && i + 1 < argc) hook = argv[++i];
    else if (a == "--overhead" && i + 1 < argc) defaults.overhead_tokens = std::stoll(argv[++i]);
    else if (a == "--max-rows" && i + 1 < argc) defaults.max_rows = std::stoll(argv[++i]);
    else if (a == "-h" || a == "--help") {
      fmt::print("usage: bench_patch [--rounds N (3)] [--pos T (32)] [--prompts B (1)] [--hook resid_pre] [--overhead N (48)] [--max-rows N (128)] MODEL\n");
      return 0;
    } else path = a;
  }
  if (path.empty()) {
    fmt::print(stderr, "error: name a model (see --help)\n");
    return 2;
  }
  try {
    auto model = interp::HookedModel::load(path);
    const auto& info = model.info();
    at::manual_seed(0);
    at::Tensor clean = at::randint(info.d_vocab, {B, T}, at::kLong);
    at::Tensor corrupted = clean.clone();
    corrupted.select(1, T / 3).random_(info.d_vocab);
    corrupted.select(1, T / 2).random_(info.d_vocab);
    auto metric = interp::logit_diff(at::randint(info.d_vocab, {B}, at::kLong), at::randint(info.d_vocab, {B}, at::kLong));
    auto sites = interp::sweep_sites(model, hook, {"layer", "pos"}, T);
    fmt::print("model {}: {} layers, d_model {}; {} x {}: {} patches, {} prompt(s) of {} tokens\n", path, info.n_layers,
               info.d_model, hook, "layer x pos", sites.size(), B, T);

    // One forward per patch, as a TransformerLens loop does it: a hook that writes one position.
    auto [clean_logits, clean_cache] = model.run_with_cache(clean, interp::names_filter("hook_" + hook + "$"));
    auto loop = [&] {
      std::vector<double> out;
      for (const auto& s : sites) {
        int64_t p = s.where.positions[0];
        const at::Tensor& src = clean_cache[s.hook];
        at::Tensor logits = model.run_with_hooks(corrupted, {{s.hook, [&](at::Tensor& act, const std::string&) {
                                                                act = act.clone();
                                                                act.select(1, p).copy_(src.select(1, p));
                                                              }}});
        out.push_back(metric.fn(logits.narrow(1, T - 1, 1)).mean().item<double>());
      }
      return at::tensor(out, at::kDouble);
    };
    using Reuse = interp::VariantOptions::Reuse;
    struct Variant {
      std::string name;
      Reuse reuse;
      std::vector<double> s;
      at::Tensor values;
      interp::VariantStats stats;
    };
    std::vector<Variant> vs = {{"batched, reuse suffix", Reuse::Suffix, {}, {}, {}},
                               {"batched, reuse layers", Reuse::Layers, {}, {}, {}},
                               {"batched, plain", Reuse::None, {}, {}, {}}};
    std::vector<double> loop_s, attr_s;
    at::Tensor loop_values;
    loop();  // warm-up (the profiling executor specialises over the first runs)
    for (int r = 0; r < rounds; ++r) {
      auto t0 = Clock::now();
      loop_values = loop();
      loop_s.push_back(interp::bench::seconds_since(t0));
      for (auto& v : vs) {
        interp::VariantOptions o = defaults;
        o.reuse = v.reuse;
        t0 = Clock::now();
        auto res = interp::patch_sweep(model, clean, corrupted, hook, {"layer", "pos"}, metric, interp::Direction::Denoise, o);
        v.s.push_back(interp::bench::seconds_since(t0));
        v.values = res.values.reshape({-1});
        v.stats = res.stats;
      }
      t0 = Clock::now();
      interp::attribution_patching(model, clean, corrupted, hook, {"layer", "pos"}, metric);
      attr_s.push_back(interp::bench::seconds_since(t0));
    }
    double base = median(loop_s);
    fmt::print("{:<34} {:>9.3f} s  {:>7.2f} ms/patch\n", "one forward per patch (TL loop)", base,
               1e3 * base / static_cast<double>(sites.size()));
    for (const auto& v : vs) {
      double diff = (v.values - loop_values).abs().max().item<double>();
      fmt::print("{:<34} {:>9.3f} s  {:>7.2f} ms/patch  speed-up {:>5.2f}x  forwards {:>3}  row-tokens {:>6}  "
                 "max |diff| vs loop {:.2e}  (mode {})\n",
                 v.name, median(v.s), 1e3 * median(v.s) / static_cast<double>(sites.size()), base / median(v.s),
                 v.stats.forwards, v.stats.row_tokens, diff, v.stats.mode);
    }
    fmt::print("{:<34} {:>9.3f} s  {:.1f}x faster than the batched suffix sweep, {:.1f}x than the loop\n",
               "attribution patching (2 fwd + 1 bwd)", median(attr_s), median(vs[0].s) / median(attr_s),
               base / median(attr_s));
    fmt::print("(median of {} rounds; loop row-tokens {})\n", rounds, static_cast<int64_t>(sites.size()) * B * T);
  } catch (const interp::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
