// Activation patching from C++: a layer x position sweep of the residual stream (batched), one
// composed ablation, and attribution patching, on a pair of prompts given as token ids.
//
//   example-patching MODEL.pt
#include <ATen/ATen.h>

#include <iostream>

#include "interp/error.h"
#include "interp/hooks.h"
#include "interp/patch.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: example-patching MODEL.pt\n";
    return 2;
  }
  try {
    auto model = interp::HookedModel::load(argv[1]);
    at::Tensor clean = at::tensor({1, 5, 9, 13, 2, 7}, at::kLong).view({1, 6});
    at::Tensor corrupted = at::tensor({1, 5, 30, 13, 2, 7}, at::kLong).view({1, 6});
    auto metric = interp::logit_diff(at::tensor({3}, at::kLong), at::tensor({4}, at::kLong));

    // Denoising sweep: each (layer, position) of resid_pre patched from the clean run, all in a few
    // batched forwards. normalized: 0 = the corrupted run's metric, 1 = the clean run's.
    auto r = interp::patch_sweep(model, clean, corrupted, "resid_pre", {"layer", "pos"}, metric);
    std::cout << "resid_pre by layer x pos (normalized), mode " << r.stats.mode << ", " << r.stats.forwards
              << " forwards:\n" << r.normalized << "\n";

    // Interventions compose: zero head 1 of layer 0 and steer the residual stream at position 3.
    int64_t d = model.info().d_model;
    at::Tensor logits = interp::run_with_interventions(
        model, clean,
        {interp::zero_ablation("blocks.0.attn.hook_z", {{}, {1}, {}}),
         interp::add_direction("blocks.0.hook_resid_post", at::ones({d}) / std::sqrt(double(d)), 4.0, {{3}, {}, {}})});
    std::cout << "logit diff after both interventions: " << metric.fn(logits.narrow(1, 5, 1)).item<double>() << "\n";

    // Attribution patching: the same sweep, linearised, in two forwards and one backward.
    auto a = interp::attribution_patching(model, clean, corrupted, "resid_pre", {"layer", "pos"}, metric);
    std::cout << "attribution estimate (normalized):\n" << a.normalized << "\n";
  } catch (const interp::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
