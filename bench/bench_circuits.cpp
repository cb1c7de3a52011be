// Circuit discovery cost on the induction model: EAP and EAP-IG in forward-equivalents and wall time,
// ACDC's batched forwards and wall time, against the one-forward-per-edge patching loop; same process,
// same model and prompts, rounds interleaved, medians reported.
//
//   bench_circuits [--rounds N (5)] [--threads N (1)] MODEL PAIRS.json
//   (bench/run.sh runs it on tests/fixtures/induction_script.pt)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "bench_util.h"
#include "interp/circuits.h"
#include "interp/error.h"
#include "interp/prompts.h"

using Clock = std::chrono::steady_clock;
using interp::bench::median;
using interp::bench::seconds_since;

int main(int argc, char** argv) {
  int rounds = 5, threads = 1;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--rounds" && i + 1 < argc) rounds = std::stoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::stoi(argv[++i]);
    else if (a == "-h" || a == "--help") {
      fmt::print("usage: bench_circuits [--rounds N (5)] [--threads N (1)] MODEL PAIRS.json\n");
      return 0;
    } else pos.push_back(a);
  }
  if (pos.size() != 2) {
    fmt::print(stderr, "usage: bench_circuits [--rounds N (5)] [--threads N (1)] MODEL PAIRS.json\n");
    return 2;
  }
  try {
    at::set_num_threads(threads);
    interp::LoadOptions lo;
    lo.edge_points = true;
    auto model = interp::HookedModel::load(pos[0], lo);
    auto plain = interp::HookedModel::load(pos[0]);
    auto pairs = interp::load_prompt_pairs(pos[1], nullptr);
    interp::CircuitTask task{pairs.clean, pairs.corrupted, interp::logit_diff(pairs.answers, pairs.wrong), {}};
    auto graph = interp::CircuitGraph::of(model, interp::CircuitLevel::Edge);
    const int64_t E = graph.n_units(), B = pairs.clean.size(0);
    fmt::print("bench_circuits: {} ({} edges), {} prompts of {} tokens, {} thread(s), {} rounds\n", pos[0], E, B,
               pairs.clean.size(1), threads, rounds);

    interp::DiscoveryOptions eap, ig, acdc, acdc_full, acdc_wide, patch_batched, patch_loop;
    ig.method = interp::CircuitMethod::EAPIG;
    acdc.method = acdc_full.method = interp::CircuitMethod::ACDC;
    acdc.acdc_speculation = interp::DiscoveryOptions::Speculation::Adaptive;
    acdc_full.acdc_speculation = interp::DiscoveryOptions::Speculation::Full;
    acdc_wide = acdc_full;
    acdc_wide.method = interp::CircuitMethod::ACDC;
    acdc_wide.run.max_rows = 1024;  // 64 variants a forward: two-level speculation
    patch_batched.method = patch_loop.method = interp::CircuitMethod::Patching;
    patch_loop.run.max_rows = B;  // one circuit (one edge patched) per forward
    struct Job {
      std::string name;
      std::function<interp::CircuitScores()> run;
      std::vector<double> secs;
      interp::CircuitScores last;
    };
    std::vector<Job> jobs = {
        {"forward, edge points", [&] { model.forward(pairs.clean); return interp::CircuitScores{}; }, {}, {}},
        {"forward, plain model", [&] { plain.forward(pairs.clean); return interp::CircuitScores{}; }, {}, {}},
        {"eap", [&] { return interp::discover_circuit(model, graph, task, eap); }, {}, {}},
        {"eap-ig (5 steps)", [&] { return interp::discover_circuit(model, graph, task, ig); }, {}, {}},
        {"acdc (adaptive batches)", [&] { return interp::discover_circuit(model, graph, task, acdc); }, {}, {}},
        {"acdc (full batches)", [&] { return interp::discover_circuit(model, graph, task, acdc_full); }, {}, {}},
        {"acdc (full, 1024 rows)", [&] { return interp::discover_circuit(model, graph, task, acdc_wide); }, {}, {}},
        {"patching, batched", [&] { return interp::discover_circuit(model, graph, task, patch_batched); }, {}, {}},
        {"patching, 1 forward/edge", [&] { return interp::discover_circuit(model, graph, task, patch_loop); }, {}, {}},
    };
    for (auto& j : jobs) j.run();  // warm-up
    for (int r = 0; r < rounds; ++r)
      for (auto& j : jobs) {
        auto t0 = Clock::now();
        j.last = j.run();
        j.secs.push_back(seconds_since(t0));
      }
    const double fwd = median(jobs[0].secs), fwd_plain = median(jobs[1].secs);
    const double loop = median(jobs.back().secs);
    const int64_t loop_forwards = jobs.back().last.forwards;
    fmt::print("{:<26} {:>10} {:>14} {:>16} {:>10} {:>12}\n", "", "median ms", "fwd-equiv", "fwd-equiv plain", "forwards",
               "vs loop");
    for (size_t i = 0; i < jobs.size(); ++i) {
      const auto& j = jobs[i];
      double s = median(j.secs);
      fmt::print("{:<26} {:>10.2f} {:>14.1f} {:>16.1f} {:>10} {:>11.1f}x\n", j.name, s * 1e3, s / fwd, s / fwd_plain,
                 i < 2 ? std::string("1") : std::to_string(j.last.forwards), loop / s);
    }
    for (size_t i : {4, 5, 6}) {
      const auto& a = jobs[i].last;
      int kept = 0;
      for (bool k : a.kept) kept += k;
      fmt::print("{}: {} batched forwards ({} prompt rows) vs {} in the per-edge loop: {:.1f}x fewer forwards; kept {} "
                 "edges\n",
                 jobs[i].name, a.forwards, a.rows, loop_forwards,
                 static_cast<double>(loop_forwards) / static_cast<double>(a.forwards), kept);
    }
    fmt::print("(fwd-equiv: wall time / one forward of the {} prompts; the edge-point graph's forward costs {:.2f}x the "
               "plain model's)\n",
               B, fwd / fwd_plain);
  } catch (const interp::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
