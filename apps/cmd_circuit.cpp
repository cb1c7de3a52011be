// interp circuit: find a circuit (EAP, EAP-IG, ACDC or per-unit patching) on prompt pairs or the
// built-in induction task, and measure its faithfulness under every ablation choice; writes
// edges.json, faithfulness.json, circuit.svg, curves.svg and index.html.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>

#include "common.h"
#include "interp/circuits.h"
#include "interp/error.h"
#include "interp/util.h"

namespace interp::app {
namespace {

struct Args : TaskArgs {
  ModelArgs model;
  std::string task, method = "eap", level = "edge", ablation = "all", ig_on = "inputs", objective = "kl", sizes, out;
  std::string batches = "auto";
  int ig_steps = 5;
  double threshold = 0.01;
  int64_t max_rows = 256, draw = 20, n_prompts = 32, segment = 8, bos = 0;
  uint64_t seed = 0;
};

// The built-in induction task: clean [BOS, A_1..A_n, A_1..A_{n-1}] -> A_n; corrupted keeps A_n but
// replaces the tokens before it in the first occurrence, so the previous-token information at A_n's
// position is what differs. Metric: logit(A_n) - logit(a token in neither prompt).
CircuitTask induction_task(const HookedModel& model, const Args& a, std::vector<std::string>* facts) {
  const ModelInfo& info = model.info();
  int64_t seg = a.segment;
  if (info.n_ctx > 0) seg = std::min<int64_t>(seg, info.n_ctx / 2);
  if (seg < 2) throw Error("--segment must be at least 2 (and fit twice in the model's context)");
  if (info.d_vocab < 3 * seg + 2)
    throw Error(fmt::format("the induction task needs a vocabulary of at least {} tokens for --segment {}", 3 * seg + 2, seg));
  Rng rng(a.seed);
  const int64_t n = a.n_prompts, T = 2 * seg;
  at::Tensor clean = at::empty({n, T}, at::kLong), corrupted = at::empty({n, T}, at::kLong);
  at::Tensor ans = at::empty({n}, at::kLong), wrong = at::empty({n}, at::kLong);
  for (int64_t b = 0; b < n; ++b) {
    std::vector<int64_t> pool;
    for (int64_t t = 0; t < info.d_vocab; ++t)
      if (t != a.bos) pool.push_back(t);
    rng.shuffle(pool);
    clean[b][0] = corrupted[b][0] = a.bos;
    for (int64_t i = 0; i < seg; ++i) {
      clean[b][1 + i] = pool[static_cast<size_t>(i)];
      corrupted[b][1 + i] = i + 1 < seg ? pool[static_cast<size_t>(seg + i)] : pool[static_cast<size_t>(i)];
      if (i + 1 < seg) clean[b][1 + seg + i] = corrupted[b][1 + seg + i] = pool[static_cast<size_t>(i)];
    }
    ans[b] = pool[static_cast<size_t>(seg - 1)];
    wrong[b] = pool[static_cast<size_t>(2 * seg)];
  }
  facts->push_back(fmt::format("induction task: {} prompts of {} tokens (segment {}, BOS {}, seed {})", n, T, seg, a.bos, a.seed));
  return {clean, corrupted, logit_diff(ans, wrong, -1), {}};
}

std::vector<int64_t> parse_sizes(const std::string& text) {
  std::vector<int64_t> out;
  for (const auto& s : split_list(text)) {
    try {
      size_t used = 0;
      long long v = std::stoll(s, &used);
      if (used != s.size() || v < 0) throw std::invalid_argument(s);
      out.push_back(v);
    } catch (const std::exception&) {
      throw Error(fmt::format("--sizes: '{}' is not a non-negative integer", s));
    }
  }
  return out;
}

}  // namespace

void register_circuit(CLI::App& app) {
  auto* cmd = app.add_subcommand("circuit", "Find a circuit (EAP, EAP-IG, ACDC) and measure its faithfulness under every ablation");
  auto a = std::make_shared<Args>();
  a->model.add_to(*cmd);
  a->add_to(*cmd, /*required=*/false);
  cmd->add_option("--task", a->task, "built-in task instead of --pairs: induction");
  cmd->add_option("--method", a->method, "eap | eap-ig | acdc | patching (each unit alone, real ablation)")->capture_default_str();
  cmd->add_option("--level", a->level, "edge (loads the model with edge points) | node (heads and MLPs)")->capture_default_str();
  cmd->add_option("--ablation", a->ablation,
                  "all (faithfulness under every choice; patch for discovery) | zero | mean | patch | resample")
      ->capture_default_str();
  cmd->add_option("--ig-steps", a->ig_steps, "eap-ig: integration steps")->check(positive())->capture_default_str();
  cmd->add_option("--ig-on", a->ig_on, "eap-ig: interpolate the inputs (embedding) or the activations (receiver inputs)")
      ->capture_default_str();
  cmd->add_option("--threshold", a->threshold, "acdc: remove a unit when the objective grows by less than this")->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--objective", a->objective, "acdc: kl (to the clean run) | metric (|change of the task metric|)")
      ->capture_default_str();
  cmd->add_option("--acdc-batches", a->batches,
                  "acdc: auto (full on cuda, adaptive on cpu) | adaptive (fewest wasted rows) | full (fewest forwards)")
      ->capture_default_str();
  cmd->add_option("--sizes", a->sizes, "faithfulness: circuit sizes, comma-separated (default 0,1,2,3,5,10,20,50,... all)");
  cmd->add_option("--draw", a->draw, "units drawn in circuit.svg (acdc: its circuit)")->check(non_negative())->capture_default_str();
  cmd->add_option("--max-rows", a->max_rows, "rows (circuits x prompts) per batched forward")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--prompts", a->n_prompts, "--task induction: prompts")->check(positive())->capture_default_str();
  cmd->add_option("--segment", a->segment, "--task induction: repeated segment length")->check(positive())->capture_default_str();
  cmd->add_option("--bos", a->bos, "--task induction: the first token of every prompt")->check(non_negative())->capture_default_str();
  cmd->add_option("--seed", a->seed, "seed of the induction prompts and of resampling")->check(non_negative())->capture_default_str();
  cmd->add_option("--out", a->out, "output folder: edges.json, faithfulness.json, circuit.svg, curves.svg, index.html")
      ->required();
  cmd->callback([a] {
    // Check every option before loading anything or creating the output folder.
    if (a->pairs.empty() == a->task.empty()) throw Error("give exactly one of --pairs FILE or --task induction");
    if (!a->task.empty() && a->task != "induction") throw Error(fmt::format("--task {}: the built-in task is induction", a->task));
    CircuitMethod method = parse_method(a->method);
    if (a->level != "edge" && a->level != "node") throw Error(fmt::format("--level {}: use edge or node", a->level));
    if (a->ig_on != "inputs" && a->ig_on != "activations")
      throw Error(fmt::format("--ig-on {}: use inputs or activations", a->ig_on));
    if (a->objective != "kl" && a->objective != "metric")
      throw Error(fmt::format("--objective {}: use kl or metric", a->objective));
    using Spec = DiscoveryOptions::Speculation;
    Spec spec = a->batches == "auto" ? Spec::Auto : a->batches == "adaptive" ? Spec::Adaptive : Spec::Full;
    if (a->batches != "auto" && a->batches != "adaptive" && a->batches != "full")
      throw Error(fmt::format("--acdc-batches {}: use auto, adaptive or full", a->batches));
    const bool all = a->ablation == "all";
    CircuitAblation kind = all ? CircuitAblation::Patch : parse_ablation(a->ablation);
    std::vector<int64_t> sizes = parse_sizes(a->sizes);
    const CircuitLevel level = a->level == "edge" ? CircuitLevel::Edge : CircuitLevel::Node;
    std::error_code ec;
    if (std::filesystem::exists(a->out, ec) && !std::filesystem::is_directory(a->out, ec))
      throw Error(fmt::format("--out {}: exists and is not a folder", a->out));

    ModelArgs margs = a->model;
    margs.edge_points = margs.edge_points || level == CircuitLevel::Edge;
    HookedModel model = margs.load();
    std::vector<std::string> facts_text;
    CircuitTask task;
    if (a->task == "induction") {
      task = induction_task(model, *a, &facts_text);
    } else {
      PromptPairs pairs = a->load_pairs();
      if (!pairs.corrupted.defined()) throw Error(fmt::format("{}: circuits need \"corrupted\" prompts in every pair", a->pairs));
      task = {pairs.clean, pairs.corrupted, a->make_metric(pairs, model), {}};
      facts_text.push_back(fmt::format("{} ({} prompts of {} tokens)", a->pairs, pairs.clean.size(0), pairs.clean.size(1)));
    }
    OutputDir out(a->out);  // before the search: an unusable --out fails now, not after it
    out.create();
    CircuitGraph graph = CircuitGraph::of(model, level);
    fmt::print("circuit: {} at {} level on {}: {} units ({} layers, {} heads{}), metric {}\n", method_name(method), a->level,
               a->model.model, graph.n_units(), graph.n_layers, graph.n_heads, graph.has_mlp ? ", MLPs" : "",
               task.metric.name);
    if (a->task == "induction") {
      HeadScores hs = head_scores(model, 32, 10, a->seed + 1, a->bos);
      fmt::print("head scores on repeated random tokens (prev-token / induction / copying{}):\n",
                 hs.copying_direct ? ", direct path" : ", total effect");
      for (int L = 0; L < graph.n_layers; ++L)
        for (int64_t h = 0; h < graph.n_heads; ++h)
          fmt::print("  a{}.h{}  {:.2f} / {:.2f} / {:+.3f}\n", L, h, hs.prev_token[L][h].item<double>(),
                     hs.induction[L][h].item<double>(), hs.copying[L][h].item<double>());
    }

    DiscoveryOptions o;
    o.method = method;
    o.ig_steps = a->ig_steps;
    o.ig_activations = a->ig_on == "activations";
    o.threshold = a->threshold;
    o.acdc_kl = a->objective == "kl";
    o.acdc_speculation = spec;
    o.ablation.kind = kind;
    o.ablation.seed = a->seed;
    o.run.max_rows = a->max_rows;
    o.run.progress = true;
    CircuitScores scores = discover_circuit(model, graph, task, o);
    fmt::print("{}: clean {} = {:.4g}, corrupted {:.4g}; {} forwards + {} backwards ({} prompt rows) in {:.2f} s\n",
               method_name(method), task.metric.name, scores.clean_metric, scores.corrupted_metric, scores.forwards,
               scores.backwards, scores.rows, scores.seconds);
    auto rank = scores.ranking();
    int64_t kept = 0;
    for (bool k : scores.kept) kept += k;
    if (!scores.kept.empty()) fmt::print("acdc kept {} of {} units (threshold {})\n", kept, graph.n_units(), a->threshold);
    for (size_t i = 0; i < std::min<size_t>(10, rank.size()); ++i)
      fmt::print("  {:>3}. {:<24} {:+.4f}\n", i + 1, scores.units[static_cast<size_t>(rank[i])],
                 scores.scores[rank[i]].item<double>());

    std::vector<AblationChoice> choices;
    for (auto& c : ablation_choices(graph))
      if (all || c.kind == kind) {
        c.seed = a->seed;
        choices.push_back(c);
      }
    if (sizes.empty() && !scores.kept.empty()) {  // the default sizes, and ACDC's circuit size
      for (int64_t s : {0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000})
        if (s < graph.n_units()) sizes.push_back(s);
      sizes.push_back(graph.n_units());
      if (std::find(sizes.begin(), sizes.end(), kept) == sizes.end()) sizes.push_back(kept);
      std::sort(sizes.begin(), sizes.end());
    }
    CircuitRunOptions ro;
    ro.max_rows = a->max_rows;
    ro.progress = true;
    FaithfulnessReport rep = faithfulness(model, graph, task, scores, sizes, choices, ro);
    fmt::print("faithfulness ({} choices, {} forwards, {:.2f} s): smallest circuit reaching 80 / 90 / 95%\n",
               rep.curves.size(), rep.forwards, rep.seconds);
    for (const auto& c : rep.curves) {
      auto s = [&](int p) { return c.smallest.at(p) < 0 ? std::string("none") : std::to_string(c.smallest.at(p)); };
      fmt::print("  {:<38} {:>5} / {:>5} / {:>5}\n", c.choice.label(), s(80), s(90), s(95));
    }
    std::string spread;
    for (size_t i = 0; i < rep.sizes.size(); ++i)
      spread += fmt::format(" k={}: {}", rep.sizes[i], std::isfinite(rep.spread[i]) ? fmt::format("{:.2f}", rep.spread[i]) : "n/a");
    fmt::print("spread of normalized faithfulness over the choices:{}\n", spread);

    std::vector<std::pair<std::string, std::string>> facts = {{"model", a->model.model}};
    for (const auto& f : facts_text) facts.emplace_back("prompts", f);
    facts.emplace_back("method", fmt::format("{} ({} level)", method_name(method), a->level));
    facts.emplace_back("metric", task.metric.name);
    if (method == CircuitMethod::ACDC)
      facts.emplace_back("acdc", fmt::format("threshold {}, objective {}, kept {} of {}", a->threshold, a->objective, kept,
                                             graph.n_units()));
    int64_t draw = scores.kept.empty() ? a->draw : kept;
    std::string graph_svg = circuit_svg(graph, scores, draw), curves = faithfulness_svg(rep);
    auto ej = nlohmann::json::parse(scores_json(graph, scores));
    ej["model"] = a->model.model;
    ej["metric"] = task.metric.name;
    write_text_file(a->out + "/edges.json", ej.dump(1) + "\n");
    write_text_file(a->out + "/faithfulness.json", faithfulness_json(rep));
    write_text_file(a->out + "/circuit.svg", graph_svg);
    write_text_file(a->out + "/curves.svg", curves);
    write_text_file(a->out + "/index.html", circuit_html(graph, scores, rep, graph_svg, curves, facts));
    out.keep();
    fmt::print("wrote {0}/index.html, {0}/edges.json, {0}/faithfulness.json, {0}/circuit.svg, {0}/curves.svg\n", a->out);
  });
}

}  // namespace interp::app
