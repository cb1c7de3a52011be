// interp run MODEL --tokens ...: the top-k next tokens after each sequence, with probabilities.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include "common.h"

namespace interp::app {

void register_run(CLI::App& app) {
  auto* cmd = app.add_subcommand("run", "Run the model and print the top-k next tokens with probabilities");
  struct Args {
    ModelArgs model;
    std::string tokens;
    int top_k = 5;
  };
  auto a = std::make_shared<Args>();
  a->model.add_to(*cmd);
  cmd->add_option("--tokens", a->tokens, "token ids: \"1,2,3\", sequences separated by ';'")->required();
  cmd->add_option("--top-k", a->top_k, "how many next tokens to show")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->callback([a] {
    HookedModel model = a->model.load();
    at::Tensor tokens = parse_tokens(a->tokens);
    at::Tensor logits = model.forward(tokens).to(at::kCPU, at::kFloat);  // [batch, pos, d_vocab]
    at::Tensor probs = logits.select(1, logits.size(1) - 1).softmax(-1);
    int64_t k = std::min<int64_t>(a->top_k, probs.size(-1));
    auto [p, idx] = probs.topk(k, -1);
    for (int64_t b = 0; b < tokens.size(0); ++b) {
      fmt::print("sequence {} ({} tokens): next token\n", b, tokens.size(1));
      for (int64_t j = 0; j < k; ++j)
        fmt::print("  {:>6}  p={:.4f}\n", idx[b][j].item<int64_t>(), p[b][j].item<double>());
    }
  });
}

}  // namespace interp::app
