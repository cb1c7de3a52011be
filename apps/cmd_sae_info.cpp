// interp sae info DIR: what an SAE folder (or a folder of SAEs by hook) holds, as SAE::load reads it.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common.h"
#include "interp/sae.h"

namespace interp::app {

void register_sae_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("sae", "Inspect SAE folders (SAELens, sparsify or dictionary_learning layout)");
  cmd->require_subcommand(1);
  auto* info = cmd->add_subcommand("info", "Print the format, architecture, sizes and hook of the SAEs in a folder");
  auto dir = std::make_shared<std::string>();
  info->add_option("dir", *dir, "an SAE folder, or a folder of them (one per hook)")->required();
  info->callback([dir] {
    auto saes = sae_inspect(*dir);
    if (saes.size() > 1) fmt::print("{}: {} SAEs\n", *dir, saes.size());
    for (const auto& s : saes) {
      const SAEConfig& c = s.config;
      std::string arch = c.architecture;
      if (sae_architecture(c.architecture).uses_k) arch += fmt::format(" (k {})", c.k);
      if (c.architecture == "matryoshka") arch += fmt::format(" prefixes [{}]", fmt::join(c.prefixes(), ", "));
      fmt::print("{}\n  format        {}\n  architecture  {}\n  d_in, d_sae   {}, {}\n  hook          {}\n"
                 "  normalization {}\n  weights       {}\n",
                 s.dir, s.format, arch, c.d_in, c.d_sae, c.hook_name.empty() ? "(none)" : c.hook_name,
                 c.normalize_activations, s.weights_dtype);
      for (const auto& n : s.notes) fmt::print("  note          {}\n", n);
    }
  });
}

}  // namespace interp::app
