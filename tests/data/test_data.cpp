// Tokenizer (in one process with LibTorch), Brown reader and tag alignment, packing, token files,
// and the deterministic hash/RNG they rest on (checked against published test vectors).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "interp/data.h"
#include "interp/error.h"
#include "interp/hooks.h"
#include "interp/tokenizer.h"
#include "interp/util.h"
#include "test_util.h"

using interp::test::fixture;

namespace {

TEST(Hash, Xxh64TestVectors) {
  EXPECT_EQ(interp::xxh64("", 0), 0xef46db3751d8e999ULL);
  EXPECT_EQ(interp::xxh64("a", 1), 0xd24ec4f1a98c6e5bULL);
  EXPECT_EQ(interp::xxh64("abc", 3), 0x44bc2cf5ad770999ULL);
  const std::string long_text = "Nobody inspects the spammish repetition";
  EXPECT_EQ(interp::xxh64(long_text.data(), long_text.size()), 0xfbcea83c8a378bf1ULL);
  // streaming in pieces equals one shot
  std::string data(1000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + 3);
  for (size_t split : {0, 1, 31, 32, 33, 500, 999}) {
    interp::Xxh64 h;
    h.update(data.data(), split);
    h.update(data.data() + split, data.size() - split);
    EXPECT_EQ(h.digest(), interp::xxh64(data.data(), data.size())) << "split at " << split;
  }
}

TEST(Rng, SplitMix64IsPortableAndShufflesFairly) {
  interp::Rng r(0);
  EXPECT_EQ(r.next(), 0xe220a8397b1dcdafULL);  // splitmix64 reference output for seed 0
  EXPECT_EQ(r.next(), 0x6e789e6aa1b965f4ULL);
  auto p = interp::Rng(5).permutation(1000);
  EXPECT_EQ(p, interp::Rng(5).permutation(1000));
  EXPECT_NE(p, interp::Rng(6).permutation(1000));
  std::set<int64_t> s(p.begin(), p.end());
  EXPECT_EQ(s.size(), 1000u);
  // below(n) is uniform: 60000 draws of below(6), each face within 5% of 10000
  interp::Rng u(1);
  int counts[6] = {0};
  for (int i = 0; i < 60000; ++i) ++counts[u.below(6)];
  for (int c : counts) EXPECT_NEAR(c, 10000, 500);
}

TEST(Brown, ParseDetokenizesAndKeepsTags) {
  auto doc = interp::brown_parse(
      "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, and/cc Atlanta's/np$ (/( 1/2/cd )/) ./.\n", "t");
  EXPECT_EQ(doc.text, "The jury said \"no evidence\", and Atlanta's (1/2).");
  ASSERT_EQ(doc.tags.size(), 14u);
  EXPECT_EQ(doc.tags[2], "vbd");
  EXPECT_EQ(doc.tags[11], "cd");  // "1/2/cd": the tag is after the last slash
  auto [b, e] = doc.words[11];
  EXPECT_EQ(doc.text.substr(b, e - b), "1/2");
  ASSERT_EQ(doc.lines.size(), 1u);
  EXPECT_THROW(interp::brown_parse("not tagged at all", "x"), interp::Error);
}

TEST(Corpus, FormatsAreDetectedAndHashed) {
  auto brown = interp::corpus_load(fixture("brown"));
  EXPECT_EQ(brown.format, "brown");
  EXPECT_EQ(brown.docs.size(), 3u);
  EXPECT_EQ(brown.docs[0].id, "ca01");
  EXPECT_EQ(brown.hash, interp::corpus_load(fixture("brown"), "brown").hash);
  std::string dir = ::testing::TempDir() + "/text-corpus";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/a.txt") << "first line\n\nsecond line\n";
  std::ofstream(dir + "/b.txt") << "another document\n";
  auto files = interp::corpus_load(dir);
  EXPECT_EQ(files.format, "text-files");
  EXPECT_EQ(files.docs.size(), 2u);
  auto lines = interp::corpus_load(dir + "/a.txt");
  EXPECT_EQ(lines.format, "text-lines");
  ASSERT_EQ(lines.docs.size(), 2u);
  EXPECT_EQ(lines.docs[1].text, "second line");
  EXPECT_EQ(lines.docs[1].id, "a.txt:3");
  EXPECT_NE(files.hash, lines.hash);
  EXPECT_THROW(interp::corpus_load(dir + "/nope"), interp::Error);
  EXPECT_THROW(interp::corpus_load(dir, "xml"), interp::Error);
}

class Tok : public ::testing::Test {
 protected:
  Tok() : tok(interp::Tokenizer::load(fixture("brown-1k.model"))) {}
  interp::Tokenizer tok;
};

TEST_F(Tok, RoundTrip) {
  EXPECT_EQ(tok.vocab_size(), 1024);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  for (const std::string s : {"The jury said it did not find evidence.", "Atlanta's recent primary election",
                              "numbers 1961 and 3.14, quotes \"x\" and (brackets)", "zebra quixotic juxtaposition"}) {
    auto ids = tok.encode(s);
    EXPECT_FALSE(ids.empty());
    EXPECT_EQ(tok.decode(ids), s);
  }
  // every Brown sentence of the fixtures survives a round trip
  auto corpus = interp::corpus_load(fixture("brown"));
  int n = 0;
  for (const auto& d : corpus.docs)
    for (auto [a, b] : d.lines) {
      std::string line = d.text.substr(a, b - a);
      EXPECT_EQ(tok.decode(tok.encode(line)), line);
      ++n;
    }
  EXPECT_GT(n, 100);
  // bytes outside the vocabulary's characters fall back to byte pieces, not UNK
  auto ids = tok.encode("naïve café");
  EXPECT_EQ(tok.decode(ids), "naïve café");
  EXPECT_THROW(tok.decode({5000}), interp::Error);
}

TEST_F(Tok, OffsetsPointIntoTheText) {
  std::string text = "The jury said it did not find evidence.";
  auto pieces = tok.encode_with_offsets(text);
  std::string rebuilt;
  for (const auto& p : pieces) {
    ASSERT_LE(p.end, text.size());
    rebuilt += text.substr(p.begin, p.end - p.begin);
  }
  EXPECT_EQ(rebuilt, text);
}

TEST_F(Tok, TagsFollowTheWords) {
  auto corpus = interp::corpus_load(fixture("brown"));
  auto tc = interp::tokenize(corpus, tok);
  ASSERT_EQ(tc.tags.size(), tc.tokens.size());
  EXPECT_EQ(tc.doc_offsets.size(), 4u);
  // Independent of the alignment code: ca01 opens "The/at Fulton/np-tl County/nn-tl Grand/jj-tl
  // Jury/nn-tl said/vbd Friday/nr an/at investigation/nn of/in". Group the first tokens into runs of
  // equal tag (neighbouring words' tags all differ here): the runs' tags are the words' tags, and
  // each run decodes to its word.
  const std::vector<std::string> words = {"The", "Fulton", "County", "Grand", "Jury", "said", "Friday", "an",
                                          "investigation", "of"};
  const std::vector<std::string> want = {"at", "np-tl", "nn-tl", "jj-tl", "nn-tl", "vbd", "nr", "at", "nn", "in"};
  std::vector<std::string> run_tags;
  std::vector<std::vector<int32_t>> runs;
  for (size_t i = 0; run_tags.size() <= want.size() && i < tc.tokens.size(); ++i) {
    std::string tag = tc.tags[i] < 0 ? "-" : tc.tag_names[static_cast<size_t>(tc.tags[i])];
    if (run_tags.empty() || run_tags.back() != tag) {
      run_tags.push_back(tag);
      runs.emplace_back();
    }
    runs.back().push_back(tc.tokens[i]);
  }
  run_tags.resize(want.size());
  EXPECT_EQ(run_tags, want);
  for (size_t w = 0; w < words.size(); ++w) EXPECT_EQ(tok.decode(runs[w]), words[w]) << "word " << w;
  size_t untagged = 0;
  for (int16_t t : tc.tags) untagged += t < 0;
  EXPECT_EQ(untagged, 0u) << "every token of a Brown text lies inside a word";
  std::set<std::string> names(tc.tag_names.begin(), tc.tag_names.end());
  for (const char* t : {"at", "nn", "vbd", "np-tl", "."}) EXPECT_TRUE(names.count(t)) << t;
}

TEST_F(Tok, LivesWithLibTorchInOneProcess) {
  // The protobuf clash would crash here: a model and a tokenizer, used in turn.
  auto model = interp::HookedModel::load(fixture("tiny_lm_trace.pt"));
  auto ids = tok.encode("The jury said it did not find evidence.");
  ids.insert(ids.begin(), tok.bos_id());
  at::Tensor t = at::tensor(std::vector<int64_t>(ids.begin(), ids.end())).view({1, -1});
  at::Tensor logits = model.forward(t);
  EXPECT_TRUE(logits.isfinite().all().item<bool>());
  int32_t next = static_cast<int32_t>(logits[0][-1].argmax().item<int64_t>());
  EXPECT_FALSE(tok.piece(next).empty());
  EXPECT_EQ(tok.decode(tok.encode("still fine")), "still fine");
}

TEST_F(Tok, TrainWritesAModel) {
  std::string dir = ::testing::TempDir() + "/tok-train";
  std::filesystem::create_directories(dir);
  interp::corpus_write_lines(interp::corpus_load(fixture("brown")), dir + "/lines.txt");
  interp::TokenizerTrainOptions o;
  o.inputs = {dir + "/lines.txt"};
  o.model_prefix = dir + "/small";
  o.vocab_size = 400;
  interp::tokenizer_train(o);
  auto t = interp::Tokenizer::load(dir + "/small.model");
  EXPECT_EQ(t.vocab_size(), 400);
  EXPECT_EQ(t.decode(t.encode("The jury said.")), "The jury said.");
  o.vocab_size = 20;  // smaller than the characters needed: spm_train's own message comes through
  try {
    interp::tokenizer_train(o);
    FAIL() << "no error";
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Vocabulary size is smaller than required_chars"), std::string::npos) << e.what();
  }
  EXPECT_THROW(interp::Tokenizer::load(fixture("tiny.golden.safetensors")), interp::Error);
}

TEST_F(Tok, PackingKeepsEveryTokenWithBosAndEos) {
  auto tc = interp::tokenize(interp::corpus_load(fixture("brown")), tok);
  interp::PackOptions o;
  o.ctx = 64;
  o.shuffle = false;
  interp::PackedContexts plain(tc, o);
  // the stream: documents with EOS after each; contexts: BOS + 63 stream tokens
  std::vector<int32_t> stream;
  for (size_t d = 0; d + 1 < tc.doc_offsets.size(); ++d) {
    stream.insert(stream.end(), tc.tokens.begin() + tc.doc_offsets[d], tc.tokens.begin() + tc.doc_offsets[d + 1]);
    stream.push_back(tc.eos_id);
  }
  EXPECT_EQ(plain.size(), static_cast<int64_t>(stream.size()) / 63);
  at::Tensor all = plain.batch(0, plain.size());
  EXPECT_TRUE((all.select(1, 0) == tok.bos_id()).all().item<bool>());
  at::Tensor body = all.slice(1, 1).reshape(-1);
  for (int64_t i = 0; i < body.numel(); ++i) ASSERT_EQ(body[i].item<int64_t>(), stream[static_cast<size_t>(i)]) << i;
  // tags travel with their tokens; BOS has none
  at::Tensor tags = plain.tags(0, plain.size());
  EXPECT_TRUE((tags.select(1, 0) == -1).all().item<bool>());
  // shuffled: the same contexts in another order, the same order for the same seed
  o.shuffle = true;
  o.seed = 3;
  interp::PackedContexts a(tc, o), b(tc, o);
  EXPECT_TRUE(at::equal(a.batch(0, a.size()), b.batch(0, b.size())));
  EXPECT_FALSE(at::equal(a.batch(0, a.size()), all));
  auto key = [](const at::Tensor& t) {
    std::multiset<std::vector<int64_t>> s;
    for (int64_t i = 0; i < t.size(0); ++i) s.insert(std::vector<int64_t>(t[i].data_ptr<int64_t>(), t[i].data_ptr<int64_t>() + t.size(1)));
    return s;
  };
  EXPECT_EQ(key(a.batch(0, a.size()).contiguous()), key(all.contiguous()));
  EXPECT_THROW(plain.batch(plain.size() - 1, 2), interp::Error);
}

TEST_F(Tok, TokenFileRoundTripAndErrors) {
  auto tc = interp::tokenize(interp::corpus_load(fixture("brown")), tok);
  std::string path = ::testing::TempDir() + "/brown.tokens.safetensors";
  interp::token_file_save(tc, path);
  auto back = interp::token_file_load(path);
  EXPECT_EQ(back.tokens, tc.tokens);
  EXPECT_EQ(back.doc_offsets, tc.doc_offsets);
  EXPECT_EQ(back.tags, tc.tags);
  EXPECT_EQ(back.tag_names, tc.tag_names);
  EXPECT_EQ(back.tokenizer_hash, tok.hash());
  auto via = interp::load_tokens(path, "auto", &tok);
  EXPECT_EQ(via.tokens, tc.tokens);
  // a token file made with another tokenizer is refused
  tc.tokenizer_hash = "0000000000000000";
  interp::token_file_save(tc, path);
  EXPECT_THROW(interp::load_tokens(path, "auto", &tok), interp::Error);
  // an id outside the vocabulary is refused with the id
  tc.tokens[5] = 5000;
  interp::token_file_save(tc, path);
  try {
    interp::token_file_load(path);
    FAIL();
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 5000"), std::string::npos) << e.what();
  }
  EXPECT_THROW(interp::token_file_load(fixture("tiny.golden.safetensors")), interp::Error);
}

}  // namespace
