// The first program to read: load a TorchScript transformer, list its hook points, cache the
// residual stream, and patch an activation from one prompt into another.
//
//   build/examples/simple tests/fixtures/tiny_trace.pt
#include <ATen/ATen.h>
#include <interp/error.h>
#include <interp/hooks.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: simple MODEL.pt [NAME_MAP.json]\n";
    return 2;
  }
  try {
    // 1. Load. Any torch.jit.script or torch.jit.trace export works; a name map gives models with
    //    other module names (transformer.h.0.attn, ...) the TransformerLens hook names.
    interp::LoadOptions options;
    if (argc > 2) options.name_map = argv[2];
    interp::HookedModel model = interp::HookedModel::load(argv[1], options);
    const interp::ModelInfo& info = model.info();
    std::cout << argv[1] << ": " << info.n_layers << " layers, d_model " << info.d_model << ", "
              << model.hook_points().size() << " hook points\n";
    for (const auto& p : model.hook_points())
      if (p.name.find("blocks.0.") == 0) std::cout << "  " << p.name << " " << p.shape_str() << "\n";

    // 2. Two prompts that differ in one token (a clean and a corrupted run).
    at::Tensor clean = at::tensor({1, 2, 3, 4, 5, 6}, at::kLong).view({1, 6});
    at::Tensor corrupted = clean.clone();
    corrupted[0][2] = 9;

    // 3. Cache only what we need: the residual stream before each block.
    auto [clean_logits, cache] = model.run_with_cache(clean, interp::names_filter("hook_resid_pre"));
    std::cout << "cached " << cache.size() << " tensors; last layer's resid_pre: "
              << cache.get("resid_pre", -1).sizes() << "\n";

    // 4. Patch: put the clean residual stream at position 2 of layer 0 into the corrupted run.
    //    (From layer 1 on, later positions have attended to the corrupted token too.)
    const std::string hook = interp::act_name("resid_pre", 0);
    at::Tensor clean_resid = cache[hook];
    auto patch = [&](at::Tensor& resid, const std::string&) {  // resid: [batch, pos, d_model]
      resid = resid.clone();
      resid.select(1, 2).copy_(clean_resid.select(1, 2));
    };
    at::Tensor corrupted_logits = model.forward(corrupted);
    at::Tensor patched_logits = model.run_with_hooks(corrupted, {{hook, patch}});

    // Layer 0's residual stream differs only at position 2, so this patch restores the clean output.
    auto last = [](const at::Tensor& l) { return l.select(1, l.size(1) - 1); };
    double before = (last(corrupted_logits) - last(clean_logits)).abs().max().item<double>();
    double after = (last(patched_logits) - last(clean_logits)).abs().max().item<double>();
    std::cout << "last-position logits vs clean: corrupted differs by " << before << ", patched by " << after
              << "\n";
    return after < 1e-5 && before > after ? 0 : 1;
  } catch (const interp::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
