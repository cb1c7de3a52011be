// The activation store: read-back against direct runs, kill-and-resume, corruption, the loader.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "interp/data.h"
#include "interp/error.h"
#include "interp/hooks.h"
#include "interp/safetensors.h"
#include "interp/store.h"
#include "interp/tokenizer.h"
#include "interp/util.h"
#include "test_util.h"

namespace fs = std::filesystem;
using interp::test::fixture;

namespace {

const std::vector<std::string> kHooks = {"hook_embed", "blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern"};

class Store : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new interp::HookedModel(interp::HookedModel::load(fixture("tiny_lm_trace.pt")));
    tok_ = new interp::Tokenizer(interp::Tokenizer::load(fixture("brown-1k.model")));
    tc_ = new interp::TokenizedCorpus(interp::tokenize(interp::corpus_load(fixture("brown")), *tok_));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tok_;
    delete tc_;
  }
  static interp::PackOptions pack() {
    interp::PackOptions p;
    p.ctx = 32;
    p.seed = 1;
    return p;
  }
  interp::CaptureOptions options(int64_t tokens) const {
    interp::CaptureOptions o;
    o.hooks = kHooks;
    o.n_tokens = tokens;
    o.batch = 8;
    o.contexts_per_shard = 16;
    o.tokenizer_hash = tok_->hash();
    o.corpus_hash = tc_->corpus_hash;
    o.pack = pack();
    return o;
  }
  std::string dir(const std::string& name) const {
    std::string d = ::testing::TempDir() + "/store-" + name;
    fs::remove_all(d);
    return d;
  }
  static interp::HookedModel* model_;
  static interp::Tokenizer* tok_;
  static interp::TokenizedCorpus* tc_;
};
interp::HookedModel* Store::model_ = nullptr;
interp::Tokenizer* Store::tok_ = nullptr;
interp::TokenizedCorpus* Store::tc_ = nullptr;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const interp::Error& e) {
    return e.what();
  }
  return "NO ERROR";
}

TEST_F(Store, ReadBackEqualsDirectRunExactly) {
  interp::PackedContexts contexts(*tc_, pack());
  std::string d = dir("readback");
  auto r = interp::capture(*model_, contexts, d, options(40 * 32));
  EXPECT_EQ(r.tokens, 1280);
  EXPECT_EQ(r.shards, 3);  // 16 + 16 + 8 contexts
  auto store = interp::ActivationStore::open(d);
  EXPECT_TRUE(store.complete());
  EXPECT_EQ(store.n_tokens(), 1280);
  EXPECT_EQ(store.hook("blocks.1.attn.hook_pattern").shape, (std::vector<int64_t>{4, 32, 32}));
  EXPECT_FALSE(store.hook("blocks.1.attn.hook_pattern").per_token);
  for (int64_t s = 0; s < 3; ++s) {
    auto shard = store.read_shard(s);
    const auto& info = store.shards()[static_cast<size_t>(s)];
    at::Tensor tokens = contexts.batch(info.first_context, info.contexts);
    ASSERT_TRUE(at::equal(shard.tensors.at("tokens").to(at::kLong), tokens));
    for (int64_t b = 0; b < info.contexts; b += 8) {  // same batches as the capture: bit-exact
      auto [logits, cache] = model_->run_with_cache(tokens.slice(0, b, b + 8), interp::names_filter(kHooks));
      for (const auto& h : kHooks) {
        at::Tensor stored = shard.tensors.at(h).slice(0, b, b + 8);
        ASSERT_TRUE(at::equal(stored, cache[h])) << h << " shard " << s << " batch " << b << " max diff "
                                                 << interp::test::max_abs_diff(stored, cache[h]);
      }
    }
    EXPECT_EQ(shard.tensors.at("tags").sizes(), (std::vector<int64_t>{info.contexts, 32}));
  }
}

TEST_F(Store, APointIsStoredUnderTheNameAskedFor) {
  // "blocks.0.attn" (a module path) is the same value as blocks.0.hook_attn_out: stored under the
  // module path, once, though both names are asked for.
  interp::PackedContexts contexts(*tc_, pack());
  std::string d = dir("alias");
  auto o = options(8 * 32);
  o.hooks = {"blocks.0.attn", "blocks.0.hook_attn_out", "blocks.0.mlp"};
  interp::capture(*model_, contexts, d, o);
  auto store = interp::ActivationStore::open(d);
  std::vector<std::string> names;
  for (const auto& h : store.hooks()) names.push_back(h.name);
  EXPECT_EQ(names, (std::vector<std::string>{"blocks.0.attn", "blocks.0.mlp"}));
  auto shard = store.read_shard(0);
  auto [logits, cache] = model_->run_with_cache(contexts.batch(0, 8), interp::names_filter(std::vector<std::string>{"blocks.0.hook_attn_out"}));
  EXPECT_TRUE(at::equal(shard.tensors.at("blocks.0.attn"), cache["blocks.0.hook_attn_out"]));
}

TEST_F(Store, RefusesAnotherCaptureOrAForeignFolder) {
  interp::PackedContexts contexts(*tc_, pack());
  std::string d = dir("refuse");
  interp::capture(*model_, contexts, d, options(320));
  auto msg = error_of([&] { interp::capture(*model_, contexts, d, options(320)); });
  EXPECT_NE(msg.find("already holds this capture"), std::string::npos) << msg;
  auto other = options(320);
  other.hooks = {"blocks.1.hook_resid_pre"};
  msg = error_of([&] { interp::capture(*model_, contexts, d, other); });
  EXPECT_NE(msg.find("holds a different capture (hooks differ)"), std::string::npos) << msg;
  other = options(320);
  other.dtype = "bf16";
  msg = error_of([&] { interp::capture(*model_, contexts, d, other); });
  EXPECT_NE(msg.find("dtype"), std::string::npos) << msg;
  std::string foreign = dir("foreign");
  fs::create_directories(foreign);
  std::ofstream(foreign + "/notes.txt") << "mine";
  msg = error_of([&] { interp::capture(*model_, contexts, foreign, options(320)); });
  EXPECT_NE(msg.find("not empty and holds no interp store (found 'notes.txt')"), std::string::npos) << msg;
  msg = error_of([&] { interp::capture(*model_, contexts, dir("toomuch"), options(100000000)); });
  EXPECT_NE(msg.find("lower --tokens"), std::string::npos) << msg;
  auto bad_hook = options(320);
  bad_hook.hooks = {"blocks.0.hook_resid_pots"};
  msg = error_of([&] { interp::capture(*model_, contexts, dir("badhook"), bad_hook); });
  EXPECT_NE(msg.find("closest: blocks.0.hook_resid_post"), std::string::npos) << msg;
}

TEST_F(Store, ResumeExtendsAndCleansLeftovers) {
  interp::PackedContexts contexts(*tc_, pack());
  std::string d = dir("extend");
  interp::capture(*model_, contexts, d, options(20 * 32));
  // what a kill mid-write leaves: a temporary file, and a shard file the manifest never recorded
  std::ofstream(d + "/shard-000002.safetensors.tmp.12345") << "partial";
  std::ofstream(d + "/shard-000002.safetensors") << "garbage from a killed run";
  auto o = options(40 * 32);
  o.resume = true;
  auto r = interp::capture(*model_, contexts, d, o);
  EXPECT_EQ(r.resumed_shards, 2);
  EXPECT_FALSE(fs::exists(d + "/shard-000002.safetensors.tmp.12345"));
  auto store = interp::ActivationStore::open(d);
  store.verify();
  EXPECT_EQ(store.n_contexts(), 40);
  // the data is what a direct run gives, wherever the shard boundaries fell
  at::Tensor all_rows;
  std::vector<at::Tensor> parts;
  for (size_t s = 0; s < store.shards().size(); ++s)
    parts.push_back(store.shard_rows(static_cast<int64_t>(s), "blocks.0.hook_resid_post"));
  all_rows = at::cat(parts);
  // the resumed run started a shard at context 20 (batches 20-27, 28-35) and one at 36 (36-39)
  for (auto [first, n] : {std::pair<int64_t, int64_t>{20, 8}, {28, 8}, {36, 4}}) {
    auto [l, cache] = model_->run_with_cache(contexts.batch(first, n), interp::names_filter(kHooks));
    EXPECT_TRUE(at::equal(all_rows.slice(0, first * 32, (first + n) * 32),
                          cache["blocks.0.hook_resid_post"].reshape({-1, 32})))
        << "contexts " << first << ".." << first + n;
  }
}

// ---------------------------------------------------------------------------------------------
// Kill and resume through the CLI, as a user would hit it.

int sh(const std::string& cmd) {
  int status = std::system(cmd.c_str());
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string capture_cmd(const std::string& out, const std::string& extra = "") {
  return std::string(INTERP_BIN) + " capture --model " + fixture("tiny_lm_trace.pt") + " --data " + fixture("brown") +
         " --tokenizer " + fixture("brown-1k.model") +
         " --hooks blocks.0.hook_resid_post,blocks.1.hook_mlp_out --tokens 4096 --ctx 32 --batch 8 --shard-contexts 16"
         " --seed 1 --out " + out + " " + extra + " > " + out + ".log 2>&1";
}

std::vector<std::pair<std::string, std::string>> shard_hashes(const std::string& dir) {
  std::ifstream in(dir + "/manifest.json");
  auto m = nlohmann::json::parse(in);
  std::vector<std::pair<std::string, std::string>> v;
  for (const auto& s : m["shards"]) v.emplace_back(s["file"], s["xxh64"]);
  return v;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class KillResume : public ::testing::TestWithParam<int> {};

TEST_P(KillResume, ResumedStoreIsIdenticalToAnUninterruptedOne) {
  if (std::string(INTERP_BIN).empty()) GTEST_SKIP() << "the interp CLI was not built";
  const int kill_after = GetParam();
  std::string base = ::testing::TempDir() + "/kill" + std::to_string(kill_after);
  fs::remove_all(base);
  fs::create_directories(base);
  ASSERT_EQ(sh(capture_cmd(base + "/whole")), 0) << slurp(base + "/whole.log");
  // killed (SIGKILL) right after shard N's file is in place, before the manifest records it
  int rc = sh("INTERP_FAULT=kill-after-shard:" + std::to_string(kill_after) + " " + capture_cmd(base + "/killed"));
  EXPECT_NE(rc, 0) << "the fault did not fire";
  auto partial = shard_hashes(base + "/killed");
  EXPECT_EQ(partial.size(), static_cast<size_t>(kill_after)) << "the manifest must not list the shard in flight";
  char name[64];
  std::snprintf(name, sizeof name, "shard-%06d.safetensors", kill_after);
  EXPECT_TRUE(fs::exists(base + "/killed/" + name)) << "the killed shard's file was already in place";
  // without --resume the folder is refused; with it the capture completes
  EXPECT_NE(sh(capture_cmd(base + "/killed")), 0);
  EXPECT_NE(slurp(base + "/killed.log").find("pass --resume"), std::string::npos) << slurp(base + "/killed.log");
  ASSERT_EQ(sh(capture_cmd(base + "/killed", "--resume")), 0) << slurp(base + "/killed.log");
  EXPECT_NE(slurp(base + "/killed.log").find(std::to_string(kill_after) + " shards kept from before"), std::string::npos);
  auto whole = shard_hashes(base + "/whole"), resumed = shard_hashes(base + "/killed");
  EXPECT_EQ(resumed, whole);
  for (const auto& [file, hash] : whole)
    EXPECT_EQ(slurp(base + "/killed/" + file), slurp(base + "/whole/" + file)) << file;
  EXPECT_EQ(sh(std::string(INTERP_BIN) + " store verify " + base + "/killed > /dev/null 2>&1"), 0);
}

INSTANTIATE_TEST_SUITE_P(Points, KillResume, ::testing::Values(0, 3));

// ---------------------------------------------------------------------------------------------

TEST_F(Store, AFailedWriteIsAnErrorAndResumable) {
  interp::PackedContexts contexts(*tc_, pack());
  std::string d = dir("failwrite");
  setenv("INTERP_FAULT", "fail-shard:2", 1);
  auto msg = error_of([&] { interp::capture(*model_, contexts, d, options(96 * 32)); });
  unsetenv("INTERP_FAULT");
  EXPECT_NE(msg.find("writing shard 2 failed"), std::string::npos) << msg;
  auto partial = interp::ActivationStore::open(d);
  EXPECT_FALSE(partial.complete());
  EXPECT_EQ(partial.shards().size(), 2u) << "the shards before the failure are kept";
  auto o = options(96 * 32);
  o.resume = true;
  auto r = interp::capture(*model_, contexts, d, o);
  EXPECT_EQ(r.resumed_shards, 2);
  auto store = interp::ActivationStore::open(d);
  EXPECT_TRUE(store.complete());
  EXPECT_EQ(store.n_contexts(), 96);
  store.verify();
}

TEST_F(Store, CorruptionIsReportedByName) {
  interp::PackedContexts contexts(*tc_, pack());
  std::string d = dir("corrupt");
  interp::capture(*model_, contexts, d, options(48 * 32));
  std::string shard1 = d + "/shard-000001.safetensors";
  std::string original = slurp(shard1);

  // a flipped byte: the checksum names the shard
  std::string flipped = original;
  flipped[flipped.size() / 2] ^= 0x40;
  std::ofstream(shard1, std::ios::binary) << flipped;
  auto store = interp::ActivationStore::open(d);
  auto msg = error_of([&] { store.verify(); });
  EXPECT_NE(msg.find("shard shard-000001.safetensors is corrupt"), std::string::npos) << msg;
  msg = error_of([&] { store.read_shard(1); });
  EXPECT_NE(msg.find("corrupt"), std::string::npos) << msg;
  EXPECT_NO_THROW(store.read_shard(0));

  // truncated
  std::ofstream(shard1, std::ios::binary) << original.substr(0, original.size() - 100);
  msg = error_of([&] { interp::ActivationStore::open(d); });
  EXPECT_NE(msg.find("shard shard-000001.safetensors has"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  std::ofstream(shard1, std::ios::binary) << original;

  // mismatched manifests
  std::string manifest = slurp(d + "/manifest.json");
  auto m = nlohmann::json::parse(manifest);
  m["shards"][1]["first_context"] = 17;
  std::ofstream(d + "/manifest.json") << m.dump();
  msg = error_of([&] { interp::ActivationStore::open(d); });
  EXPECT_NE(msg.find("mismatched manifest: shard 1 starts at context 17, expected 16"), std::string::npos) << msg;
  m = nlohmann::json::parse(manifest);
  m["hooks"][1]["shape"] = {32, 16};
  std::ofstream(d + "/manifest.json") << m.dump();
  msg = error_of([&] { interp::ActivationStore::open(d).read_shard(0); });
  EXPECT_NE(msg.find("tensor 'blocks.0.hook_resid_post' has shape"), std::string::npos) << msg;
  // a shard of another dtype whose size and checksum the manifest agrees with: refused by dtype (the
  // loader copies rows as bytes of the manifest's dtype, so it would read wrong numbers)
  {
    m = nlohmann::json::parse(manifest);
    auto sf = interp::safetensors_load(d + "/shard-000000.safetensors");
    std::map<std::string, at::Tensor> t(sf.tensors.begin(), sf.tensors.end());
    t.at("blocks.0.hook_resid_post") = t.at("blocks.0.hook_resid_post").to(at::kHalf);
    const std::string other = d + "/shard-000000.safetensors";
    interp::safetensors_save(other, t, sf.metadata);
    const std::string bytes = slurp(other);
    m["shards"][0]["bytes"] = bytes.size();
    m["shards"][0]["xxh64"] = interp::hex64(interp::xxh64(bytes.data(), bytes.size()));
    std::ofstream(d + "/manifest.json") << m.dump();
    msg = error_of([&] { interp::ActivationStore::open(d).read_shard(0); });
    EXPECT_NE(msg.find("tensor 'blocks.0.hook_resid_post' is Half but the manifest says Float"), std::string::npos)
        << msg;
  }
  std::ofstream(d + "/manifest.json") << "{not json";
  msg = error_of([&] { interp::ActivationStore::open(d); });
  EXPECT_NE(msg.find("manifest is not valid JSON"), std::string::npos) << msg;
  fs::remove(d + "/manifest.json");
  msg = error_of([&] { interp::ActivationStore::open(d); });
  EXPECT_NE(msg.find("no manifest.json"), std::string::npos) << msg;
}

TEST_F(Store, LoaderYieldsEveryTokenOncePerEpoch) {
  interp::PackedContexts contexts(*tc_, pack());
  std::string d = dir("loader");
  int64_t n_ctx = std::min<int64_t>(contexts.size(), 200);
  interp::capture(*model_, contexts, d, options(n_ctx * 32));
  auto store = interp::ActivationStore::open(d);
  const int64_t N = store.n_tokens();
  std::vector<at::Tensor> parts;
  for (size_t s = 0; s < store.shards().size(); ++s) parts.push_back(store.shard_rows(static_cast<int64_t>(s), kHooks[1]));
  at::Tensor rows = at::cat(parts);  // row i = token i of the store
  ASSERT_EQ(rows.size(0), N);

  interp::LoaderOptions o;
  o.batch_size = 1000;
  o.shuffle_buffer = 2048;
  o.seed = 9;
  o.epochs = 2;
  interp::ActivationLoader loader(store, kHooks[1], o);
  EXPECT_EQ(loader.rows_per_epoch(), N);
  std::vector<std::vector<int64_t>> seen(2);
  std::set<int64_t> first_batch_shards;
  bool first = true;
  while (auto b = loader.next()) {
    ASSERT_LE(b->acts.size(0), 1000);
    ASSERT_TRUE(at::equal(b->acts, rows.index_select(0, b->index))) << "rows do not match their indices";
    auto* idx = b->index.data_ptr<int64_t>();
    seen[static_cast<size_t>(b->epoch)].insert(seen[static_cast<size_t>(b->epoch)].end(), idx, idx + b->index.numel());
    if (first)
      for (int64_t i = 0; i < b->index.numel(); ++i) first_batch_shards.insert(idx[i] / (16 * 32));
    first = false;
  }
  for (int e = 0; e < 2; ++e) {
    std::vector<int64_t> sorted = seen[static_cast<size_t>(e)];
    std::sort(sorted.begin(), sorted.end());
    ASSERT_EQ(static_cast<int64_t>(sorted.size()), N) << "epoch " << e;
    for (int64_t i = 0; i < N; ++i) ASSERT_EQ(sorted[static_cast<size_t>(i)], i) << "epoch " << e;
  }
  EXPECT_NE(seen[0], seen[1]) << "epochs should be ordered differently";
  EXPECT_GE(first_batch_shards.size(), 2u) << "the shuffle buffer should mix shards";
  // same seed, same order; no shuffle buffer, store order
  interp::ActivationLoader again(store, kHooks[1], o);
  EXPECT_TRUE(at::equal(again.next()->index, at::tensor(std::vector<int64_t>(seen[0].begin(), seen[0].begin() + 1000))));
  o.shuffle_buffer = 0;
  o.epochs = 1;
  interp::ActivationLoader ordered(store, kHooks[1], o);
  EXPECT_TRUE(at::equal(ordered.next()->index, at::arange(1000, at::kLong)));
  // per-context hooks have no rows
  auto msg = error_of([&] { interp::ActivationLoader bad(store, kHooks[2], o); });
  EXPECT_NE(msg.find("stored per context"), std::string::npos) << msg;
}

TEST_F(Store, ReducedDtypesAreTheRoundedValues) {
  interp::PackedContexts contexts(*tc_, pack());
  std::string d32 = dir("f32"), d16 = dir("bf16");
  interp::capture(*model_, contexts, d32, options(320));
  auto o = options(320);
  o.dtype = "bf16";
  interp::capture(*model_, contexts, d16, o);
  auto a = interp::ActivationStore::open(d32).shard_rows(0, kHooks[1]);
  auto b = interp::ActivationStore::open(d16).shard_rows(0, kHooks[1]);
  EXPECT_EQ(b.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(a.to(at::kBFloat16), b));
  EXPECT_LT(interp::ActivationStore::open(d16).shards()[0].bytes, interp::ActivationStore::open(d32).shards()[0].bytes);
}

}  // namespace
