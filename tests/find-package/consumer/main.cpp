// A user's program: find_package(interp), load a model, cache the residual stream.
#include <interp/hooks.h>

#include <ATen/ATen.h>
#include <iostream>

int main(int argc, char** argv) {
  auto model = interp::HookedModel::load(argv[1]);
  auto [logits, cache] = model.run_with_cache(at::zeros({1, 4}, at::kLong), interp::names_filter("resid_post"));
  for (const auto& name : cache.names()) std::cout << name << " " << cache[name].sizes() << "\n";
  return logits.size(-1) > 0 ? 0 : 1;
}
