// The interp command line as a user runs it: exit codes, `error:` messages, and the files it writes
// (read back with an independent minimal safetensors reader, compared with an in-process run).
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "interp/circuits.h"
#include "interp/hooks.h"
#include "interp/data.h"
#include "interp/lm_eval.h"
#include "interp/patch.h"
#include "interp/tokenizer.h"
#include "test_util.h"

using interp::test::fixture;

namespace {

using Result = interp::test::ShellResult;

Result run(const std::string& args) { return interp::test::shell(std::string(INTERP_BIN) + " " + args); }

bool has(const Result& r, const std::string& s) { return r.out.find(s) != std::string::npos; }

TEST(Cli, HooksTable) {
  auto r = run("hooks " + fixture("tiny_trace.pt"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r, "blocks.1.attn.hook_pattern      [batch, 4, pos, pos]")) << r.out;
  EXPECT_TRUE(has(r, "2 layers, d_model 32, 4 heads of 8, vocabulary 50, context 16")) << r.out;
  r = run("hooks " + fixture("tiny_hf_trace.pt") + " --name-map " + fixture("tiny_hf_trace.pt.names.json") +
          " --filter resid_mid");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r, "2 hook points of")) << r.out;
}

TEST(Cli, CacheWritesSafetensorsThatMatchAnInProcessRun) {
  std::string out = ::testing::TempDir() + "/cli-cache.safetensors";
  std::remove(out.c_str());
  auto r = run("cache " + fixture("tiny_script.pt") + " --tokens '1,2,3,4;5,6,7,8' --hooks "
               "blocks.0.hook_resid_post,blocks.1.attn.hook_pattern --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r, "wrote 2 activations")) << r.out;

  // independent read: 8-byte length, JSON header, raw little-endian floats
  std::ifstream in(out, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string bytes = ss.str();
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  auto header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["__metadata__"]["model"], fixture("tiny_script.pt"));
  EXPECT_EQ(header["__metadata__"]["hook_names"], "blocks.0.hook_resid_post,blocks.1.attn.hook_pattern");

  auto model = interp::HookedModel::load(fixture("tiny_script.pt"));
  at::Tensor tokens = at::tensor({1, 2, 3, 4, 5, 6, 7, 8}, at::kLong).view({2, 4});
  auto [logits, cache] = model.run_with_cache(tokens);
  for (const std::string name : {"blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern"}) {
    auto h = header[name];
    ASSERT_EQ(h["dtype"], "F32") << name;
    std::vector<int64_t> shape = h["shape"];
    size_t a = h["data_offsets"][0], b = h["data_offsets"][1];
    at::Tensor got = at::empty(shape, at::kFloat);
    ASSERT_EQ(b - a, static_cast<size_t>(got.numel()) * 4);
    std::memcpy(got.data_ptr(), bytes.data() + 8 + n + a, b - a);
    double d = interp::test::max_abs_diff(got, cache[name]);
    std::printf("  %s: max diff %g\n", name.c_str(), d);
    EXPECT_EQ(d, 0.0) << name;
  }
  EXPECT_EQ(header["tokens"]["dtype"], "I64");
}

TEST(Cli, RunPrintsTopK) {
  auto r = run("run " + fixture("tiny_script.pt") + " --tokens 1,2,3 --top-k 3");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r, "sequence 0 (3 tokens): next token")) << r.out;
  auto model = interp::HookedModel::load(fixture("tiny_script.pt"));
  at::Tensor probs = model.forward(at::tensor({1, 2, 3}, at::kLong).view({1, 3}))[0][2].softmax(-1);
  auto [p, idx] = probs.topk(1);
  char line[64];
  std::snprintf(line, sizeof line, "%6lld  p=%.4f", static_cast<long long>(idx[0].item<int64_t>()), p[0].item<double>());
  EXPECT_TRUE(has(r, line)) << "expected '" << line << "' in\n" << r.out;
}

TEST(Cli, TokenizerEncodeDecode) {
  auto r = run("tokenizer encode --tokenizer " + fixture("brown-1k.model") + " 'The jury said.'");
  ASSERT_EQ(r.code, 0) << r.out;
  std::string ids = r.out.substr(0, r.out.find('\n'));
  auto d = run("tokenizer decode --tokenizer " + fixture("brown-1k.model") + " --tokens " + ids);
  ASSERT_EQ(d.code, 0) << d.out;
  EXPECT_EQ(d.out, "The jury said.\n");
  auto bad = run("tokenizer decode --tokenizer " + fixture("brown-1k.model") + " --tokens 1,99999");
  EXPECT_NE(bad.code, 0);
  EXPECT_TRUE(has(bad, "token id 99999 is outside the vocabulary of 1024")) << bad.out;
}

TEST(Cli, CaptureStoreInfoVerify) {
  std::string out = ::testing::TempDir() + "/cli-store";
  std::system(("rm -rf " + out).c_str());
  std::string base = "capture --model " + fixture("tiny_lm_trace.pt") + " --data " + fixture("brown") + " --tokenizer " +
                     fixture("brown-1k.model") + " --ctx 32 --batch 8 --shard-contexts 16 ";
  auto r = run(base + "--hooks blocks.1.hook_resid_pre --tokens 1024 --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r, "wrote 1024 tokens in 2 shards")) << r.out;
  auto info = run("store info " + out);
  EXPECT_TRUE(has(info, "1024 tokens (32 contexts of 32) in 2 shards, f32, complete")) << info.out;
  EXPECT_TRUE(has(run("store verify " + out), "all 2 shards intact"));
  // another capture into the same folder is refused; a wrong hook, a missing tokenizer too
  auto again = run(base + "--hooks blocks.0.hook_resid_pre --tokens 1024 --out " + out);
  EXPECT_NE(again.code, 0);
  EXPECT_TRUE(has(again, "holds a different capture (hooks differ)")) << again.out;
  auto no_tok = run("capture --model " + fixture("tiny_lm_trace.pt") + " --data " + fixture("brown") +
                    " --hooks hook_embed --tokens 64 --out " + out + "-x");
  EXPECT_TRUE(has(no_tok, "is text: pass --tokenizer")) << no_tok.out;
  auto small_model = run("capture --model " + fixture("tiny_script.pt") + " --data " + fixture("brown") +
                         " --tokenizer " + fixture("brown-1k.model") + " --hooks hook_embed --tokens 64 --out " + out + "-y");
  EXPECT_TRUE(has(small_model, "vocabulary (1024) is larger than the model's (50)")) << small_model.out;
  // a damaged shard is named by verify
  std::system(("printf 'xxxx' | dd of=" + out + "/shard-000001.safetensors bs=1 seek=5000 conv=notrunc 2>/dev/null").c_str());
  auto v = run("store verify " + out);
  EXPECT_NE(v.code, 0);
  EXPECT_TRUE(has(v, "shard shard-000001.safetensors is corrupt")) << v.out;
}

TEST(Cli, CaptureTrainEvaluateAnSAE) {
  std::string dir = ::testing::TempDir() + "/cli-sae";
  std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str());
  std::string data = " --data " + fixture("brown") + " --tokenizer " + fixture("brown-1k.model") + " --ctx 32 ";
  auto c = run("capture --model " + fixture("tiny_lm_trace.pt") + data +
               "--hooks blocks.0.hook_resid_post --tokens 8192 --batch 16 --out " + dir + "/store");
  ASSERT_EQ(c.code, 0) << c.out;
  auto t = run("train-sae --activations " + dir + "/store --arch topk --d-sae 128 --k 8 --steps 200 --batch 512 --lr 1e-3 "
               "--out " + dir + "/sae");
  ASSERT_EQ(t.code, 0) << t.out;
  EXPECT_TRUE(has(t, "wrote " + dir + "/sae/cfg.json")) << t.out;
  auto cfg = nlohmann::json::parse(std::ifstream(dir + "/sae/cfg.json"));
  EXPECT_EQ(cfg["hook_name"], "blocks.0.hook_resid_post");
  EXPECT_EQ(cfg["d_in"], 32);
  auto e = run("eval-sae --sae " + dir + "/sae --model " + fixture("tiny_lm_trace.pt") + data +
               "--tokens 2048 --seed 7 --out " + dir + "/eval.json");
  ASSERT_EQ(e.code, 0) << e.out;
  auto res = nlohmann::json::parse(std::ifstream(dir + "/eval.json"));
  EXPECT_EQ(res["tokens"], 2048);
  EXPECT_LT(res["fvu"].get<double>(), 0.5) << "a trained SAE explains most of the variance";
  EXPECT_NEAR(res["l0"].get<double>(), 8, 1e-9) << "TopK: exactly k active per token";
  auto bad = run("train-sae --activations " + dir + "/store --arch crosscoder --out " + dir + "/x");
  EXPECT_NE(bad.code, 0);
  EXPECT_TRUE(has(bad, "architecture 'crosscoder' is not one of standard, topk, batchtopk, jumprelu, gated, matryoshka"))
      << bad.out;
  EXPECT_FALSE(std::filesystem::exists(dir + "/x")) << "refused before creating the output";
  auto prefixes = run("train-sae --activations " + dir + "/store --arch matryoshka --d-sae 128 --prefixes 64,100 --out " +
                      dir + "/x");
  EXPECT_NE(prefixes.code, 0);
  EXPECT_TRUE(has(prefixes, "matryoshka_prefixes must end at d_sae (128)")) << prefixes.out;
  EXPECT_FALSE(std::filesystem::exists(dir + "/x"));
  auto none = run("train-sae --out " + dir + "/x");
  EXPECT_TRUE(has(none, "needs a source: --synthetic, --activations STORE, or --model M --hook H --data D")) << none.out;
}

TEST(Cli, HelpShowsDefaults) {
  auto r = run("cache --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_TRUE(has(r, "--dtype")) << r.out;
  EXPECT_TRUE(has(r, "=f32")) << r.out;
  EXPECT_TRUE(has(r, "TEXT=cpu")) << r.out;
}

TEST(Cli, ErrorsAreClearAndNonZero) {
  struct Case {
    std::string args, expect;
  };
  std::string m = fixture("tiny_script.pt");
  std::vector<Case> cases = {
      {"hooks /nonexistent.pt", "error: /nonexistent.pt: no such model file"},
      {"hooks " + fixture("tiny.golden.safetensors"), "not a TorchScript file"},
      {"cache " + m + " --tokens 1,2 --hooks blocks.0.hook_resid_pr --out /tmp/x.safetensors",
       "closest: blocks.0.hook_resid_pre"},
      {"run " + m + " --tokens 1,x,3", "error: --tokens: 'x' is not an integer token id"},
      {"run " + m + " --tokens '1,2;3'", "sequence 2 has 1 tokens but sequence 1 has 2"},
      {"run " + m + " --tokens 1,99", "token id 99 is outside the vocabulary of 50"},
      {"cache " + m + " --tokens 1,2", "--out is required"},
      {"cache " + m + " --tokens 1,2 --filter nomatch --out /tmp/x.safetensors", "matches no hook point"},
      {"cache " + m + " --tokens 1,2 --out /nonexistent/dir/x.safetensors", "the folder /nonexistent/dir does not exist"},
      {"frobnicate", "error:"},
  };
  for (const auto& c : cases) {
    auto r = run(c.args);
    EXPECT_NE(r.code, 0) << c.args << "\n" << r.out;
    EXPECT_TRUE(has(r, c.expect)) << c.args << "\nexpected: " << c.expect << "\ngot: " << r.out;
    EXPECT_FALSE(has(r, "terminate called")) << r.out;
  }
}

}  // namespace

namespace {

std::string write_pairs(const std::string& dir, const std::string& json) {
  std::string path = dir + "/pairs.json";
  std::ofstream(path) << json;
  return path;
}

std::string temp_dir(const std::string& name) {
  std::string d = ::testing::TempDir() + "interp-cli-" + name + "-" + std::to_string(::getpid());
  std::string cmd = "rm -rf '" + d + "' && mkdir -p '" + d + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  return d;
}

const char* kTokenPairs = R"({"pairs": [
  {"clean_tokens": [1, 5, 9, 13, 2, 7], "corrupted_tokens": [1, 5, 30, 13, 2, 7], "answer": 3, "wrong": 4},
  {"clean_tokens": [8, 5, 9, 11, 2, 6], "corrupted_tokens": [8, 5, 31, 11, 2, 6], "answer": 3, "wrong": 4}]})";

}  // namespace

TEST(Cli, PatchWritesResultsHeatmapAndPageMatchingTheLibrary) {
  std::string d = temp_dir("patch");
  std::string pairs = write_pairs(d, kTokenPairs);
  auto r = run("patch " + fixture("tiny_script.pt") + " --pairs " + pairs + " --hook resid_pre --by layer,pos --out " + d + "/out");
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream in(d + "/out/results.json");
  auto j = nlohmann::json::parse(in);
  ASSERT_EQ(j["shape"], (std::vector<int64_t>{2, 6}));
  // Same numbers as a one-forward-per-patch run in this process.
  auto model = interp::HookedModel::load(fixture("tiny_script.pt"));
  at::Tensor clean = at::tensor({1, 5, 9, 13, 2, 7, 8, 5, 9, 11, 2, 6}, at::kLong).view({2, 6});
  at::Tensor corrupted = clean.clone();
  corrupted[0][2] = 30;
  corrupted[1][2] = 31;
  auto metric = interp::logit_diff(at::tensor({3, 3}, at::kLong), at::tensor({4, 4}, at::kLong));
  for (int L = 0; L < 2; ++L)
    for (int p = 0; p < 6; ++p) {
      auto cache = model.run_with_cache(clean).second;
      std::string hook = interp::act_name("resid_pre", L);
      at::Tensor logits = model.run_with_hooks(corrupted, {{hook, [&](at::Tensor& act, const std::string&) {
                                                               act = act.clone();
                                                               act.select(1, p).copy_(cache[hook].select(1, p));
                                                             }}});
      double want = metric.fn(logits.narrow(1, 5, 1)).mean().item<double>();
      EXPECT_NEAR(j["values"][L][p].get<double>(), want, 1e-5) << "L" << L << " pos " << p;
    }
  std::ifstream svg(d + "/out/heatmap.svg"), html(d + "/out/index.html");
  std::stringstream s, h;
  s << svg.rdbuf();
  h << html.rdbuf();
  EXPECT_EQ(s.str().rfind("<svg", 0), 0u);
  size_t rects = 0;
  for (size_t at = 0; (at = s.str().find("<rect", at)) != std::string::npos; ++at) ++rects;
  EXPECT_EQ(rects, 12u + 1u) << "one cell per site and the legend";
  EXPECT_NE(h.str().find("<svg"), std::string::npos);
  EXPECT_TRUE(has(r, "wrote"));

  for (const char* extra : {"--method attribution", "--method path --receivers blocks.1.attn.hook_q:0 --hook z",
                            "--direction noise --metric kl"}) {
    auto r2 = run("patch " + fixture("tiny_trace.pt") + " --pairs " + pairs + " " + extra + " --out " + d + "/out2");
    EXPECT_EQ(r2.code, 0) << extra << "\n" << r2.out;
  }
  // The metric at position 0 reads the same tokens in both runs: normalized is undefined, said so.
  auto r4 = run("patch " + fixture("tiny_script.pt") + " --pairs " + pairs + " --position 0 --out " + d + "/out4");
  ASSERT_EQ(r4.code, 0) << r4.out;
  EXPECT_TRUE(has(r4, "warning: the clean run gives the same logit_diff")) << r4.out;
  std::ifstream in4(d + "/out4/results.json");
  auto j4 = nlohmann::json::parse(in4);
  EXPECT_TRUE(j4["normalized"][0][0].is_null());
  auto r3 = run("ablate " + fixture("tiny_script.pt") + " --pairs " + pairs + " --ablation resample --out " + d + "/out3");
  EXPECT_EQ(r3.code, 0) << r3.out;
  EXPECT_TRUE(has(r3, "resample ablation: z by layer,head")) << r3.out;
}

TEST(Cli, PatchRejectsBadPairsWithoutWritingOutput) {
  std::string d = temp_dir("patch-bad");
  struct Case {
    std::string json, message;
  };
  const Case cases[] = {
      {R"({"pairs": [{"clean_tokens": [1, 2, 3], "corrupted_tokens": [1, 2], "answer": 3, "wrong": 4}]})",
       "clean has 3 tokens, corrupted 2"},
      {R"({"pairs": [{"clean_tokens": [1, 2, 3], "corrupted_tokens": [1, 2, 4], "answer": 3, "wrong": 4},
                     {"clean_tokens": [1, 2], "corrupted_tokens": [1, 3], "answer": 3, "wrong": 4}]})",
       "pair 1 has 2 tokens but pair 0 has 3"},
      {R"({"pairs": [{"clean": "some text", "corrupted": "more text", "answer": 3, "wrong": 4}]})", "pass a tokenizer"},
      {R"({"pairs": [{"clean_tokens": [1, 2, 3], "corrupted_tokens": [1, 2, 4], "answer": 3}]})", "needs \"wrong\""},
      {R"({"pairs": []})", "at least one pair"},
      {R"({"pairs": [{"clean_tokens": [1, 2, 99], "corrupted_tokens": [1, 2, 4], "answer": 3, "wrong": 4}]})",
       "outside the model's vocabulary of 50"},
      {"{not json", "not valid JSON"},
  };
  for (const auto& c : cases) {
    std::string pairs = write_pairs(d, c.json);
    auto r = run("patch " + fixture("tiny_script.pt") + " --pairs " + pairs + " --out " + d + "/out");
    EXPECT_NE(r.code, 0) << c.json;
    EXPECT_TRUE(has(r, "error: ") && has(r, c.message)) << "expected '" << c.message << "' in:\n" << r.out;
    std::ifstream results(d + "/out/results.json");
    EXPECT_FALSE(results.good()) << "no results written after: " << c.message;
  }
  auto r = run("patch " + fixture("tiny_script.pt") + " --pairs " + write_pairs(d, kTokenPairs) +
               " --by layer,head --out " + d + "/out");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(has(r, "no head axis")) << r.out;
}

// interp circuit on the planted model: ACDC's circuit is the proven true edge set, the files agree
// with an in-process run, and bad options fail before anything is written.
TEST(Cli, CircuitFindsThePlantedCircuitAndWritesItsFiles) {
  std::string d = temp_dir("circuit");
  auto r = run("circuit " + fixture("planted_induction_script.pt") + " --pairs " + fixture("planted_induction.pairs.json") +
               " --method acdc --out " + d + "/out");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r, "acdc kept 4 of 52 units")) << r.out;
  EXPECT_TRUE(has(r, "patch / noise / all pos / edge")) << r.out;
  std::ifstream tj(fixture("planted_induction.circuit.json")), ej(d + "/out/edges.json"), fj(d + "/out/faithfulness.json");
  auto truth = nlohmann::json::parse(tj), edges = nlohmann::json::parse(ej), faith = nlohmann::json::parse(fj);
  std::set<std::string> want, kept;
  for (const auto& e : truth["true_edges"]) want.insert(e.get<std::string>());
  ASSERT_EQ(edges["edges"].size(), 52u);
  for (const auto& e : edges["edges"])
    if (e["kept"].get<bool>()) kept.insert(e["name"].get<std::string>());
  EXPECT_EQ(kept, want);
  EXPECT_EQ(faith["curves"].size(), 20u);
  for (const auto& c : faith["curves"]) {
    EXPECT_NEAR(c["normalized"].back().get<double>(), 1.0, 1e-6) << c["label"];  // every unit kept
    if (c["ablation"] == "patch" && c["level"] == "edge" && c["direction"] == "noise")
      EXPECT_EQ(c["smallest_95"], 4) << c["label"];  // the true circuit, and nothing smaller
  }
  for (const char* f : {"/out/circuit.svg", "/out/curves.svg", "/out/index.html"}) {
    std::ifstream in(d + f);
    std::stringstream s;
    s << in.rdbuf();
    EXPECT_NE(s.str().find("<svg"), std::string::npos) << f;
  }

  auto r2 = run("circuit " + fixture("induction_script.pt") + " --task induction --method eap --level node --out " + d + "/out2");
  ASSERT_EQ(r2.code, 0) << r2.out;
  EXPECT_TRUE(has(r2, "head scores on repeated random tokens")) << r2.out;
  EXPECT_TRUE(has(r2, "a0.h2  0.9")) << r2.out;  // the previous-token head

  struct Case {
    std::string args, message;
  };
  const std::string m = fixture("planted_induction_script.pt"), p = " --pairs " + fixture("planted_induction.pairs.json");
  const Case cases[] = {
      {m + " --out " + d + "/bad", "exactly one of --pairs"},
      {m + p + " --task induction --out " + d + "/bad", "exactly one of --pairs"},
      {m + " --task copying --out " + d + "/bad", "the built-in task is induction"},
      {m + p + " --method acdcx --out " + d + "/bad", "unknown circuit method"},
      {m + p + " --level heads --out " + d + "/bad", "use edge or node"},
      {m + p + " --ablation median --out " + d + "/bad", "unknown ablation"},
      {m + p + " --sizes 1,x --out " + d + "/bad", "not a non-negative integer"},
      {m + p + " --sizes 1000 --out " + d + "/bad", "outside 0..52"},
      {m + p + " --ig-on weights --out " + d + "/bad", "use inputs or activations"},
      {fixture("missing.pt") + p + " --out " + d + "/bad", "no such model file"},
  };
  for (const auto& c : cases) {
    auto rb = run("circuit " + c.args);
    EXPECT_NE(rb.code, 0) << c.args;
    EXPECT_TRUE(has(rb, "error: ") && has(rb, c.message)) << "expected '" << c.message << "' in:\n" << rb.out;
    std::ifstream written(d + "/bad/edges.json");
    EXPECT_FALSE(written.good()) << "nothing written after: " << c.message;
  }
}

// interp eval-lm: held-out documents, the numbers of the library call, and clear errors.
TEST(Cli, EvalLmOnHeldOutDocuments) {
  std::string d = temp_dir("eval-lm");
  const std::string base = "eval-lm " + fixture("tiny_lm_trace.pt") + " --data " + fixture("brown") + " --tokenizer " +
                           fixture("brown-1k.model");
  auto r = run(base + " --held-out-every 2 --ctx 64 --out " + d + "/e.json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r, "(2 of 3 documents: index % 2 == 0)")) << r.out;
  std::ifstream in(d + "/e.json");
  auto j = nlohmann::json::parse(in);
  auto tok = interp::Tokenizer::load(fixture("brown-1k.model"));
  auto tc = interp::select_documents(interp::tokenize(interp::corpus_load(fixture("brown"), "brown"), tok), {0, 2});
  interp::PackOptions po;
  po.ctx = 64;
  po.shuffle = false;
  auto e = interp::evaluate_lm(interp::HookedModel::load(fixture("tiny_lm_trace.pt")), interp::PackedContexts(tc, po));
  EXPECT_EQ(j["tokens"].get<int64_t>(), e.tokens);
  EXPECT_NEAR(j["loss"].get<double>(), e.loss, 1e-9);
  EXPECT_NEAR(j["accuracy"].get<double>(), e.accuracy, 1e-12);

  struct Case {
    std::string args, message;
  };
  const Case cases[] = {
      {base + " --ctx 1", "--ctx 1"},
      {base + " --held-out-every -1", "--held-out-every -1"},
      {"eval-lm " + fixture("tiny_lm_trace.pt") + " --data " + fixture("brown") + " --tokenizer " +
           std::string(INTERP_FIXTURES) + "/../../models/brown_lm/brown-4k.model",
       "the tokenizer has 4096 pieces but the model's vocabulary is 1024"},
  };
  for (const auto& c : cases) {
    auto rb = run(c.args);
    EXPECT_NE(rb.code, 0) << c.args;
    EXPECT_TRUE(has(rb, "error: ") && has(rb, c.message)) << "expected '" << c.message << "' in:\n" << rb.out;
  }
}

// interp features: from a store and from the model over the corpus (the same contexts: the same
// statistics), the random-directions baseline, the terminal summary, and clear errors.
TEST(Cli, FeaturesFromAStoreAndFromTheModel) {
  std::string d = temp_dir("features");
  const std::string m = fixture("tiny_lm_trace.pt"), data = " --data " + fixture("brown"),
                    t = " --tokenizer " + fixture("brown-1k.model");
  auto r = run("capture --model " + m + data + t + " --hooks blocks.0.hook_resid_post --tokens 4096 --ctx 64 --out " + d +
               "/store");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("train-sae --activations " + d + "/store --arch topk --d-sae 64 --k 4 --steps 50 --batch 256 --out " + d + "/sae");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("features --sae " + d + "/sae --activations " + d + "/store --model " + m + " --baseline --out " + d + "/site");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r, "latents live;") && has(r, "random directions (baseline):") && has(r, "/site/index.html")) << r.out;
  std::ifstream in(d + "/site/features.json");
  auto a = nlohmann::json::parse(in);
  EXPECT_EQ(a["tokens"].get<int64_t>(), 4096 - 64);  // BOS positions skipped
  EXPECT_TRUE(a.contains("random_directions"));
  EXPECT_EQ(a["logit_path"].get<std::string>().rfind("direct path", 0), 0u) << a["logit_path"];
  r = run("features --sae " + d + "/sae --model " + m + data + t + " --tokens 4032 --ctx 64 --out " + d + "/site2");
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream in2(d + "/site2/features.json");
  auto b = nlohmann::json::parse(in2);
  for (const char* k : {"tokens", "live", "scored", "pure"}) EXPECT_EQ(a[k], b[k]) << k;
  EXPECT_EQ(a["top_by_purity"], b["top_by_purity"]);

  struct Case {
    std::string args, message;
  };
  const std::string sae = "features --sae " + d + "/sae";
  const Case cases[] = {
      {sae + " --out " + d + "/x", "features needs activations"},
      {sae + data + t + " --out " + d + "/x", "--data needs --model"},
      {sae + " --activations " + d + "/store --hook blocks.0.hook_resid_pre --out " + d + "/x", "blocks.0.hook_resid_pre"},
      {sae + " --activations " + d + "/store --out " + d + "/store", "holds no interp features site"},
      {"features --sae " + d + "/nope --activations " + d + "/store --out " + d + "/x", "nope"},
  };
  for (const auto& c : cases) {
    auto rb = run(c.args);
    EXPECT_NE(rb.code, 0) << c.args;
    EXPECT_TRUE(has(rb, "error: ") && has(rb, c.message)) << "expected '" << c.message << "' in:\n" << rb.out;
  }
}

// interp heads: the induction heads models/circuit_models.py found in plain PyTorch come first, and
// the JSON holds the library's numbers.
TEST(Cli, HeadsRanksTheKnownInductionHeadsFirst) {
  std::string d = temp_dir("heads");
  auto r = run("heads " + fixture("induction_script.pt") + " --top 4 --out " + d + "/heads.json");
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream in(fixture("induction.circuit.json"));
  auto truth = nlohmann::json::parse(in);
  std::set<std::string> want;
  for (const auto& h : truth["induction_heads"]) want.insert(fmt::format("a{}.h{}", h[0].get<int>(), h[1].get<int>()));
  std::ifstream jin(d + "/heads.json");
  auto j = nlohmann::json::parse(jin);
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_TRUE(want.count(j["heads"][i]["head"].get<std::string>())) << j["heads"][i];
  auto hs = interp::head_scores(interp::HookedModel::load(fixture("induction_script.pt")), 32, 10, 0, 0);
  for (const auto& h : j["heads"])
    EXPECT_NEAR(h["induction"].get<double>(), hs.induction[h["layer"].get<int>()][h["index"].get<int>()].item<double>(), 1e-12);
  r = run("heads " + fixture("induction_script.pt") + " --bos 100000");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(has(r, "error: --bos 100000 is outside the model's vocabulary")) << r.out;
}

// interp run with a text prompt and a greedy continuation.
TEST(Cli, RunPromptAndGenerate) {
  const std::string m = fixture("tiny_lm_trace.pt"), t = " --tokenizer " + fixture("brown-1k.model");
  auto r = run("run " + m + " --prompt \"The jury said\"" + t + " --generate 4 --top-k 2");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r, "greedy continuation (4 tokens)")) << r.out;
  EXPECT_TRUE(has(r, "  text: The jury said")) << r.out;
  auto tok = interp::Tokenizer::load(fixture("brown-1k.model"));
  auto ids = tok.encode("The jury said");
  std::vector<int64_t> seq = {tok.bos_id()};
  seq.insert(seq.end(), ids.begin(), ids.end());
  at::Tensor want = interp::generate_greedy(interp::HookedModel::load(m), at::tensor(seq, at::kLong).view({1, -1}), 4);
  std::string cont;
  for (int64_t i = static_cast<int64_t>(seq.size()); i < want.size(1); ++i)
    cont += (cont.empty() ? "" : ",") + std::to_string(want[0][i].item<int64_t>());
  EXPECT_TRUE(has(r, "greedy continuation (4 tokens): " + cont)) << r.out;
  for (const auto& [args, message] : std::vector<std::pair<std::string, std::string>>{
           {"run " + m + " --prompt hi", "--prompt needs --tokenizer"},
           {"run " + m + " --prompt hi --tokens 1,2" + t, "exactly one of --tokens"},
           {"run " + m + t, "exactly one of --tokens"}}) {
    auto rb = run(args);
    EXPECT_NE(rb.code, 0) << args;
    EXPECT_TRUE(has(rb, "error: ") && has(rb, message)) << "expected '" << message << "' in:\n" << rb.out;
  }
}

// Every model family (models/families.py), scripted and traced, through the CLI with no name map:
// the shipped map is detected and said; patching equals an in-process hand-patched run; the batched
// runner falls back for rotary models and says why in one sentence; ablation, capture, SAE training
// and evaluation run.
class Families : public ::testing::TestWithParam<std::string> {};

TEST_P(Families, HooksPatchAblateCaptureTrainEvaluate) {
  const std::string model = fixture(GetParam());
  const std::string d = temp_dir("family-" + GetParam());
  const bool nanogpt = GetParam().find("nanogpt") != std::string::npos;  // GPT-2 names, square mask, no rotary
  auto h = run("hooks " + model);
  ASSERT_EQ(h.code, 0) << h.out;
  EXPECT_TRUE(has(h, nanogpt ? "names: the shipped 'gpt2' map" : "names: the shipped '")) << h.out;
  EXPECT_TRUE(has(h, nanogpt ? "context 16" : "context unknown")) << h.out;
  EXPECT_EQ(has(h, "blocks.1.attn.hook_rot_k"), !nanogpt) << h.out;

  std::string pairs = write_pairs(d, kTokenPairs);
  auto p = run("patch " + model + " --pairs " + pairs + " --hook resid_pre --by layer,pos --out " + d + "/patch");
  ASSERT_EQ(p.code, 0) << p.out;
  EXPECT_TRUE(has(p, nanogpt ? "note: suffix mode not used: the model fails on the shortened run"
                             : "note: suffix mode not used: the model applies rotary position embeddings"))
      << p.out;
  auto j = nlohmann::json::parse(std::ifstream(d + "/patch/results.json"));
  const std::string why = j["stats"]["fallback"];
  EXPECT_EQ(why.find('\n'), std::string::npos) << why;
  EXPECT_EQ(why.find("Traceback"), std::string::npos) << why;
  std::ifstream html_in(d + "/patch/index.html");
  std::stringstream html;
  html << html_in.rdbuf();
  EXPECT_NE(html.str().find(nanogpt ? "a causal mask sliced" : "rotary position embeddings"), std::string::npos);
  auto m = interp::HookedModel::load(model);
  at::Tensor clean = at::tensor({1, 5, 9, 13, 2, 7, 8, 5, 9, 11, 2, 6}, at::kLong).view({2, 6});
  at::Tensor corrupted = clean.clone();
  corrupted[0][2] = 30;
  corrupted[1][2] = 31;
  auto metric = interp::logit_diff(at::tensor({3, 3}, at::kLong), at::tensor({4, 4}, at::kLong));
  auto cache = m.run_with_cache(clean).second;
  // resid_pre (entry: resid_pre) and mlp_out (entry: resid_mid, or resid_pre in NeoX's parallel blocks)
  for (const std::string kind : {"resid_pre", "mlp_out"}) {
    if (kind != "resid_pre") {
      auto pk = run("patch " + model + " --pairs " + pairs + " --hook " + kind + " --by layer,pos --out " + d + "/patch-" + kind);
      ASSERT_EQ(pk.code, 0) << pk.out;
      j = nlohmann::json::parse(std::ifstream(d + "/patch-" + kind + "/results.json"));
    }
    double max_d = 0;
    for (int L = 0; L < 2; ++L)
      for (int pos = 0; pos < 6; ++pos) {
        std::string hook = interp::act_name(kind, L);
        at::Tensor logits = m.run_with_hooks(corrupted, {{hook, [&](at::Tensor& act, const std::string&) {
                                                            act = act.clone();
                                                            act.select(1, pos).copy_(cache[hook].select(1, pos));
                                                          }}});
        double want = metric.fn(logits.narrow(1, 5, 1)).mean().item<double>();
        max_d = std::max(max_d, std::abs(j["values"][L][pos].get<double>() - want));
      }
    std::printf("  %s: %s patch sweep (mode %s) max diff vs one forward per site %g\n", GetParam().c_str(),
                kind.c_str(), j["stats"]["mode"].get<std::string>().c_str(), max_d);
    EXPECT_LE(max_d, 1e-5) << kind;
    EXPECT_EQ(j["stats"]["mode"], "layers") << kind;
  }
  auto a = run("ablate " + model + " --pairs " + pairs + " --hook z --by layer,head --ablation mean --out " + d + "/ablate");
  EXPECT_EQ(a.code, 0) << a.out;

  // capture -> train-sae -> eval-sae on a token file in the model's vocabulary (50)
  interp::TokenizedCorpus tc;
  tc.vocab_size = 50, tc.bos_id = 1, tc.eos_id = 2, tc.source = "random ids";
  at::Tensor ids = at::randint(3, 50, {4096}, at::TensorOptions().dtype(at::kInt));
  tc.tokens.assign(ids.data_ptr<int32_t>(), ids.data_ptr<int32_t>() + ids.numel());
  tc.doc_offsets = {0, 2048, 4096};
  interp::token_file_save(tc, d + "/tokens.safetensors");
  std::string data = " --data " + d + "/tokens.safetensors --ctx 16 ";
  auto c = run("capture --model " + model + data + "--hooks blocks.1.mlp.hook_post --tokens 2048 --batch 16 --out " +
               d + "/store");
  ASSERT_EQ(c.code, 0) << c.out;
  auto t = run("train-sae --activations " + d + "/store --arch topk --d-sae 64 --k 4 --steps 100 --batch 256 --out " +
               d + "/sae");
  ASSERT_EQ(t.code, 0) << t.out;
  auto e = run("eval-sae --sae " + d + "/sae --model " + model + data + "--tokens 1024 --out " + d + "/eval.json");
  ASSERT_EQ(e.code, 0) << e.out;
  auto res = nlohmann::json::parse(std::ifstream(d + "/eval.json"));
  EXPECT_NEAR(res["l0"].get<double>(), 4, 1e-9);
  EXPECT_LT(res["fvu"].get<double>(), 1.0);
}

INSTANTIATE_TEST_SUITE_P(Cli, Families,
                         ::testing::Values("tiny_llama_script.pt", "tiny_llama_trace.pt", "tiny_neox_script.pt",
                                           "tiny_neox_trace.pt", "tiny_gemma_script.pt", "tiny_gemma_trace.pt",
                                           "tiny_nanogpt_script.pt", "tiny_nanogpt_trace.pt"),
                         [](const auto& info) {
                           std::string n = info.param.substr(0, info.param.size() - 3);
                           return n;
                         });

TEST(Cli, OutputPicksTheLogitsOfTupleAndDictOutputs) {
  // tiny_neox returns {"logits", "last_hidden_state"}: "logits" by default, another key with --output
  auto r = run("run " + fixture("tiny_neox_script.pt") + " --tokens '1,2,3'");
  EXPECT_EQ(r.code, 0) << r.out;
  auto h = run("hooks " + fixture("tiny_neox_script.pt") + " --output last_hidden_state");
  EXPECT_TRUE(has(h, "vocabulary 32")) << "the hidden state (d_model 32) read as logits: " << h.out;
  auto bad = run("hooks " + fixture("tiny_llama_script.pt") + " --output 1");
  EXPECT_NE(bad.code, 0);
  EXPECT_TRUE(has(bad, "--output 1 is not a tensor element of forward's output")) << bad.out;
  auto key = run("hooks " + fixture("tiny_neox_script.pt") + " --output loss");
  EXPECT_TRUE(has(key, "forward returns a dict without a tensor under 'loss' (keys: ")) << key.out;
}

TEST(Cli, SaeInfoSaysWhatAFolderHolds) {
  auto r = run("sae info " + fixture("sae_formats/saelens_release"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r, "saelens_release: 2 SAEs")) << r.out;
  EXPECT_TRUE(has(r, "note          apply_b_dec_to_input = false: b_dec @ W_enc folded into b_enc")) << r.out;
  auto s = run("sae info " + fixture("sae_formats/sparsify/layers.1"));
  ASSERT_EQ(s.code, 0) << s.out;
  EXPECT_TRUE(has(s, "format        sparsify")) << s.out;
  EXPECT_TRUE(has(s, "architecture  topk (k 4)")) << s.out;
  EXPECT_TRUE(has(s, "BF16 weights converted to float32")) << s.out;
  auto none = run("sae info " + fixture("sae_formats"));
  EXPECT_NE(none.code, 0);
  EXPECT_TRUE(has(none, "error: ") && has(none, "no SAE here")) << none.out;
}

TEST(Cli, TrainSaeOnActivationFilesFromOtherTools) {
  std::string dir = ::testing::TempDir() + "/cli-sae-files";
  std::system(("rm -rf " + dir + " " + dir + "-npy " + dir + "-std").c_str());
  auto t = run("train-sae --activations " + fixture("sae_formats/activations") + " --hook acts --arch topk --d-sae 32 "
               "--k 4 --steps 50 --batch 256 --out " + dir);
  ASSERT_EQ(t.code, 0) << t.out;
  auto cfg = nlohmann::json::parse(std::ifstream(dir + "/cfg.json"));
  EXPECT_EQ(cfg["d_in"], 16);
  EXPECT_EQ(cfg["hook_name"], "acts");
  auto npy = run("train-sae --activations " + fixture("sae_formats/activations/part0.npy") +
                 " --arch topk --d-sae 32 --k 4 --steps 20 --batch 128 --format sparsify --out " + dir + "-npy");
  EXPECT_EQ(npy.code, 0) << npy.out;
  auto info = run("sae info " + dir + "-npy");  // written in sparsify's layout
  EXPECT_TRUE(has(info, "format        sparsify")) << info.out;
  auto std_sparsify = run("train-sae --synthetic --arch standard --format sparsify --out " + dir + "-std");
  EXPECT_NE(std_sparsify.code, 0);
  EXPECT_TRUE(has(std_sparsify, "--format sparsify holds TopK SAEs")) << std_sparsify.out;
  auto bad = run("train-sae --activations " + fixture("sae_formats/golden.safetensors") + " --out " + dir + "-x");
  EXPECT_NE(bad.code, 0);
  EXPECT_TRUE(has(bad, "name the activations with --hook")) << bad.out;
}

TEST(Cli, SteerPrintsTheSteeredContinuationBesideThePlainOne) {
  auto r = run("steer " + fixture("tiny_script.pt") + " --sae " + fixture("steer/sae") +
               " --feature 5 --scale 4 --tokens 1,7,3,12,9 --generate 6");
  ASSERT_EQ(r.code, 0) << r.out;
  // the continuations models/make_steer_goldens.py computes by hand in PyTorch
  EXPECT_TRUE(has(r, "unsteered: 28,28,28,28,28,29")) << r.out;
  EXPECT_TRUE(has(r, "steered:   7,21,2,2,41,41")) << r.out;
  auto bad = run("steer " + fixture("tiny_script.pt") + " --sae " + fixture("steer/sae") +
                 " --feature 99 --scale 4 --tokens 1,2,3");
  EXPECT_NE(bad.code, 0);
  EXPECT_TRUE(has(bad, "feature 99 is out of range; the SAE has 64 latents")) << bad.out;
}
