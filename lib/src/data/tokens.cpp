#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "interp/data.h"
#include "interp/error.h"
#include "interp/safetensors.h"
#include "interp/tokenizer.h"
#include "interp/util.h"

namespace interp {

TokenizedCorpus tokenize(const Corpus& corpus, const Tokenizer& tok) {
  TokenizedCorpus tc;
  tc.vocab_size = tok.vocab_size();
  tc.bos_id = tok.bos_id();
  tc.eos_id = tok.eos_id();
  tc.tokenizer_hash = tok.hash();
  tc.corpus_hash = corpus.hash;
  tc.source = fmt::format("{} ({})", corpus.path, corpus.format);
  const bool tagged = std::any_of(corpus.docs.begin(), corpus.docs.end(), [](auto& d) { return !d.tags.empty(); });
  std::map<std::string, int16_t> tag_ids;
  tc.doc_offsets.push_back(0);
  for (const auto& doc : corpus.docs) {
    auto pieces = tok.encode_with_offsets(doc.text);
    size_t w = 0;  // words are sorted by offset; walk them alongside the pieces
    for (const auto& p : pieces) {
      tc.tokens.push_back(p.id);
      if (!tagged) continue;
      uint32_t b = p.begin;  // the piece's first non-space byte
      while (b < p.end && b < doc.text.size() && doc.text[b] == ' ') ++b;
      while (w < doc.words.size() && doc.words[w].second <= b) ++w;
      int16_t tag = -1;
      if (w < doc.words.size() && doc.words[w].first <= b && b < doc.words[w].second) {
        auto [it, added] = tag_ids.emplace(doc.tags[w], static_cast<int16_t>(tag_ids.size()));
        if (added && tag_ids.size() > 32000) throw Error("more than 32000 distinct tags; is this a tagged corpus?");
        tag = it->second;
      }
      tc.tags.push_back(tag);
    }
    tc.doc_offsets.push_back(static_cast<int64_t>(tc.tokens.size()));
  }
  tc.tag_names.resize(tag_ids.size());
  for (const auto& [name, id] : tag_ids) tc.tag_names[static_cast<size_t>(id)] = name;
  return tc;
}

void token_file_save(const TokenizedCorpus& tc, const std::string& path) {
  auto i32 = at::empty({static_cast<int64_t>(tc.tokens.size())}, at::kInt);
  std::memcpy(i32.data_ptr(), tc.tokens.data(), tc.tokens.size() * sizeof(int32_t));
  auto off = at::empty({static_cast<int64_t>(tc.doc_offsets.size())}, at::kLong);
  std::memcpy(off.data_ptr(), tc.doc_offsets.data(), tc.doc_offsets.size() * sizeof(int64_t));
  std::map<std::string, at::Tensor> t = {{"tokens", i32}, {"doc_offsets", off}};
  if (!tc.tags.empty()) {
    auto tags = at::empty({static_cast<int64_t>(tc.tags.size())}, at::kShort);
    std::memcpy(tags.data_ptr(), tc.tags.data(), tc.tags.size() * sizeof(int16_t));
    t["tags"] = tags;
  }
  safetensors_save(path, t,
                   {{"format", "interp.tokens.v1"},
                    {"vocab_size", std::to_string(tc.vocab_size)},
                    {"bos_id", std::to_string(tc.bos_id)},
                    {"eos_id", std::to_string(tc.eos_id)},
                    {"tokenizer_xxh64", tc.tokenizer_hash},
                    {"corpus_xxh64", tc.corpus_hash},
                    {"source", tc.source},
                    {"tag_names", nlohmann::json(tc.tag_names).dump()}});
}

TokenizedCorpus token_file_load(const std::string& path) {
  SafetensorsFile f = safetensors_load(path);
  auto bad = [&](const std::string& why) {
    return Error(fmt::format("{}: not an interp token file: {} (write one with `interp tokenize`)", path, why));
  };
  auto meta = [&](const char* k) {
    auto it = f.metadata.find(k);
    if (it == f.metadata.end()) throw bad(fmt::format("metadata '{}' missing", k));
    return it->second;
  };
  if (meta("format") != "interp.tokens.v1") throw bad("format is '" + meta("format") + "'");
  if (!f.tensors.count("tokens") || !f.tensors.count("doc_offsets")) throw bad("needs 'tokens' and 'doc_offsets'");
  at::Tensor tokens = f.tensors["tokens"], off = f.tensors["doc_offsets"];
  if (tokens.scalar_type() != at::kInt || tokens.dim() != 1) throw bad("'tokens' must be I32 [n]");
  if (off.scalar_type() != at::kLong || off.dim() != 1 || off.numel() < 1) throw bad("'doc_offsets' must be I64 [docs+1]");
  TokenizedCorpus tc;
  tc.tokens.assign(tokens.data_ptr<int32_t>(), tokens.data_ptr<int32_t>() + tokens.numel());
  tc.doc_offsets.assign(off.data_ptr<int64_t>(), off.data_ptr<int64_t>() + off.numel());
  if (tc.doc_offsets.front() != 0 || tc.doc_offsets.back() != tokens.numel() ||
      !std::is_sorted(tc.doc_offsets.begin(), tc.doc_offsets.end()))
    throw bad("'doc_offsets' must rise from 0 to the number of tokens");
  try {
    tc.vocab_size = std::stoi(meta("vocab_size"));
    tc.bos_id = std::stoi(meta("bos_id"));
    tc.eos_id = std::stoi(meta("eos_id"));
    tc.tag_names = nlohmann::json::parse(meta("tag_names")).get<std::vector<std::string>>();
  } catch (const std::exception& e) {
    throw bad(fmt::format("bad metadata ({})", e.what()));
  }
  tc.tokenizer_hash = meta("tokenizer_xxh64");
  tc.corpus_hash = meta("corpus_xxh64");
  tc.source = path;
  for (int32_t t : tc.tokens)
    if (t < 0 || t >= tc.vocab_size) throw bad(fmt::format("token id {} outside the vocabulary of {}", t, tc.vocab_size));
  if (f.tensors.count("tags")) {
    at::Tensor tags = f.tensors["tags"];
    if (tags.scalar_type() != at::kShort || tags.numel() != tokens.numel()) throw bad("'tags' must be I16 [n]");
    tc.tags.assign(tags.data_ptr<int16_t>(), tags.data_ptr<int16_t>() + tags.numel());
    for (int16_t t : tc.tags)
      if (t < -1 || t >= static_cast<int64_t>(tc.tag_names.size())) throw bad("a tag index is outside tag_names");
  }
  return tc;
}

TokenizedCorpus load_tokens(const std::string& data, const std::string& format, const Tokenizer* tok) {
  bool token_file = format == "tokens" || (format == "auto" && data.size() > 12 &&
                                           data.compare(data.size() - 12, 12, ".safetensors") == 0);
  if (token_file) {
    TokenizedCorpus tc = token_file_load(data);
    if (tok && tok->hash() != tc.tokenizer_hash)
      throw Error(fmt::format("{} was tokenized with another tokenizer (xxh64 {}) than {} ({})", data, tc.tokenizer_hash,
                              tok->path(), tok->hash()));
    return tc;
  }
  if (!tok) throw Error(fmt::format("{} is text: pass --tokenizer (a sentencepiece .model)", data));
  return tokenize(corpus_load(data, format), *tok);
}

TokenizedCorpus select_documents(const TokenizedCorpus& tc, const std::vector<int64_t>& docs) {
  TokenizedCorpus out;
  out.tag_names = tc.tag_names;
  out.vocab_size = tc.vocab_size, out.bos_id = tc.bos_id, out.eos_id = tc.eos_id;
  out.tokenizer_hash = tc.tokenizer_hash, out.corpus_hash = tc.corpus_hash;
  out.source = fmt::format("{} ({} of its documents)", tc.source, docs.size());
  out.doc_offsets.push_back(0);
  const int64_t n = static_cast<int64_t>(tc.doc_offsets.size()) - 1;
  for (int64_t d : docs) {
    if (d < 0 || d >= n) throw Error(fmt::format("{}: document {} out of range (it has {})", tc.source, d, n));
    const int64_t a = tc.doc_offsets[static_cast<size_t>(d)], b = tc.doc_offsets[static_cast<size_t>(d) + 1];
    out.tokens.insert(out.tokens.end(), tc.tokens.begin() + a, tc.tokens.begin() + b);
    if (!tc.tags.empty()) out.tags.insert(out.tags.end(), tc.tags.begin() + a, tc.tags.begin() + b);
    out.doc_offsets.push_back(static_cast<int64_t>(out.tokens.size()));
  }
  return out;
}

PackedContexts::PackedContexts(const TokenizedCorpus& tc, const PackOptions& o) : options_(o) {
  if (o.ctx < 2) throw Error(fmt::format("context length {} is too short", o.ctx));
  if (o.bos && tc.bos_id < 0) throw Error("BOS at each context asked for, but the tokenizer has no BOS token");
  const bool tagged = !tc.tags.empty();
  if (tagged) tag_names_ = tc.tag_names;
  std::vector<int32_t> cur;
  std::vector<int16_t> cur_tags;
  auto start = [&] {
    cur.clear();
    cur_tags.clear();
    if (o.bos) {
      cur.push_back(tc.bos_id);
      cur_tags.push_back(-1);
    }
  };
  auto push = [&](int32_t t, int16_t tag) {
    cur.push_back(t);
    cur_tags.push_back(tag);
    if (static_cast<int64_t>(cur.size()) == o.ctx) {
      tokens_.insert(tokens_.end(), cur.begin(), cur.end());
      if (tagged) tags_.insert(tags_.end(), cur_tags.begin(), cur_tags.end());
      ++n_;
      start();
    }
  };
  start();
  for (size_t d = 0; d + 1 < tc.doc_offsets.size(); ++d) {
    for (int64_t i = tc.doc_offsets[d]; i < tc.doc_offsets[d + 1]; ++i)
      push(tc.tokens[static_cast<size_t>(i)], tagged ? tc.tags[static_cast<size_t>(i)] : int16_t{-1});
    if (o.eos_between_docs && tc.eos_id >= 0) push(tc.eos_id, -1);
  }
  if (n_ == 0)
    throw Error(fmt::format("{}: {} tokens do not fill one context of {}", tc.source, tc.tokens.size(), o.ctx));
  order_.resize(static_cast<size_t>(n_));
  for (int64_t i = 0; i < n_; ++i) order_[static_cast<size_t>(i)] = i;
  if (o.shuffle) Rng(o.seed).shuffle(order_);
}

at::Tensor PackedContexts::batch(int64_t first, int64_t count) const {
  if (first < 0 || count < 0 || first + count > n_)
    throw Error(fmt::format("contexts [{}, {}) outside the {} packed contexts", first, first + count, n_));
  at::Tensor out = at::empty({count, options_.ctx}, at::kLong);
  auto* p = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < count; ++i) {
    const int32_t* src = tokens_.data() + order_[static_cast<size_t>(first + i)] * options_.ctx;
    std::copy(src, src + options_.ctx, p + i * options_.ctx);
  }
  return out;
}

at::Tensor PackedContexts::tags(int64_t first, int64_t count) const {
  if (first < 0 || count < 0 || first + count > n_)
    throw Error(fmt::format("contexts [{}, {}) outside the {} packed contexts", first, first + count, n_));
  at::Tensor out = at::full({count, options_.ctx}, -1, at::kShort);
  if (tags_.empty()) return out;
  auto* p = out.data_ptr<int16_t>();
  for (int64_t i = 0; i < count; ++i) {
    const int16_t* src = tags_.data() + order_[static_cast<size_t>(first + i)] * options_.ctx;
    std::copy(src, src + options_.ctx, p + i * options_.ctx);
  }
  return out;
}

}  // namespace interp
