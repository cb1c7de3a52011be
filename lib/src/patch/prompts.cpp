// Prompt pairs from JSON (see interp/patch.h), with errors that name the pair and what to change.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

#include "interp/error.h"
#include "interp/prompts.h"
#include "interp/tokenizer.h"

namespace interp {

PromptPairs load_prompt_pairs(const std::string& path, const Tokenizer* tok) {
  using json = nlohmann::json;
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: cannot open the prompt pairs file", path));
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON ({})", path, e.what()));
  }
  if (!j.is_object() || !j.contains("pairs") || !j["pairs"].is_array() || j["pairs"].empty())
    throw Error(fmt::format("{}: expected {{\"pairs\": [{{\"clean\": ..., \"corrupted\": ..., \"answer\": ..., "
                            "\"wrong\": ...}}, ...]}} with at least one pair",
                            path));
  bool bos = j.value("prepend_bos", true);
  if (!j.value("prepend_bos", json(true)).is_boolean()) throw Error(fmt::format("{}: prepend_bos must be true or false", path));
  auto where = [&](size_t i, const std::string& field) { return fmt::format("{}: pair {} '{}'", path, i, field); };
  auto text_tokens = [&](const std::string& text, size_t i, const std::string& field, bool prompt) {
    if (!tok)
      throw Error(fmt::format("{} is text; pass a tokenizer (--tokenizer) or give token ids ({}_tokens)", where(i, field),
                              field));
    std::vector<int64_t> ids;
    if (prompt && bos && tok->bos_id() >= 0) ids.push_back(tok->bos_id());
    for (int32_t id : tok->encode(text)) ids.push_back(id);
    return ids;
  };
  auto prompt = [&](const json& p, size_t i, const std::string& field) -> std::vector<int64_t> {
    std::string tf = field + "_tokens";
    if (p.contains(tf)) {
      if (!p[tf].is_array() || p[tf].empty())
        throw Error(fmt::format("{} must be a non-empty array of token ids", where(i, tf)));
      std::vector<int64_t> ids;
      for (const auto& v : p[tf]) {
        if (!v.is_number_integer() || v.get<int64_t>() < 0)
          throw Error(fmt::format("{} holds {}, not a token id", where(i, tf), v.dump()));
        ids.push_back(v.get<int64_t>());
      }
      return ids;
    }
    if (!p.contains(field)) return {};
    if (!p[field].is_string() || p[field].get<std::string>().empty())
      throw Error(fmt::format("{} must be a non-empty string", where(i, field)));
    return text_tokens(p[field].get<std::string>(), i, field, true);
  };
  auto answer = [&](const json& p, size_t i, const std::string& field) -> int64_t {
    if (!p.contains(field)) return -1;
    const json& a = p[field];
    if (a.is_number_integer() && a.get<int64_t>() >= 0) return a.get<int64_t>();
    if (!a.is_string()) throw Error(fmt::format("{} must be a token id or a text of one token", where(i, field)));
    auto ids = text_tokens(a.get<std::string>(), i, field, false);
    if (ids.size() != 1) {
      std::string pieces;
      for (auto id : ids) pieces += (pieces.empty() ? "" : "|") + tok->piece(static_cast<int32_t>(id));
      throw Error(fmt::format("{} = \"{}\" is {} tokens ({}); the metric needs one token: give its id, or a text "
                              "that is one token",
                              where(i, field), a.get<std::string>(), ids.size(), pieces));
    }
    return ids[0];
  };

  PromptPairs out;
  if (j.contains("position")) {
    if (!j["position"].is_number_integer()) throw Error(fmt::format("{}: \"position\" must be an integer", path));
    out.position = j["position"].get<int64_t>();
  }
  std::vector<int64_t> clean, corrupted, answers, wrong;
  int64_t T = -1, n = 0, n_corrupted = 0, n_answers = 0, n_wrong = 0;
  for (size_t i = 0; i < j["pairs"].size(); ++i) {
    const json& p = j["pairs"][i];
    if (!p.is_object()) throw Error(fmt::format("{}: pair {} is not an object", path, i));
    auto c = prompt(p, i, "clean");
    if (c.empty()) throw Error(fmt::format("{}: pair {} has no \"clean\" (or \"clean_tokens\")", path, i));
    auto x = prompt(p, i, "corrupted");
    if (T < 0) T = static_cast<int64_t>(c.size());
    if (static_cast<int64_t>(c.size()) != T)
      throw Error(fmt::format("{}: pair {} has {} tokens but pair 0 has {}; prompts are stacked in one batch, so every "
                              "pair needs the same length (reword, or put other lengths in another file)",
                              path, i, c.size(), T));
    if (!x.empty() && x.size() != c.size())
      throw Error(fmt::format("{}: pair {}: clean has {} tokens, corrupted {}; patching replaces activations position by "
                              "position, so both must have the same length (reword, or give token ids)",
                              path, i, c.size(), x.size()));
    clean.insert(clean.end(), c.begin(), c.end());
    if (!x.empty()) {
      corrupted.insert(corrupted.end(), x.begin(), x.end());
      ++n_corrupted;
    }
    int64_t a = answer(p, i, "answer"), w = answer(p, i, "wrong");
    answers.push_back(a), wrong.push_back(w);
    n_answers += a >= 0, n_wrong += w >= 0;
    ++n;
  }
  auto check_all = [&](int64_t have, const char* what) {
    if (have != 0 && have != n)
      throw Error(fmt::format("{}: {} of {} pairs give \"{}\"; give it in every pair or in none", path, have, n, what));
  };
  check_all(n_corrupted, "corrupted");
  check_all(n_answers, "answer");
  check_all(n_wrong, "wrong");
  if (out.position && (*out.position >= T || *out.position < -T))
    throw Error(fmt::format("{}: position {} is outside prompts of {} tokens", path, *out.position, T));
  out.clean = at::tensor(clean, at::kLong).view({n, T});
  if (n_corrupted) out.corrupted = at::tensor(corrupted, at::kLong).view({n, T});
  if (n_answers) out.answers = at::tensor(answers, at::kLong);
  if (n_wrong) out.wrong = at::tensor(wrong, at::kLong);
  for (int64_t t = 0; t < T; ++t) {
    int64_t id = clean[static_cast<size_t>(t)];
    out.pos_labels.push_back(tok ? tok->piece(static_cast<int32_t>(id)) : std::to_string(id));
  }
  return out;
}

void check_token_ids(const PromptPairs& pairs, int64_t d_vocab, const std::string& where) {
  auto check = [&](const at::Tensor& t, const char* field) {
    if (!t.defined() || d_vocab <= 0) return;
    const at::Tensor bad = ((t < 0) | (t >= d_vocab)).nonzero();
    if (bad.numel() == 0) return;
    const int64_t pair = bad[0][0].item<int64_t>();
    const int64_t id = t.dim() == 1 ? t[pair].item<int64_t>() : t[pair][bad[0][1]].item<int64_t>();
    throw Error(fmt::format("{}: pair {} '{}' has token id {}, outside the model's vocabulary of {} (ids 0..{})", where,
                            pair + 1, field, id, d_vocab, d_vocab - 1));
  };
  check(pairs.clean, "clean_tokens");
  check(pairs.corrupted, "corrupted_tokens");
  check(pairs.answers, "answer");
  check(pairs.wrong, "wrong");
}

}  // namespace interp
