// interp run MODEL (--tokens ... | --prompt TEXT --tokenizer T): the top-k next tokens after each
// sequence, with probabilities, and optionally a greedy continuation.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <optional>

#include "common.h"
#include "interp/error.h"
#include "interp/lm_eval.h"
#include "interp/tokenizer.h"

namespace interp::app {

void register_run(CLI::App& app) {
  auto* cmd = app.add_subcommand("run", "Run the model and print the top-k next tokens with probabilities");
  struct Args {
    ModelArgs model;
    PromptArgs input;
    int top_k = 5;
    int64_t generate = 0;
  };
  auto a = std::make_shared<Args>();
  a->model.add_to(*cmd);
  a->input.add_to(*cmd);
  cmd->add_option("--top-k", a->top_k, "how many next tokens to show")->check(positive())->capture_default_str();
  cmd->add_option("--generate", a->generate, "then continue each sequence greedily by this many tokens")
      ->check(non_negative())
      ->capture_default_str();
  cmd->callback([a] {
    std::optional<Tokenizer> tok = a->input.load_tokenizer();
    HookedModel model = a->model.load();
    at::Tensor tokens = a->input.sequences(tok);
    auto show = [&](int64_t id) { return tok ? fmt::format("{:>6} {:?}", id, tok->piece(static_cast<int32_t>(id))) : fmt::format("{:>6}", id); };
    at::Tensor logits = model.forward(tokens).to(at::kCPU, at::kFloat);  // [batch, pos, d_vocab]
    at::Tensor probs = logits.select(1, logits.size(1) - 1).softmax(-1);
    int64_t k = std::min<int64_t>(a->top_k, probs.size(-1));
    auto [p, idx] = probs.topk(k, -1);
    for (int64_t b = 0; b < tokens.size(0); ++b) {
      fmt::print("sequence {} ({} tokens): next token\n", b, tokens.size(1));
      for (int64_t j = 0; j < k; ++j) fmt::print("  {}  p={:.4f}\n", show(idx[b][j].item<int64_t>()), p[b][j].item<double>());
    }
    if (a->generate > 0) {
      at::Tensor out = generate_greedy(model, tokens, a->generate);
      for (int64_t b = 0; b < out.size(0); ++b) {
        std::vector<int32_t> ids;
        for (int64_t i = 0; i < out.size(1); ++i) ids.push_back(static_cast<int32_t>(out[b][i].item<int64_t>()));
        std::vector<int32_t> cont(ids.begin() + tokens.size(1), ids.end());
        std::string text;
        for (size_t i = 0; i < cont.size(); ++i) text += (i ? "," : "") + std::to_string(cont[i]);
        fmt::print("sequence {} greedy continuation ({} tokens): {}\n", b, a->generate, text);
        if (tok) {
          std::vector<int32_t> all;
          for (int32_t id : ids)
            if (id != tok->bos_id()) all.push_back(id);
          fmt::print("  text: {}\n", tok->decode(all));
        }
      }
    }
  });
}

}  // namespace interp::app
