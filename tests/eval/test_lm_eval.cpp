// evaluate_lm against an independent computation: contexts packed here by hand (documents joined with
// EOS, cut into ctx - 1 tokens behind a BOS) and each context's next-token log-probabilities taken
// from the unhooked module's logits one context at a time.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "interp/data.h"
#include "interp/error.h"
#include "interp/lm_eval.h"
#include "interp/tokenizer.h"
#include "test_util.h"

using interp::test::fixture;

namespace {

interp::TokenizedCorpus brown_fixture() {
  auto tok = interp::Tokenizer::load(fixture("brown-1k.model"));
  return interp::tokenize(interp::corpus_load(fixture("brown"), "brown"), tok);
}

TEST(SelectDocuments, KeepsTheChosenDocumentsInOrder) {
  auto tc = brown_fixture();
  ASSERT_EQ(tc.doc_offsets.size(), 4u);  // 3 documents
  auto sub = interp::select_documents(tc, {2, 0});
  ASSERT_EQ(sub.doc_offsets.size(), 3u);
  const int64_t n2 = tc.doc_offsets[3] - tc.doc_offsets[2], n0 = tc.doc_offsets[1];
  EXPECT_EQ(sub.doc_offsets[1], n2);
  EXPECT_EQ(sub.doc_offsets[2], n2 + n0);
  EXPECT_TRUE(std::equal(sub.tokens.begin(), sub.tokens.begin() + n2, tc.tokens.begin() + tc.doc_offsets[2]));
  EXPECT_TRUE(std::equal(sub.tokens.begin() + n2, sub.tokens.end(), tc.tokens.begin()));
  EXPECT_EQ(sub.tags.size(), sub.tokens.size());
  EXPECT_EQ(sub.bos_id, tc.bos_id);
  EXPECT_THROW(interp::select_documents(tc, {3}), interp::Error);
}

TEST(EvaluateLm, MatchesAHandComputation) {
  auto model = interp::HookedModel::load(fixture("tiny_lm_trace.pt"));
  auto tc = interp::select_documents(brown_fixture(), {0, 2});
  const int64_t ctx = 64;
  // Pack by hand.
  std::vector<int64_t> stream;
  for (size_t d = 0; d + 1 < tc.doc_offsets.size(); ++d) {
    for (int64_t i = tc.doc_offsets[d]; i < tc.doc_offsets[d + 1]; ++i) stream.push_back(tc.tokens[static_cast<size_t>(i)]);
    stream.push_back(tc.eos_id);
  }
  const int64_t n = static_cast<int64_t>(stream.size()) / (ctx - 1);
  double loss = 0;
  int64_t correct = 0, count = 0;
  for (int64_t c = 0; c < n; ++c) {
    std::vector<int64_t> x = {tc.bos_id};
    x.insert(x.end(), stream.begin() + c * (ctx - 1), stream.begin() + (c + 1) * (ctx - 1));
    at::Tensor t = at::tensor(x, at::kLong).view({1, ctx});
    at::Tensor lp = model.forward_unhooked(t)[0].log_softmax(-1);  // [ctx, vocab]
    for (int64_t p = 0; p + 1 < ctx; ++p) {
      loss -= lp[p][x[static_cast<size_t>(p + 1)]].item<double>();
      correct += lp[p].argmax().item<int64_t>() == x[static_cast<size_t>(p + 1)];
      ++count;
    }
  }
  interp::PackOptions po;
  po.ctx = ctx;
  po.shuffle = false;
  interp::PackedContexts contexts(tc, po);
  ASSERT_EQ(contexts.size(), n);
  for (int64_t batch : {1, 3, 16}) {
    interp::LmEvalOptions o;
    o.batch = batch;
    auto e = interp::evaluate_lm(model, contexts, o);
    std::printf("  batch %lld: loss %.6f (by hand %.6f), accuracy %.4f (by hand %.4f), %lld tokens\n",
                static_cast<long long>(batch), e.loss, loss / count, e.accuracy, double(correct) / count,
                static_cast<long long>(e.tokens));
    EXPECT_EQ(e.tokens, count);
    EXPECT_EQ(e.contexts, n);
    EXPECT_NEAR(e.loss, loss / static_cast<double>(count), 1e-5);
    EXPECT_NEAR(e.accuracy, static_cast<double>(correct) / static_cast<double>(count), 1e-9);
  }
  interp::LmEvalOptions two;
  two.max_contexts = 2;
  EXPECT_EQ(interp::evaluate_lm(model, contexts, two).tokens, 2 * (ctx - 1));
}

}  // namespace

namespace {

// Greedy continuation against a loop over the unhooked module, cropping to the context as it goes.
TEST(GenerateGreedy, MatchesAnArgmaxLoop) {
  auto model = interp::HookedModel::load(fixture("tiny_trace.pt"));  // context 16
  at::Tensor start = at::tensor({1, 5, 9, 13, 2, 7, 8, 5, 9, 11}, at::kLong).view({2, 5});
  at::Tensor got = interp::generate_greedy(model, start, 14);  // runs past the context of 16
  ASSERT_EQ(got.sizes(), (std::vector<int64_t>{2, 19}));
  EXPECT_TRUE(at::equal(got.narrow(1, 0, 5), start));
  at::Tensor want = start.clone();
  for (int i = 0; i < 14; ++i) {
    at::Tensor in = want.size(1) > 16 ? want.narrow(1, want.size(1) - 16, 16) : want;
    at::Tensor next = model.forward_unhooked(in).select(1, in.size(1) - 1).argmax(-1);
    want = at::cat({want, next.unsqueeze(1)}, 1);
  }
  EXPECT_TRUE(at::equal(got, want)) << got << "\n" << want;
  EXPECT_TRUE(at::equal(interp::generate_greedy(model, start, 0), start));
  EXPECT_THROW(interp::generate_greedy(model, start, -1), interp::Error);
}

}  // namespace
