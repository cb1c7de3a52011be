// Circuit discovery from C++: find the induction circuit of a 2-layer model with EAP-IG and ACDC,
// check the K-composition edge, and measure how faithful the circuit is under every ablation.
//
//   example-circuits MODEL.pt PAIRS.json      (e.g. tests/fixtures/induction_script.pt and induction.pairs.json)
#include <ATen/ATen.h>

#include <cstdio>
#include <iostream>

#include "interp/circuits.h"
#include "interp/error.h"
#include "interp/prompts.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: example-circuits MODEL.pt PAIRS.json\n";
    return 2;
  }
  try {
    // Edge-level circuits need the edge points (per-head q/k/v inputs and outputs).
    interp::LoadOptions lo;
    lo.edge_points = true;
    auto model = interp::HookedModel::load(argv[1], lo);
    auto pairs = interp::load_prompt_pairs(argv[2], nullptr);
    interp::CircuitTask task{pairs.clean, pairs.corrupted, interp::logit_diff(pairs.answers, pairs.wrong), {}};
    auto graph = interp::CircuitGraph::of(model, interp::CircuitLevel::Edge);
    std::printf("%lld edges between %zu nodes\n", static_cast<long long>(graph.n_units()), graph.nodes.size());

    // Which heads are what: previous-token and induction (prefix-matching) scores.
    auto hs = interp::head_scores(model);
    std::cout << "previous-token scores:\n" << hs.prev_token << "\ninduction scores:\n" << hs.induction << "\n";

    // EAP-IG: every edge's estimated effect from one batched forward and one backward.
    interp::DiscoveryOptions ig;
    ig.method = interp::CircuitMethod::EAPIG;
    ig.ig_steps = 10;
    auto scores = interp::discover_circuit(model, graph, task, ig);
    auto rank = scores.ranking();
    std::printf("EAP-IG top edges (%lld forwards, %.3f s):\n", static_cast<long long>(scores.forwards), scores.seconds);
    for (size_t i = 0; i < 5 && i < rank.size(); ++i)
      std::printf("  %-22s %+.3f\n", scores.units[static_cast<size_t>(rank[i])].c_str(), scores.scores[rank[i]].item<double>());

    // ACDC: prune edges whose removal changes the KL to the clean run by less than the threshold.
    interp::DiscoveryOptions acdc;
    acdc.method = interp::CircuitMethod::ACDC;
    auto circuit = interp::discover_circuit(model, graph, task, acdc);
    int kept = 0;
    for (bool k : circuit.kept) kept += k;
    std::printf("ACDC kept %d of %lld edges in %lld batched forwards\n", kept, static_cast<long long>(graph.n_units()),
                static_cast<long long>(circuit.forwards));

    // The same circuit under every ablation choice: the numbers disagree, and that is the point.
    auto report = interp::faithfulness(model, graph, task, circuit, {kept}, interp::ablation_choices(graph));
    for (const auto& c : report.curves)
      std::printf("  %-38s %.3f\n", c.choice.label().c_str(), c.normalized[0]);
    std::printf("spread over the choices: %.3f\n", report.spread[0]);
  } catch (const interp::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
