// interp hooks MODEL: the table of hook points with shapes, and the TransformerLens points that
// could not be placed (with the reason).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <regex>

#include "common.h"

namespace interp::app {

void register_hooks(CLI::App& app) {
  auto* cmd = app.add_subcommand("hooks", "List a model's hook points with their shapes");
  auto args = std::make_shared<ModelArgs>();
  auto filter = std::make_shared<std::string>();
  args->add_to(*cmd);
  cmd->add_option("--filter", *filter, "only points whose name or alias matches this regular expression");
  cmd->callback([args, filter] {
    HookedModel model = args->load();
    NamesFilter keep = filter->empty() ? NamesFilter() : names_filter(*filter);
    const ModelInfo& i = model.info();
    auto known = [](int64_t v) { return v > 0 ? std::to_string(v) : std::string("unknown"); };
    std::string heads = known(i.n_heads);
    if (i.n_kv_heads > 0 && i.n_kv_heads != i.n_heads) heads += fmt::format(" ({} key/value)", i.n_kv_heads);
    fmt::print("{}: {} layers, d_model {}, {} heads of {}, vocabulary {}, context {}\n", model.path(), i.n_layers,
               known(i.d_model), heads, known(i.d_head), known(i.d_vocab), known(i.n_ctx));
    fmt::print("names: {}\n", i.name_map_reason);
    size_t w = 4;
    for (const auto& p : model.hook_points()) w = std::max(w, p.name.size());
    fmt::print("{:<{}}  {:<26}  {}\n", "name", w, "shape", "aliases");
    size_t shown = 0;
    for (const auto& p : model.hook_points()) {
      bool want = !keep || keep(p.name);
      for (const auto& a : p.aliases) want = want || keep(a);
      if (!want) continue;
      fmt::print("{:<{}}  {:<26}  {}\n", p.name, w, p.shape_str(), fmt::join(p.aliases, ", "));
      ++shown;
    }
    fmt::print("{} hook points{}\n", shown, keep ? fmt::format(" of {}", model.hook_points().size()) : "");
    if (!model.missing_points().empty()) {
      fmt::print("\nTransformerLens points not placed ({}):\n", model.missing_points().size());
      for (const auto& m : model.missing_points()) fmt::print("  {}: {}\n", m.name, m.reason);
    }
  });
}

}  // namespace interp::app
