// interp steer MODEL --sae DIR --feature N --scale S (--prompt TEXT --tokenizer T | --tokens IDS):
// add an SAE latent's decoder direction (or clamp the latent) during generation, and print the
// continuation beside the unsteered one.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <optional>

#include "common.h"
#include "interp/error.h"
#include "interp/lm_eval.h"
#include "interp/sae.h"
#include "interp/steer.h"
#include "interp/tokenizer.h"

namespace interp::app {

void register_steer(CLI::App& app) {
  auto* cmd = app.add_subcommand("steer", "Generate with an SAE latent added (or clamped), beside the unsteered text");
  struct Args {
    ModelArgs model;
    std::string sae;
    PromptArgs input;
    SteerOptions steer;
    int64_t generate = 20;
  };
  auto a = std::make_shared<Args>();
  a->model.add_to(*cmd);
  cmd->add_option("--sae", a->sae, "SAE folder (SAELens, sparsify or dictionary_learning layout)")->required();
  cmd->add_option("--feature", a->steer.feature, "the latent to steer with")->check(non_negative())->required();
  cmd->add_option("--scale", a->steer.scale, "add: multiple of the latent's decoder direction; clamp: the latent's value")
      ->required();
  cmd->add_option("--mode", a->steer.mode, "add (x + scale * d_f) or clamp (latent set to scale, SAE error kept)")
      ->check(CLI::IsMember({"add", "clamp"}))
      ->capture_default_str();
  cmd->add_option("--hook", a->steer.hook, "hook point (default: the SAE's hook_name)");
  a->input.add_to(*cmd);
  cmd->add_option("--generate", a->generate, "tokens to generate greedily")->check(positive())->capture_default_str();
  cmd->callback([a] {
    std::optional<Tokenizer> tok = a->input.load_tokenizer();
    SAE sae = SAE::load(a->sae);  // before the model: a bad folder fails fast
    HookedModel model = a->model.load();
    sae.to(model.device());
    auto hook = steering_hook(model, sae, a->steer);
    at::Tensor tokens = a->input.sequences(tok);
    fmt::print("steering {} with latent {} of {} ({}, scale {})\n", hook.first, a->steer.feature, a->sae,
               a->steer.mode, a->steer.scale);
    at::Tensor plain = generate_greedy(model, tokens, a->generate);
    at::Tensor steered = generate_greedy(model, tokens, a->generate, {hook});
    auto text = [&](const at::Tensor& row) {
      std::vector<int32_t> ids;
      for (int64_t i = tokens.size(1); i < row.size(0); ++i) ids.push_back(static_cast<int32_t>(row[i].item<int64_t>()));
      std::string s;
      for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
      if (tok) s = fmt::format("{:?}  ({})", tok->decode(ids), s);
      return s;
    };
    for (int64_t b = 0; b < tokens.size(0); ++b) {
      fmt::print("sequence {}\n  unsteered: {}\n  steered:   {}\n", b, text(plain[b]), text(steered[b]));
    }
  });
}

}  // namespace interp::app
