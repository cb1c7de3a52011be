// interp cache MODEL --tokens ... --out FILE.safetensors: one forward pass, the chosen hook points'
// values written to a safetensors file (with model path and hook names in __metadata__).
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common.h"
#include "interp/error.h"
#include "interp/safetensors.h"

namespace interp::app {

void register_cache(CLI::App& app) {
  auto* cmd = app.add_subcommand("cache", "Run one batch and write the captured activations to a safetensors file");
  struct Args {
    ModelArgs model;
    std::string tokens, hooks, filter, out, dtype = "f32";
  };
  auto a = std::make_shared<Args>();
  a->model.add_to(*cmd);
  cmd->add_option("--tokens", a->tokens, "token ids: \"1,2,3\", sequences separated by ';'")->required();
  auto* hooks = cmd->add_option("--hooks", a->hooks, "comma-separated hook names (default: all points)");
  cmd->add_option("--filter", a->filter, "regular expression on hook names (default: all points)")->excludes(hooks);
  cmd->add_option("--out", a->out, "output .safetensors file")->required();
  cmd->add_option("--dtype", a->dtype, "stored dtype: f32, f16 or bf16")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}))
      ->capture_default_str();
  cmd->callback([a] {
    check_output_file(a->out);
    HookedModel model = a->model.load();
    at::Tensor tokens = parse_tokens(a->tokens);
    NamesFilter filter;
    if (!a->hooks.empty()) {
      auto names = split_list(a->hooks);
      for (const auto& n : names) model.hook_point(n);  // unknown name: error with suggestions
      filter = names_filter(names);
    } else if (!a->filter.empty()) {
      filter = names_filter(a->filter);
    }
    auto [logits, cache] = model.run_with_cache(tokens, filter);
    // Written under the names asked for (a module path stays a module path), else the primary names.
    std::vector<std::string> written;
    if (!a->hooks.empty()) {
      std::vector<int64_t> seen;
      for (const auto& n : split_list(a->hooks)) {
        int64_t order = model.hook_point(n).order;
        if (std::find(seen.begin(), seen.end(), order) != seen.end()) continue;
        seen.push_back(order);
        written.push_back(n);
      }
    } else {
      written = cache.names();
    }
    if (cache.size() == 0)
      throw Error(fmt::format("--filter '{}' matches no hook point; `interp hooks {}` lists them", a->filter,
                              a->model.model));
    at::ScalarType dt = a->dtype == "f16" ? at::kHalf : a->dtype == "bf16" ? at::kBFloat16 : at::kFloat;
    std::map<std::string, at::Tensor> tensors;
    double bytes = 0;
    fmt::print("{:<34}  {:<18}  {:>10}  {:>10}  {:>10}\n", "hook", "shape", "mean", "std", "max|x|");
    for (const auto& name : written) {
      at::Tensor t = cache[name].to(at::kCPU, dt).contiguous();
      at::Tensor f = t.to(at::kFloat);
      fmt::print("{:<34}  {:<18}  {:>10.4f}  {:>10.4f}  {:>10.4f}\n", name, fmt::format("{}", t.sizes()),
                 f.mean().item<double>(), f.numel() > 1 ? f.std().item<double>() : 0.0, f.abs().max().item<double>());
      bytes += static_cast<double>(t.numel() * t.element_size());
      tensors[name] = t;
    }
    tensors["tokens"] = tokens;
    safetensors_save(a->out, tensors,
                     {{"format", "interp.cache.v1"},
                      {"model", model.path()},
                      {"hook_names", fmt::format("{}", fmt::join(written, ","))},
                      {"dtype", a->dtype}});
    fmt::print("wrote {} activations ({}) and the tokens {} to {}\n", written.size(), human_bytes(bytes),
               fmt::format("{}", tokens.sizes()), a->out);
  });
}

}  // namespace interp::app
