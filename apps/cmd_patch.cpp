// interp patch / interp ablate: activation, attribution or path patching sweeps and ablation sweeps
// on prompt pairs; writes results.json, heatmap.svg and index.html.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <optional>

#include "common.h"
#include "interp/error.h"
#include "interp/patch.h"
#include "interp/prompts.h"
#include "interp/report.h"
#include "interp/tokenizer.h"
#include "interp/util.h"

namespace interp::app {
namespace {

struct Common : TaskArgs {
  ModelArgs model;
  std::string hook = "resid_pre", by = "layer,pos", out;
  std::string reuse = "auto";
  int64_t max_rows = 128;
  void add_to(CLI::App& cmd) {
    model.add_to(cmd);
    TaskArgs::add_to(cmd);
    cmd.add_option("--hook", hook, "short hook name: resid_pre|resid_mid|resid_post|attn_out|mlp_out|z|q|k|v|pattern")
        ->capture_default_str();
    cmd.add_option("--by", by, "sweep axes: layer | layer,pos | layer,head | layer,head,pos")->capture_default_str();
    cmd.add_option("--reuse", reuse, "batched runs: auto | suffix | layers | none (see docs/patching.md)")->capture_default_str();
    cmd.add_option("--max-rows", max_rows, "rows (variants x prompts) per batched forward")
        ->check(positive())
        ->capture_default_str();
    cmd.add_option("--out", out, "output folder: results.json, heatmap.svg, index.html")->required();
  }
  VariantOptions variant_options() const {
    VariantOptions o;
    using R = VariantOptions::Reuse;
    if (reuse == "auto") o.reuse = R::Auto;
    else if (reuse == "suffix") o.reuse = R::Suffix;
    else if (reuse == "layers") o.reuse = R::Layers;
    else if (reuse == "none") o.reuse = R::None;
    else throw Error(fmt::format("--reuse {}: use auto, suffix, layers or none", reuse));
    o.max_rows = max_rows;
    o.progress = true;
    return o;
  }
};

void write_outputs(const Common& c, const PatchResult& r, const PromptPairs& pairs, const std::string& title,
                   const std::string& command) {
  auto j = nlohmann::json::parse(to_json(r));
  j["command"] = command;
  j["model"] = c.model.model;
  j["pairs"] = c.pairs;
  j["n_prompts"] = pairs.clean.size(0);
  j["pos_labels"] = pairs.pos_labels;
  write_text_file(c.out + "/results.json", j.dump(2) + "\n");
  std::string svg = heatmap_svg(r, pairs.pos_labels, title);
  write_text_file(c.out + "/heatmap.svg", svg);
  write_text_file(c.out + "/index.html",
                  report_html(r, svg, title,
                              {{"model", c.model.model}, {"prompt pairs", fmt::format("{} ({} prompts of {} tokens)", c.pairs,
                                                                                      pairs.clean.size(0), pairs.clean.size(1))}}));
  fmt::print("{}: {} = {:.4g} clean, {:.4g} {}; {} sites in {:.2f} s ({} forwards, mode {})\n", title, r.metric, r.clean,
             r.corrupted, r.direction.find("ablate") != std::string::npos ? "(n/a)" : "corrupted", r.labels.size(),
             r.stats.seconds, r.stats.forwards, r.stats.mode);
  if (!r.stats.fallback.empty()) fmt::print("note: {}\n", r.stats.fallback);
  const bool ablate = r.direction.find("ablate") != std::string::npos;
  if (std::abs(r.clean - r.corrupted) < 1e-12 || !std::isfinite(r.clean - r.corrupted))
    fmt::print("warning: the {} run gives the same {} ({:.4g}) as the {} run, so normalized values are undefined "
               "(null in results.json); check that the corruption changes what the metric reads\n",
               ablate ? "ablated-nothing" : "clean", r.metric, r.clean, ablate ? "zero" : "corrupted");
  at::Tensor v = r.values.reshape({-1});
  double ref = r.direction.find("ablate") != std::string::npos ? r.clean : r.corrupted;
  auto order = (v - ref).abs().argsort(0, /*descending=*/true);
  for (int64_t k = 0; k < std::min<int64_t>(5, v.numel()); ++k) {
    int64_t i = order[k].item<int64_t>();
    double nz = r.normalized.reshape({-1})[i].item<double>();
    fmt::print("  {:<28} {} {:+.4f}  normalized {}\n", r.labels[static_cast<size_t>(i)], r.metric, v[i].item<double>(),
               std::isfinite(nz) ? fmt::format("{:+.3f}", nz) : "n/a");
  }
  fmt::print("wrote {0}/results.json, {0}/heatmap.svg, {0}/index.html\n", c.out);
}


}  // namespace

void register_patch(CLI::App& app) {
  auto* cmd = app.add_subcommand("patch", "Activation / attribution / path patching sweep on prompt pairs");
  struct Args : Common {
    std::string direction = "denoise", method = "activation", receivers;
  };
  auto a = std::make_shared<Args>();
  a->add_to(*cmd);
  cmd->add_option("--direction", a->direction, "denoise (clean into corrupted) | noise (corrupted into clean)")
      ->capture_default_str();
  cmd->add_option("--method", a->method, "activation | attribution (linear, 2 forwards + 1 backward) | path")
      ->capture_default_str();
  cmd->add_option("--receivers", a->receivers,
                  "path: receiver points HOOK[:HEAD], comma-separated (e.g. blocks.1.attn.hook_q:0,blocks.1.attn.hook_k:0)");
  cmd->callback([a, cmd] {
    if (a->direction != "denoise" && a->direction != "noise")
      throw Error(fmt::format("--direction {}: use denoise or noise", a->direction));
    HookedModel model = a->model.load();
    PromptPairs pairs = a->load_pairs();
    if (!pairs.corrupted.defined())
      throw Error(fmt::format("{}: patching needs \"corrupted\" prompts in every pair", a->pairs));
    Metric metric = a->make_metric(pairs, model);
    OutputDir out(a->out);  // before the sweep: an unusable --out fails now, not after it
    out.create();
    Direction dir = a->direction == "noise" ? Direction::Noise : Direction::Denoise;
    auto by = split_list(a->by);
    PatchResult r;
    std::string title;
    if (a->method == "activation") {
      r = patch_sweep(model, pairs.clean, pairs.corrupted, a->hook, by, metric, dir, a->variant_options());
      title = fmt::format("activation patching ({}): {} by {}", a->direction, a->hook, a->by);
    } else if (a->method == "attribution") {
      r = attribution_patching(model, pairs.clean, pairs.corrupted, a->hook, by, metric, dir);
      title = fmt::format("attribution patching ({}): {} by {}", a->direction, a->hook, a->by);
    } else if (a->method == "path") {
      if (a->receivers.empty()) throw Error("--method path needs --receivers HOOK[:HEAD],...");
      std::vector<PatchSite> receivers;
      for (const auto& item : split_list(a->receivers)) {
        auto colon = item.rfind(':');
        PatchSite s{item, {}, item};
        if (colon != std::string::npos) {
          s.hook = item.substr(0, colon);
          try {
            s.where.heads = {std::stoll(item.substr(colon + 1))};
          } catch (const std::exception&) {
            throw Error(fmt::format("--receivers: '{}' is not HOOK[:HEAD]", item));
          }
        }
        receivers.push_back(s);
      }
      r = path_patch_heads(model, pairs.clean, pairs.corrupted, receivers, metric, dir);
      title = fmt::format("path patching ({}): every head -> {}", a->direction, a->receivers);
    } else {
      throw Error(fmt::format("--method {}: use activation, attribution or path", a->method));
    }
    (void)cmd;
    write_outputs(*a, r, pairs, title, "interp patch");
    out.keep();
  });
}

void register_ablate(CLI::App& app) {
  auto* cmd = app.add_subcommand("ablate", "Ablation sweep (zero, mean or resample) on prompts");
  struct Args : Common {
    std::string ablation = "mean";
    uint64_t seed = 0;
  };
  auto a = std::make_shared<Args>();
  a->hook = "z";
  a->by = "layer,head";
  a->add_to(*cmd);
  cmd->add_option("--ablation", a->ablation,
                  "zero | mean (over the corrupted prompts, or the prompts themselves) | resample (from them)")
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "resample: seed")->check(non_negative())->capture_default_str();
  cmd->callback([a] {
    Ablation abl;
    if (a->ablation == "zero") abl = Ablation::Zero;
    else if (a->ablation == "mean") abl = Ablation::Mean;
    else if (a->ablation == "resample") abl = Ablation::Resample;
    else throw Error(fmt::format("--ablation {}: use zero, mean or resample", a->ablation));
    HookedModel model = a->model.load();
    PromptPairs pairs = a->load_pairs();
    at::Tensor reference = pairs.corrupted.defined() ? pairs.corrupted : pairs.clean;
    Metric metric = a->make_metric(pairs, model);
    OutputDir out(a->out);
    out.create();
    std::vector<int64_t> shape;
    auto sites = sweep_sites(model, a->hook, split_list(a->by), pairs.clean.size(1), &shape);
    PatchResult r = ablation_sweep(model, pairs.clean, reference, sites, abl, metric, a->seed, a->variant_options());
    r.hook = a->hook;
    r.axes = split_list(a->by);
    r.shape = shape;
    r.values = r.values.reshape(shape);
    r.normalized = r.normalized.reshape(shape);
    write_outputs(*a, r, pairs, fmt::format("{} ablation: {} by {}", a->ablation, a->hook, a->by), "interp ablate");
    out.keep();
  });
}

}  // namespace interp::app
