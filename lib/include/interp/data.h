// interp/data.h: corpora, tokenization, and packing into fixed-length contexts.
//
// Data flows one way: files -> Corpus (documents, optional word tags) -> TokenizedCorpus (one token
// stream, document offsets, each token's tag) -> PackedContexts ([n, ctx] token ids, BOS at each
// context start, deterministic order by seed) -> the model.
//
//   auto corpus = interp::corpus_load("data/brown");               // format detected
//   auto tok = interp::Tokenizer::load("data/brown-1k.model");
//   auto stream = interp::tokenize(corpus, tok);                  // tags aligned to tokens
//   interp::PackedContexts contexts(stream, {/*ctx=*/128});
//   at::Tensor batch = contexts.batch(0, 32);                     // [32, 128] int64
//
// Formats:
//   brown       a folder of Brown corpus files (`word/TAG` tokens, one sentence per line), one
//               document per file; the text is detokenized and every word keeps its tag
//   text-files  a folder of text files (or one file), one document per file
//   text-lines  a text file (or a folder of them), one document per non-empty line
//   tokens      a pre-tokenized .safetensors file written by token_file_save (docs/data.md)
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace interp {

class Tokenizer;

struct Document {
  std::string id;                                      // file name, or file:line
  std::string text;
  std::vector<std::pair<uint32_t, uint32_t>> lines;    // sentences/lines: byte ranges in text
  std::vector<std::pair<uint32_t, uint32_t>> words;    // tagged corpora: each word's byte range
  std::vector<std::string> tags;                       // and its tag (Brown: "nn", "vbd", "np-tl", ...)
};

struct Corpus {
  std::string path, format;
  std::string hash;  // xxh64 over format, document ids and texts: the corpus identity
  std::vector<Document> docs;
};

// format: "auto" (default), "brown", "text-files", "text-lines". Throws interp::Error.
Corpus corpus_load(const std::string& path, const std::string& format = "auto");
Document brown_parse(const std::string& content, const std::string& id);
// Writes every line/sentence on its own line (tokenizer training input), atomically.
void corpus_write_lines(const Corpus& corpus, const std::string& path);

struct TokenizedCorpus {
  std::vector<int32_t> tokens;        // all documents, in order
  std::vector<int64_t> doc_offsets;   // document d is tokens[doc_offsets[d], doc_offsets[d+1])
  std::vector<int16_t> tags;          // per token: index into tag_names, -1 for none (empty if untagged)
  std::vector<std::string> tag_names;
  int32_t vocab_size = 0, bos_id = -1, eos_id = -1;
  std::string tokenizer_hash, corpus_hash, source;  // identities, and a description of the source
};

// Tokenizes every document (no BOS/EOS inside); a token takes the tag of the word its first
// non-space byte falls in.
TokenizedCorpus tokenize(const Corpus& corpus, const Tokenizer& tokenizer);

// Pre-tokenized token files (safetensors; see docs/data.md).
void token_file_save(const TokenizedCorpus& tc, const std::string& path);
TokenizedCorpus token_file_load(const std::string& path);

// The documents `docs` (indices, in the order given) of a tokenized corpus, as a corpus of their own
// (same vocabulary, identities and tag names). Throws interp::Error for an index out of range.
TokenizedCorpus select_documents(const TokenizedCorpus& tc, const std::vector<int64_t>& docs);

// Corpus path -> tokens: a token file directly, anything else through corpus_load + tokenize
// (the tokenizer is needed then). Checks ids against the tokenizer's vocabulary.
TokenizedCorpus load_tokens(const std::string& data, const std::string& format, const Tokenizer* tokenizer);

struct PackOptions {
  int64_t ctx = 128;          // tokens per context, BOS included
  bool bos = true;            // each context starts with BOS
  bool eos_between_docs = true;
  bool shuffle = true;        // context order shuffled by seed (deterministic everywhere)
  uint64_t seed = 0;
};

class PackedContexts {
 public:
  PackedContexts(const TokenizedCorpus& tc, const PackOptions& options);
  int64_t size() const { return n_; }  // number of contexts (the last partial one is dropped)
  int64_t ctx() const { return options_.ctx; }
  at::Tensor batch(int64_t first, int64_t count) const;  // [count, ctx] int64, in packed order
  at::Tensor tags(int64_t first, int64_t count) const;   // [count, ctx] int16, -1 where none
  bool has_tags() const { return !tags_.empty(); }
  const std::vector<std::string>& tag_names() const { return tag_names_; }  // the corpus's, when tagged

 private:
  PackOptions options_;
  std::vector<std::string> tag_names_;
  int64_t n_ = 0;
  std::vector<int32_t> tokens_;  // n_ * ctx, in storage order
  std::vector<int16_t> tags_;
  std::vector<int64_t> order_;   // packed index -> storage index
};

}  // namespace interp
