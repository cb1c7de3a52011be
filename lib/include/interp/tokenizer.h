// interp/tokenizer.h: sentencepiece tokenizers (.model files), in the same process as LibTorch.
//
// Debian's libsentencepiece and LibTorch carry clashing protobuf symbols; interp keeps sentencepiece
// in a small shim library (libinterp_spm.so) loaded with dlopen(RTLD_LOCAL | RTLD_DEEPBIND), so
// both work in one process. The shim is found through $INTERP_SPM_SHIM, then the build tree, then
// the install prefix.
//
//   auto tok = interp::Tokenizer::load("brown.model");
//   std::vector<int32_t> ids = tok.encode("The jury said.");   // no BOS/EOS: add them as needed
//   std::string text = tok.decode(ids);
//   interp::TokenizerTrainOptions o; o.inputs = {"corpus.txt"}; o.model_prefix = "out/brown";
//   interp::tokenizer_train(o);                                    // writes out/brown.model
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace interp {

class Tokenizer {
 public:
  struct Piece {
    int32_t id;
    uint32_t begin, end;  // byte offsets of the piece's text in the input
  };

  static Tokenizer load(const std::string& path);  // throws interp::Error

  std::vector<int32_t> encode(std::string_view text) const;
  std::vector<Piece> encode_with_offsets(std::string_view text) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string piece(int32_t id) const;

  int32_t vocab_size() const { return vocab_size_; }
  int32_t bos_id() const { return bos_; }  // -1 if the model has none
  int32_t eos_id() const { return eos_; }
  int32_t pad_id() const { return pad_; }
  int32_t unk_id() const { return unk_; }
  const std::string& path() const { return path_; }
  const std::string& hash() const { return hash_; }  // xxh64 of the .model file (hex)

 private:
  std::shared_ptr<void> handle_;
  std::string path_, hash_;
  int32_t vocab_size_ = 0, bos_ = -1, eos_ = -1, pad_ = -1, unk_ = -1;
};

struct TokenizerTrainOptions {
  std::vector<std::string> inputs;  // text files, one sentence (or paragraph) per line
  std::string model_prefix;         // writes PREFIX.model and PREFIX.vocab
  int vocab_size = 1024;
  std::string model_type = "bpe";   // bpe, unigram, char, word
  double character_coverage = 1.0;
  int64_t input_sentence_size = 2000000;
  int threads = 2;
  uint64_t seed = 0;
};

// Trains with sentencepiece's trainer (BOS=1, EOS=2, UNK=0, no PAD; byte fallback on).
void tokenizer_train(const TokenizerTrainOptions& options);

}  // namespace interp
