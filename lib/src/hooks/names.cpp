#include "hooks/names.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "interp/error.h"
#include "interp/hooks.h"

namespace interp {
namespace detail {
namespace {

struct KindName {
  Role::Kind kind;
  const char* tl;  // TransformerLens module name, "{L}" for the layer
};
constexpr KindName kKinds[] = {
    {Role::Embed, "embed"},          {Role::PosEmbed, "pos_embed"}, {Role::Block, "blocks.{L}"},
    {Role::Attn, "blocks.{L}.attn"}, {Role::Mlp, "blocks.{L}.mlp"}, {Role::Ln1, "blocks.{L}.ln1"},
    {Role::Ln2, "blocks.{L}.ln2"},   {Role::LnFinal, "ln_final"},   {Role::Unembed, "unembed"},
};

std::string regex_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

void NameMap::add(const std::string& pattern, const std::string& tl_name, const std::string& where) {
  const KindName* kind = nullptr;
  for (const auto& k : kKinds)
    if (tl_name == k.tl) kind = &k;
  if (!kind) {
    std::vector<std::string> valid;
    for (const auto& k : kKinds) valid.push_back(k.tl);
    throw Error(fmt::format("{}: '{}' is not a TransformerLens module name; use one of: {}", where, tl_name,
                            fmt::join(valid, ", ")));
  }
  bool pattern_has_layer = pattern.find("{L}") != std::string::npos;
  bool tl_has_layer = std::string(kind->tl).find("{L}") != std::string::npos;
  if (pattern_has_layer != tl_has_layer)
    throw Error(fmt::format("{}: '{}' -> '{}': both sides must contain {{L}}, or neither", where, pattern, tl_name));
  std::string re = "^";
  size_t pos = 0, at;
  while ((at = pattern.find("{L}", pos)) != std::string::npos) {
    re += regex_escape(pattern.substr(pos, at - pos)) + "(\\d+)";
    pos = at + 3;
  }
  re += regex_escape(pattern.substr(pos)) + "$";
  entries_.push_back({pattern, std::regex(re), kind->kind});
}

NameMap NameMap::transformer_lens() {
  NameMap m;
  m.source_ = "TransformerLens module names";
  for (const auto& k : kKinds) m.add(k.tl, k.tl, "built-in name map");
  return m;
}

NameMap NameMap::from_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: cannot open name map; check the path", path));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: name map is not valid JSON ({})", path, e.what()));
  }
  if (!j.is_object() || j.empty())
    throw Error(fmt::format("{}: a name map is a JSON object {{\"module.path.{{L}}\": \"blocks.{{L}}\", ...}}", path));
  NameMap m;
  m.source_ = path;
  for (const auto& [pattern, tl] : j.items()) {
    if (!tl.is_string()) throw Error(fmt::format("{}: value for '{}' must be a string", path, pattern));
    m.add(pattern, tl.get<std::string>(), path);
  }
  return m;
}

namespace {

// The shipped name maps: module names of the families people use -> TransformerLens module names.
// models/name_maps/*.json hold the same maps as files, for editing into a map of one's own.
struct BuiltinMap {
  const char* name;
  const char* families;
  std::vector<std::pair<const char*, const char*>> entries;
};
const std::vector<BuiltinMap>& builtin_maps() {
  static const std::vector<BuiltinMap> maps = {
      {"gpt2", "Hugging Face GPT-2 and nanoGPT",
       {{"transformer.wte", "embed"}, {"transformer.wpe", "pos_embed"}, {"transformer.h.{L}", "blocks.{L}"},
        {"transformer.h.{L}.ln_1", "blocks.{L}.ln1"}, {"transformer.h.{L}.attn", "blocks.{L}.attn"},
        {"transformer.h.{L}.ln_2", "blocks.{L}.ln2"}, {"transformer.h.{L}.mlp", "blocks.{L}.mlp"},
        {"transformer.ln_f", "ln_final"}, {"lm_head", "unembed"}}},
      {"llama", "Llama, Mistral, Qwen2 and Gemma",
       {{"model.embed_tokens", "embed"}, {"model.layers.{L}", "blocks.{L}"},
        {"model.layers.{L}.input_layernorm", "blocks.{L}.ln1"}, {"model.layers.{L}.self_attn", "blocks.{L}.attn"},
        {"model.layers.{L}.post_attention_layernorm", "blocks.{L}.ln2"}, {"model.layers.{L}.mlp", "blocks.{L}.mlp"},
        {"model.norm", "ln_final"}, {"lm_head", "unembed"}}},
      {"neox", "GPT-NeoX and Pythia",
       {{"gpt_neox.embed_in", "embed"}, {"gpt_neox.layers.{L}", "blocks.{L}"},
        {"gpt_neox.layers.{L}.input_layernorm", "blocks.{L}.ln1"}, {"gpt_neox.layers.{L}.attention", "blocks.{L}.attn"},
        {"gpt_neox.layers.{L}.post_attention_layernorm", "blocks.{L}.ln2"}, {"gpt_neox.layers.{L}.mlp", "blocks.{L}.mlp"},
        {"gpt_neox.final_layer_norm", "ln_final"}, {"embed_out", "unembed"}}},
  };
  return maps;
}

}  // namespace

std::optional<NameMap> NameMap::builtin(const std::string& name) {
  if (name == "transformer_lens") return transformer_lens();
  for (const auto& b : builtin_maps()) {
    if (name != b.name) continue;
    NameMap m;
    m.source_ = fmt::format("the shipped '{}' map ({} module names)", b.name, b.families);
    for (const auto& [pattern, tl] : b.entries) m.add(pattern, tl, "built-in name map");
    return m;
  }
  return std::nullopt;
}

std::vector<std::string> NameMap::builtin_names() {
  std::vector<std::string> out{"transformer_lens"};
  for (const auto& b : builtin_maps()) out.push_back(b.name);
  return out;
}

NameMap NameMap::from_option(const std::string& value) {
  if (auto b = builtin(value)) return *b;
  if (value.find('/') == std::string::npos && value.find('.') == std::string::npos)
    throw Error(fmt::format("--name-map '{}' is neither a shipped map ({}) nor a .json file", value,
                            fmt::join(builtin_names(), ", ")));
  return from_json_file(value);
}

size_t NameMap::mapped(const std::vector<std::string>& module_paths, std::string* example) const {
  size_t n = 0;
  for (const auto& p : module_paths) {
    Role r = role_of(p);
    if (r.kind == Role::None) continue;
    if (n++ == 0 && example) {
      for (const auto& k : kKinds)
        if (k.kind == r.kind) {
          std::string tl = k.tl;
          if (auto at = tl.find("{L}"); at != std::string::npos) tl.replace(at, 3, std::to_string(r.layer));
          *example = fmt::format("{} -> {}", p, tl);
        }
    }
  }
  return n;
}

std::pair<NameMap, std::string> NameMap::detect(const std::vector<std::string>& module_paths) {
  std::vector<std::pair<size_t, std::string>> scores;
  std::optional<NameMap> best;
  size_t best_n = 0;
  std::string best_name, example;
  for (const auto& name : builtin_names()) {
    NameMap m = *builtin(name);
    std::string ex;
    size_t n = m.mapped(module_paths, &ex);
    scores.emplace_back(n, name);
    if (n > best_n) best = m, best_n = n, best_name = name, example = ex;
  }
  if (!best || best_n < 2)
    return {transformer_lens(),
            fmt::format("no shipped name map matches the module names ({} modules; none maps more than {}), so "
                        "TransformerLens's names are assumed; pass --name-map for other names",
                        module_paths.size(), best_n)};
  std::string runner_up;
  size_t second = 0;
  for (const auto& [n, name] : scores)
    if (name != best_name && n > second) second = n, runner_up = name;
  std::string why = fmt::format("{} chosen: it maps {} of the model's {} module paths (e.g. {})", best->source_,
                                best_n, module_paths.size(), example);
  if (!runner_up.empty()) why += fmt::format("; the next best, '{}', maps {}", runner_up, second);
  return {*best, why};
}

Role NameMap::role_of(const std::string& module_path) const {
  std::smatch match;
  for (const auto& e : entries_) {
    if (std::regex_match(module_path, match, e.regex)) {
      Role r;
      r.kind = e.kind;
      if (match.size() > 1) {
        const std::string digits = match[1].str();
        if (digits.empty() || digits.size() > 6 || digits.find_first_not_of("0123456789") != std::string::npos)
          throw Error(fmt::format("module '{}': layer '{}' is not a layer number", module_path, digits));
        r.layer = std::stoi(digits);
      }
      return r;
    }
  }
  return {};
}

std::vector<PointTag> output_hook_names(const Role& r) {
  switch (r.kind) {
    case Role::Embed: return {{point_name(PointKind::Embed), PointKind::Embed, -1}};
    case Role::PosEmbed: return {{point_name(PointKind::PosEmbed), PointKind::PosEmbed, -1}};
    case Role::Block: return {{point_name(PointKind::ResidPost, r.layer), PointKind::ResidPost, r.layer}};
    case Role::Attn: return {{point_name(PointKind::AttnOut, r.layer), PointKind::AttnOut, r.layer}};
    case Role::Mlp: return {{point_name(PointKind::MlpOut, r.layer), PointKind::MlpOut, r.layer}};
    case Role::Ln1: return {{point_name(PointKind::Ln1, r.layer), PointKind::Ln1, r.layer}};
    case Role::Ln2: return {{point_name(PointKind::Ln2, r.layer), PointKind::Ln2, r.layer}};
    case Role::LnFinal: return {{point_name(PointKind::LnFinal), PointKind::LnFinal, -1}};
    default: return {};
  }
}

std::vector<std::string> closest_names(const std::string& name, const std::vector<std::string>& candidates,
                                       size_t n) {
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& c : candidates) scored.emplace_back(edit_distance(name, c), c);
  std::stable_sort(scored.begin(), scored.end(), [](auto& a, auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  for (size_t i = 0; i < scored.size() && i < n; ++i) out.push_back(scored[i].second);
  return out;
}

std::string did_you_mean(const std::string& name, const std::vector<std::string>& candidates) {
  auto best = closest_names(name, candidates);
  if (best.empty()) return "there are none";
  return fmt::format("closest: {}", fmt::join(best, ", "));
}

}  // namespace detail

namespace {
struct KindInfo {
  PointKind kind;
  const char* short_name;
  const char* pattern;  // {} = the layer
};
constexpr KindInfo kPointKinds[] = {
    {PointKind::Embed, "embed", "hook_embed"},
    {PointKind::PosEmbed, "pos_embed", "hook_pos_embed"},
    {PointKind::ResidPre, "resid_pre", "blocks.{}.hook_resid_pre"},
    {PointKind::ResidMid, "resid_mid", "blocks.{}.hook_resid_mid"},
    {PointKind::ResidPost, "resid_post", "blocks.{}.hook_resid_post"},
    {PointKind::AttnOut, "attn_out", "blocks.{}.hook_attn_out"},
    {PointKind::MlpOut, "mlp_out", "blocks.{}.hook_mlp_out"},
    {PointKind::Ln1, "ln1", "blocks.{}.ln1.hook_normalized"},
    {PointKind::Ln2, "ln2", "blocks.{}.ln2.hook_normalized"},
    {PointKind::LnFinal, "ln_final", "ln_final.hook_normalized"},
    {PointKind::Q, "q", "blocks.{}.attn.hook_q"},
    {PointKind::K, "k", "blocks.{}.attn.hook_k"},
    {PointKind::V, "v", "blocks.{}.attn.hook_v"},
    {PointKind::Z, "z", "blocks.{}.attn.hook_z"},
    {PointKind::AttnScores, "attn_scores", "blocks.{}.attn.hook_attn_scores"},
    {PointKind::Pattern, "pattern", "blocks.{}.attn.hook_pattern"},
    {PointKind::MlpPre, "pre", "blocks.{}.mlp.hook_pre"},
    {PointKind::MlpPost, "post", "blocks.{}.mlp.hook_post"},
    {PointKind::QInput, "q_input", "blocks.{}.hook_q_input"},
    {PointKind::KInput, "k_input", "blocks.{}.hook_k_input"},
    {PointKind::VInput, "v_input", "blocks.{}.hook_v_input"},
    {PointKind::MlpIn, "mlp_in", "blocks.{}.hook_mlp_in"},
    {PointKind::Result, "result", "blocks.{}.attn.hook_result"},
    {PointKind::RotQ, "rot_q", "blocks.{}.attn.hook_rot_q"},
    {PointKind::RotK, "rot_k", "blocks.{}.attn.hook_rot_k"},
    {PointKind::MlpPreLinear, "pre_linear", "blocks.{}.mlp.hook_pre_linear"},
    {PointKind::Ln1Scale, "ln1_scale", "blocks.{}.ln1.hook_scale"},
    {PointKind::Ln2Scale, "ln2_scale", "blocks.{}.ln2.hook_scale"},
    {PointKind::LnFinalScale, "ln_final_scale", "ln_final.hook_scale"},
};
bool kind_has_layer(PointKind k) {
  return k != PointKind::Embed && k != PointKind::PosEmbed && k != PointKind::LnFinal && k != PointKind::LnFinalScale;
}
}  // namespace

const char* kind_name(PointKind kind) {
  for (const auto& k : kPointKinds)
    if (k.kind == kind) return k.short_name;
  return "";
}

std::string point_name(PointKind kind, int layer) {
  for (const auto& k : kPointKinds) {
    if (k.kind != kind) continue;
    if (!kind_has_layer(kind)) return k.pattern;
    if (layer < 0) throw Error(fmt::format("point_name: '{}' needs a layer >= 0", k.short_name));
    return fmt::format(fmt::runtime(k.pattern), layer);
  }
  throw Error("point_name: a module output has no TransformerLens name");
}

int point_layer(const std::string& name) {
  static const std::regex block(R"(^blocks\.(\d+)\.)");
  std::smatch m;
  if (!std::regex_search(name, m, block)) return -1;
  try {
    return std::stoi(m[1]);
  } catch (const std::exception&) {
    return -1;
  }
}

std::string act_name(const std::string& short_name, std::optional<int> layer, std::optional<int> n_layers) {
  const std::string s = short_name == "normalized" ? "ln_final" : short_name;
  const KindInfo* info = nullptr;
  for (const auto& k : kPointKinds)
    if (s == k.short_name) info = &k;
  if (!info) {
    std::vector<std::string> all;
    for (const auto& k : kPointKinds) all.push_back(k.short_name);
    throw Error(fmt::format("act_name: unknown short name '{}'; {}", short_name, detail::did_you_mean(short_name, all)));
  }
  if (!kind_has_layer(info->kind)) return point_name(info->kind);
  if (!layer) throw Error(fmt::format("act_name: '{}' needs a layer", short_name));
  int L = *layer;
  if (L < 0) {
    if (!n_layers) throw Error(fmt::format("act_name: layer {} counts from the end; the number of layers is unknown", L));
    L += *n_layers;
  }
  if (L < 0 || (n_layers && L >= *n_layers))
    throw Error(fmt::format("act_name: layer {} out of range; the model has {} layers", *layer, n_layers.value_or(0)));
  return point_name(info->kind, L);
}

NamesFilter names_filter(std::vector<std::string> names) {
  auto set = std::make_shared<std::vector<std::string>>(std::move(names));
  return [set](const std::string& n) { return std::find(set->begin(), set->end(), n) != set->end(); };
}

NamesFilter names_filter(const std::string& regex) {
  std::shared_ptr<std::regex> re;
  try {
    re = std::make_shared<std::regex>(regex);
  } catch (const std::regex_error& e) {
    throw Error(fmt::format("hook filter '{}' is not a valid regular expression ({})", regex, e.what()));
  }
  return [re](const std::string& n) { return std::regex_search(n, *re); };
}

}  // namespace interp
