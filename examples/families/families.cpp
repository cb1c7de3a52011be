// Hooks on a Llama / NeoX / Gemma-style model with no name map: interp detects the family from the
// module names, finds the rotary, grouped-query and gated-MLP points, and patches them like any other.
//
//   build/examples/example-families tests/fixtures/tiny_llama_trace.pt
#include <ATen/ATen.h>
#include <interp/error.h>
#include <interp/hooks.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: example-families MODEL.pt\n";
    return 2;
  }
  try {
    interp::HookedModel model = interp::HookedModel::load(argv[1]);  // no --name-map needed
    const interp::ModelInfo& info = model.info();
    std::cout << "names: " << info.name_map_reason << "\n"
              << info.n_heads << " query heads, " << info.n_kv_heads << " key/value heads of " << info.d_head << "\n";
    for (const auto& m : model.missing_points()) std::cout << "  not in this family: " << m.name << ": " << m.reason << "\n";

    at::Tensor tokens = at::tensor({1, 7, 3, 9, 4, 2}, at::kLong).view({1, 6});
    // Queries before and after rotary, in TransformerLens's layout [batch, pos, head, d_head].
    auto [logits, cache] = model.run_with_cache(tokens, interp::names_filter("blocks\\.0\\.attn\\.hook_(q|rot_q|k)$"));
    std::cout << "hook_q " << cache["blocks.0.attn.hook_q"].sizes() << ", hook_rot_q "
              << cache["blocks.0.attn.hook_rot_q"].sizes() << ", hook_k " << cache["blocks.0.attn.hook_k"].sizes() << "\n";
    // Position 0 is not rotated: rot_q equals q there.
    double d0 = (cache["blocks.0.attn.hook_rot_q"].select(1, 0) - cache["blocks.0.attn.hook_q"].select(1, 0)).abs().max().item<double>();
    std::cout << "position 0: |rot_q - q| max " << d0 << "\n";

    // Zero key/value head 0's keys after rotary: every query head that reads it changes.
    at::Tensor patched = model.run_with_hooks(tokens, {{"blocks.0.attn.hook_rot_k", [](at::Tensor& k, const std::string&) {
                                                          k = k.clone();
                                                          k.select(2, 0).zero_();
                                                        }}});
    std::cout << "zeroing rotated key head 0 moves the logits by up to "
              << (patched - logits).abs().max().item<double>() << "\n";
    return d0 < 1e-6 ? 0 : 1;
  } catch (const interp::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
