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

Role NameMap::role_of(const std::string& module_path) const {
  std::smatch match;
  for (const auto& e : entries_) {
    if (std::regex_match(module_path, match, e.regex)) {
      Role r;
      r.kind = e.kind;
      if (match.size() > 1) r.layer = std::stoi(match[1].str());
      return r;
    }
  }
  return {};
}

std::vector<std::string> output_hook_names(const Role& r) {
  std::string b = fmt::format("blocks.{}.", r.layer);
  switch (r.kind) {
    case Role::Embed: return {"hook_embed"};
    case Role::PosEmbed: return {"hook_pos_embed"};
    case Role::Block: return {b + "hook_resid_post"};
    case Role::Attn: return {b + "hook_attn_out"};
    case Role::Mlp: return {b + "hook_mlp_out"};
    case Role::Ln1: return {b + "ln1.hook_normalized"};
    case Role::Ln2: return {b + "ln2.hook_normalized"};
    case Role::LnFinal: return {"ln_final.hook_normalized"};
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

std::string act_name(const std::string& short_name, std::optional<int> layer, std::optional<int> n_layers) {
  static const char* kNoLayer[] = {"embed", "pos_embed"};
  static const char* kBlock[] = {"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"};
  static const char* kAttn[] = {"q", "k", "v", "z", "attn_scores", "pattern"};
  static const char* kMlp[] = {"pre", "post"};
  for (const char* s : kNoLayer)
    if (short_name == s) return "hook_" + short_name;
  if (short_name == "ln_final" || short_name == "normalized") return "ln_final.hook_normalized";
  if (!layer) throw Error(fmt::format("act_name: '{}' needs a layer", short_name));
  int L = *layer;
  if (L < 0) {
    if (!n_layers) throw Error(fmt::format("act_name: layer {} counts from the end; the number of layers is unknown", L));
    L += *n_layers;
  }
  if (L < 0 || (n_layers && L >= *n_layers))
    throw Error(fmt::format("act_name: layer {} out of range; the model has {} layers", *layer, n_layers.value_or(0)));
  for (const char* s : kBlock)
    if (short_name == s) return fmt::format("blocks.{}.hook_{}", L, short_name);
  for (const char* s : kAttn)
    if (short_name == s) return fmt::format("blocks.{}.attn.hook_{}", L, short_name);
  for (const char* s : kMlp)
    if (short_name == s) return fmt::format("blocks.{}.mlp.hook_{}", L, short_name);
  if (short_name == "ln1" || short_name == "ln2") return fmt::format("blocks.{}.{}.hook_normalized", L, short_name);
  std::vector<std::string> all = {"embed", "pos_embed", "ln_final", "ln1", "ln2"};
  for (const char* s : kBlock) all.push_back(s);
  for (const char* s : kAttn) all.push_back(s);
  for (const char* s : kMlp) all.push_back(s);
  throw Error(fmt::format("act_name: unknown short name '{}'; {}", short_name, detail::did_you_mean(short_name, all)));
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
