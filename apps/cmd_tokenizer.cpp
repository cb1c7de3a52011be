// interp tokenizer train|encode|decode, and interp tokenize (text -> a pre-tokenized token file).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <filesystem>

#include "common.h"
#include "interp/data.h"
#include "interp/error.h"
#include "interp/tokenizer.h"

namespace interp::app {

void register_tokenizer(CLI::App& app) {
  auto* cmd = app.add_subcommand("tokenizer", "Train a sentencepiece tokenizer, or encode/decode with one");
  cmd->require_subcommand(1);

  struct Train {
    std::string data, format = "auto", out;
    int vocab_size = 1024;
    std::string model_type = "bpe";
  };
  auto t = std::make_shared<Train>();
  auto* train = cmd->add_subcommand("train", "Train a tokenizer on a corpus (writes OUT.model and OUT.vocab)");
  train->add_option("--data", t->data, "corpus: a Brown folder, text file(s)")->required();
  train->add_option("--format", t->format, "auto, brown, text-files, text-lines")->capture_default_str();
  train->add_option("--vocab-size", t->vocab_size, "vocabulary size")->capture_default_str();
  train->add_option("--model-type", t->model_type, "bpe or unigram")->capture_default_str();
  train->add_option("--out", t->out, "output prefix, e.g. data/brown-1k")->required();
  train->callback([t] {
    auto start = std::chrono::steady_clock::now();
    Corpus corpus = corpus_load(t->data, t->format);
    std::string lines = t->out + ".lines.txt";
    corpus_write_lines(corpus, lines);
    TokenizerTrainOptions o;
    o.inputs = {lines};
    o.model_prefix = t->out;
    o.vocab_size = t->vocab_size;
    o.model_type = t->model_type;
    fmt::print("training a {} tokenizer (vocabulary {}) on {} documents of {} ({})...\n", t->model_type,
               t->vocab_size, corpus.docs.size(), t->data, corpus.format);
    try {
      tokenizer_train(o);
    } catch (...) {
      std::filesystem::remove(lines);
      throw;
    }
    std::filesystem::remove(lines);
    Tokenizer tok = Tokenizer::load(t->out + ".model");
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print("wrote {}.model ({} pieces, BOS {}, EOS {}) in {:.1f} s\n", t->out, tok.vocab_size(), tok.bos_id(),
               tok.eos_id(), s);
  });

  struct Codec {
    std::string tokenizer, text, tokens;
  };
  auto c = std::make_shared<Codec>();
  auto* enc = cmd->add_subcommand("encode", "Print the token ids (and pieces) of a text");
  enc->add_option("--tokenizer", c->tokenizer, "sentencepiece .model file")->required();
  enc->add_option("text", c->text, "text to encode")->required();
  enc->callback([c] {
    Tokenizer tok = Tokenizer::load(c->tokenizer);
    auto ids = tok.encode(c->text);
    std::vector<std::string> pieces;
    for (int32_t id : ids) pieces.push_back(tok.piece(id));
    fmt::print("{}\n{}\n", fmt::join(ids, ","), fmt::join(pieces, " "));
  });
  auto* dec = cmd->add_subcommand("decode", "Print the text of token ids");
  dec->add_option("--tokenizer", c->tokenizer, "sentencepiece .model file")->required();
  dec->add_option("--tokens", c->tokens, "token ids: \"1,2,3\"")->required();
  dec->callback([c] {
    Tokenizer tok = Tokenizer::load(c->tokenizer);
    at::Tensor t = parse_tokens(c->tokens);
    std::vector<int32_t> ids(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
    fmt::print("{}\n", tok.decode(ids));
  });
}

void register_tokenize(CLI::App& app) {
  auto* cmd = app.add_subcommand("tokenize", "Tokenize a corpus into a pre-tokenized token file (docs/data.md)");
  struct Args {
    std::string data, format = "auto", tokenizer, out;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--data", a->data, "corpus: a Brown folder, text file(s)")->required();
  cmd->add_option("--format", a->format, "auto, brown, text-files, text-lines")->capture_default_str();
  cmd->add_option("--tokenizer", a->tokenizer, "sentencepiece .model file")->required();
  cmd->add_option("--out", a->out, "output .safetensors token file")->required();
  cmd->callback([a] {
    check_output_file(a->out);
    Tokenizer tok = Tokenizer::load(a->tokenizer);
    Corpus corpus = corpus_load(a->data, a->format);
    TokenizedCorpus tc = tokenize(corpus, tok);
    token_file_save(tc, a->out);
    fmt::print("wrote {} tokens of {} documents ({}, {} tags) to {}\n", tc.tokens.size(), corpus.docs.size(),
               corpus.format, tc.tag_names.size(), a->out);
  });
}

}  // namespace interp::app
