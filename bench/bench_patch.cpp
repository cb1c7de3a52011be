#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <chrono>
#include "interp/hooks.h"
int main(int argc, char** argv) {
  if (argc > 2) at::set_num_threads(std::stoi(argv[2]));
  auto model = interp::HookedModel::load(argv[1]);
  int T = 32;
  at::manual_seed(0);
  for (int B : {1, 4, 16, 32, 64, 128}) {
    at::Tensor tokens = at::randint(model.info().d_vocab, {B, T}, at::kLong);
    for (int w = 0; w < 3; ++w) model.forward(tokens);
    int n = std::max(3, 256 / B);
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) model.forward(tokens);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / n;
    at::Tensor t1 = tokens.narrow(0,0,1);
    fmt::print("B={} T={} {:.2f} ms/forward {:.3f} ms/row\n", B, T, ms, ms / B);
  }
}
