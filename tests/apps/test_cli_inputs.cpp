// The bad inputs people really make, through the interp command line: each case is a command, the
// exit code it must give, a fragment its message must hold, and files that must not exist after it.
// No case may crash, leak a raw library backtrace ("terminate called", "Exception raised from"), or
// leave a temporary file (*.tmp.PID) behind.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "test_util.h"

using interp::test::fixture;
namespace fs = std::filesystem;

namespace {

struct Case {
  std::string args;                 // after `interp`; {d} is the case folder
  int code;                         // expected exit code
  std::string message;              // expected in stdout + stderr
  std::vector<std::string> absent;  // paths (with {d}) that must not exist afterwards
  std::string shell_prefix;         // e.g. "ulimit -f 64;"
};

std::string subst(std::string s, const std::string& d) {
  for (size_t p; (p = s.find("{d}")) != std::string::npos;) s.replace(p, 3, d);
  return s;
}

std::string case_dir(const std::string& name) {
  std::string d = ::testing::TempDir() + "interp-inputs-" + name + "-" + std::to_string(::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void no_temporaries(const std::string& d, const std::string& what) {
  for (const auto& e : fs::recursive_directory_iterator(d, fs::directory_options::skip_permission_denied))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << what << ": left behind " << e.path();
}

void run_cases(const std::string& group, const std::vector<Case>& cases, const std::string& d) {
  for (const Case& c : cases) {
    const std::string args = subst(c.args, d);
    const std::string cmd = subst(c.shell_prefix, d) + " " + std::string(INTERP_BIN) + " " + args;
    auto r = interp::test::shell("(" + cmd + ")");
    EXPECT_EQ(r.code, c.code) << group << ": interp " << args << "\n" << r.out;
    EXPECT_NE(r.out.find(subst(c.message, d)), std::string::npos)
        << group << ": interp " << args << "\nexpected: " << subst(c.message, d) << "\ngot: " << r.out;
    EXPECT_EQ(r.out.find("terminate called"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("Exception raised from"), std::string::npos) << "a raw c10 backtrace:\n" << r.out;
    for (const std::string& p : c.absent)
      EXPECT_FALSE(fs::exists(subst(p, d))) << group << ": interp " << args << " left " << subst(p, d);
    no_temporaries(d, group + ": interp " + args);
  }
}

}  // namespace

// Writers replace only regular files, and a file-size limit (as a full disk) is an error naming the
// file, with nothing left under the final name or as a temporary.
TEST(Inputs, WritersNeverReplaceOtherFilesAndReportAFullDisk) {
  const std::string d = case_dir("writers");
  const std::string m = fixture("tiny_script.pt");
  ASSERT_EQ(::mkfifo((d + "/fifo").c_str(), 0644), 0);
  fs::create_directories(d + "/folder.safetensors");
  fs::create_symlink(d + "/elsewhere.safetensors", d + "/link.safetensors");
  const std::string cache = "cache " + m + " --tokens 1,2,3 --hooks blocks.0.hook_resid_pre --out ";
  const std::vector<Case> cases = {
      {cache + "{d}/fifo", 1, "{d}/fifo: is a FIFO; interp writes its outputs as regular files", {}},
      {cache + "/dev/null", 1, "/dev/null: is a device", {}},
      {cache + "{d}/folder.safetensors", 1, "is a folder", {}},
      {cache + "{d}/link.safetensors", 1, "is a symbolic link", {"{d}/elsewhere.safetensors"}},
      {"cache " + m + " --tokens 1,2,3 --out {d}/big.safetensors", 1,
       "{d}/big.safetensors.tmp.", {"{d}/big.safetensors"}, "ulimit -f 8;"},
      {"cache " + m + " --tokens 1,2,3 --out {d}/big2.safetensors", 1,
       "the disk, quota or file-size limit is full", {"{d}/big2.safetensors"}, "ulimit -f 8;"},
  };
  run_cases("writers", cases, d);
  struct stat st;
  ASSERT_EQ(::lstat((d + "/fifo").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode)) << "the FIFO was replaced";
  ASSERT_EQ(::lstat("/dev/null", &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode)) << "/dev/null was replaced";
  EXPECT_TRUE(fs::is_symlink(d + "/link.safetensors"));
}

// Numbers are checked before any work, and a refused command leaves no output folder behind.
TEST(Inputs, NumbersAreCheckedBeforeAnyWork) {
  const std::string d = case_dir("numbers");
  const std::string syn = "train-sae --synthetic --d 16 --features 32 --d-sae 64 --k 4 ";
  const std::vector<Case> cases = {
      {syn + "--steps 0 --out {d}/a", 2, "--steps: must be positive (got 0)", {"{d}/a"}},
      {syn + "--steps -3 --out {d}/a", 2, "--steps: must be positive (got -3)", {"{d}/a"}},
      {syn + "--batch 0 --out {d}/a", 2, "--batch: must be positive (got 0)", {"{d}/a"}},
      {syn + "--lr -1 --out {d}/a", 2, "--lr: must be positive (got -1)", {"{d}/a"}},
      {syn + "--lr 0 --out {d}/a", 2, "--lr: must be positive (got 0)", {"{d}/a"}},
      {syn + "--lr nan --out {d}/a", 2, "--lr: 'nan' is not a number", {"{d}/a"}},
      {syn + "--lr 1e-3x --out {d}/a", 2, "--lr: '1e-3x' is not a number", {"{d}/a"}},
      {syn + "--lr-warmup -5 --out {d}/a", 2, "--lr-warmup: must be 0 or more (got -5)", {"{d}/a"}},
      {syn + "--checkpoint-every -1 --out {d}/a", 2, "--checkpoint-every: must be 0 or more", {"{d}/a"}},
      {syn + "--resample-every -2 --out {d}/a", 2, "--resample-every: must be 0 or more", {"{d}/a"}},
      {syn + "--seed -1 --out {d}/a", 2, "--seed: must be 0 or more (got -1)", {"{d}/a"}},
      {syn + "--l1 nan --out {d}/a", 2, "--l1: 'nan' is not a number", {"{d}/a"}},
      {syn + "--d-sae 0 --out {d}/a", 2, "--d-sae: must be positive (got 0)", {"{d}/a"}},
      {"train-sae --synthetic --d 16 --features 32 --d-sae 64 --k 65 --out {d}/a", 1,
       "k must be in 1..d_sae (64) for topk (got 65)", {"{d}/a"}},
      {syn + "--lr 1e30 --steps 5 --out {d}/a", 1, "the loss is", {"{d}/a"}},  // diverges at step 1: no folder left
      {"capture --model x --data y --hooks z --tokens 0 --out {d}/a", 2, "--tokens: must be positive (got 0)", {"{d}/a"}},
      {"eval-sae --sae x --model y --data z --tokens 0", 2, "--tokens: must be positive (got 0)", {}},
      {"run " + fixture("tiny_script.pt") + " --tokens 1,2 --top-k 0", 2, "--top-k: must be positive (got 0)", {}},
  };
  run_cases("numbers", cases, d);
}

// Token ids in prompt-pair files are checked against the model before any run, for every metric
// (a raw ATen index error for some metrics, silently ignored by kl, before).
TEST(Inputs, TokenIdsOutsideTheVocabularyAreNamed) {
  const std::string d = case_dir("ids");
  const std::string m = fixture("tiny_script.pt");
  std::ofstream(d + "/answer.json") << R"({"pairs": [
    {"clean_tokens": [1, 5, 9, 13], "corrupted_tokens": [1, 5, 30, 13], "answer": 3, "wrong": 4},
    {"clean_tokens": [8, 5, 9, 11], "corrupted_tokens": [8, 5, 31, 11], "answer": 999, "wrong": 4}]})";
  std::ofstream(d + "/clean.json") << R"({"pairs": [
    {"clean_tokens": [1, 5, 90, 13], "corrupted_tokens": [1, 5, 30, 13], "answer": 3, "wrong": 4}]})";
  const std::string oov = "pair 2 'answer' has token id 999, outside the model's vocabulary of 50 (ids 0..49)";
  const std::vector<Case> cases = {
      {"patch " + m + " --pairs {d}/answer.json --metric logit_diff --out {d}/p1", 1, oov, {"{d}/p1"}},
      {"patch " + m + " --pairs {d}/answer.json --metric prob --out {d}/p2", 1, oov, {"{d}/p2"}},
      {"patch " + m + " --pairs {d}/answer.json --metric loss --out {d}/p3", 1, oov, {"{d}/p3"}},
      {"patch " + m + " --pairs {d}/answer.json --metric kl --out {d}/p4", 1, oov, {"{d}/p4"}},
      {"ablate " + m + " --pairs {d}/answer.json --out {d}/p5", 1, oov, {"{d}/p5"}},
      {"circuit " + m + " --pairs {d}/answer.json --out {d}/p6", 1, oov, {"{d}/p6"}},
      {"patch " + m + " --pairs {d}/clean.json --out {d}/p7", 1, "pair 1 'clean_tokens' has token id 90", {"{d}/p7"}},
  };
  run_cases("ids", cases, d);
}

namespace {

// What every writer is asked to write in the full-disk tests: outputs under OUT (with {d}), inputs
// (a store and an SAE) in {d}, each command run after PREFIX.
struct WriterInputs {
  std::string lm = fixture("tiny_lm_trace.pt"), m = fixture("tiny_script.pt");
  std::string data = " --data " + fixture("brown") + " --tokenizer " + fixture("brown-1k.model") + " ";
};

// Makes the store and the SAE the writers read, in d.
void make_writer_inputs(const WriterInputs& in, const std::string& d) {
  auto ok = interp::test::shell(std::string(INTERP_BIN) + " capture --model " + in.lm + in.data +
                                "--hooks blocks.0.hook_resid_post --tokens 4096 --ctx 64 --out " + d + "/store");
  ASSERT_EQ(ok.code, 0) << ok.out;
  ok = interp::test::shell(std::string(INTERP_BIN) + " train-sae --activations " + d +
                           "/store --d-sae 64 --k 4 --steps 20 --batch 256 --out " + d + "/sae");
  ASSERT_EQ(ok.code, 0) << ok.out;
  std::ofstream(d + "/pairs.json") << R"({"pairs": [
    {"clean_tokens": [1, 5, 9, 13], "corrupted_tokens": [1, 5, 30, 13], "answer": 3, "wrong": 4},
    {"clean_tokens": [8, 5, 9, 11], "corrupted_tokens": [8, 5, 31, 11], "answer": 3, "wrong": 4}]})";
}

// One case per writer: store, SAE, checkpoint, evaluation and LM reports, token file, patching and
// circuit reports, dashboards, head report.
std::vector<Case> writer_cases(const WriterInputs& in, const std::string& out, const std::string& prefix) {
  const std::string full = "the disk, quota or file-size limit is full";
  const std::string& lm = in.lm;
  const std::string& m = in.m;
  const std::string& data = in.data;
  return {
      {"capture --model " + lm + data + "--hooks blocks.0.hook_resid_post --tokens 512 --ctx 64 --out " + out + "/store2", 1,
       full, {out + "/store2"}, prefix},
      {"train-sae --activations {d}/store --d-sae 64 --k 4 --steps 5 --batch 256 --out " + out + "/sae2", 1, full,
       {out + "/sae2"}, prefix},
      {"train-sae --activations {d}/store --d-sae 64 --k 4 --steps 5 --batch 256 --checkpoint-every 2 --out " + out +
           "/sae3",
       1, full, {out + "/sae3"}, prefix},
      {"eval-sae --sae {d}/sae --model " + lm + data + "--ctx 64 --tokens 256 --out " + out + "/eval.json", 1, full,
       {out + "/eval.json"}, prefix},
      {"tokenize" + data + "--out " + out + "/tokens.safetensors", 1, full, {out + "/tokens.safetensors"}, prefix},
      {"eval-lm " + lm + data + "--max-contexts 2 --out " + out + "/lm.json", 1, full, {out + "/lm.json"}, prefix},
      {"patch " + m + " --pairs {d}/pairs.json --out " + out + "/patch", 1, full, {out + "/patch"}, prefix},
      {"circuit " + m + " --pairs {d}/pairs.json --method eap --out " + out + "/circuit", 1, full, {out + "/circuit"},
       prefix},
      {"features --sae {d}/sae --activations {d}/store --model " + lm + " --out " + out + "/site", 1, full,
       {out + "/site"}, prefix},
      {"heads " + m + " --out " + out + "/heads.json", 1, full, {out + "/heads.json"}, prefix},
  };
}

}  // namespace

// Every writer under a file-size limit (ulimit -f 0: no file may grow, as on a full disk): a clean
// error naming the file's problem, exit 1, no output under its final name, no temporaries, and no
// half-made folder that would block a plain rerun. Outputs that cannot be written are refused
// before the work, not after it.
TEST(Inputs, EveryWriterReportsAFullDiskAndLeavesNothing) {
  const std::string d = case_dir("fulldisk");
  const WriterInputs in;
  make_writer_inputs(in, d);
  std::vector<Case> cases = writer_cases(in, "{d}", "ulimit -f 0;");
  // an output that cannot be written is refused before the work
  cases.push_back({"eval-sae --sae {d}/sae --model " + in.lm + in.data + "--ctx 64 --tokens 256 --out {d}/no/such/eval.json",
                   1, "the folder {d}/no/such does not exist", {}});
  cases.push_back({"patch " + in.m + " --pairs {d}/pairs.json --out {d}/pairs.json/x", 1,
                   "{d}/pairs.json/x: cannot create the output folder", {}});
  run_cases("full disk", cases, d);
  // nothing blocks a plain rerun of the capture that failed
  auto ok = interp::test::shell(std::string(INTERP_BIN) + " capture --model " + in.lm + in.data +
                                "--hooks blocks.0.hook_resid_post --tokens 512 --ctx 64 --out " + d + "/store2");
  EXPECT_EQ(ok.code, 0) << ok.out;
}

// The same writers on a real full file system: a 1 MB tmpfs filled to its last byte (ENOSPC rather
// than the file-size limit's EFBIG). Mounting needs root outside a container that forbids it;
// elsewhere the test is skipped and says so.
TEST(Inputs, EveryWriterReportsAFullTmpfsAndLeavesNothing) {
  const std::string d = case_dir("tmpfs");
  const std::string small = d + "/small";
  fs::create_directories(small);
  if (::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=1m") != 0)
    GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno) << "); the ulimit -f test covers the writers";
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{small};
  const WriterInputs in;
  make_writer_inputs(in, d);
  {  // fill it: write until the file system refuses
    std::FILE* f = std::fopen((small + "/filler").c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::vector<char> block(4096, 'x');
    size_t total = 0;
    while (std::fwrite(block.data(), 1, block.size(), f) == block.size()) total += block.size();
    std::fclose(f);
    std::printf("filled the tmpfs with %zu bytes\n", total);
    ASSERT_GT(total, 0u);
  }
  run_cases("full tmpfs", writer_cases(in, small, ""), d);
  // with the space back, a plain rerun of the capture that failed succeeds
  fs::remove(small + "/filler");
  auto ok = interp::test::shell(std::string(INTERP_BIN) + " capture --model " + in.lm + in.data +
                                "--hooks blocks.0.hook_resid_post --tokens 512 --ctx 64 --out " + small + "/store2");
  EXPECT_EQ(ok.code, 0) << ok.out;
}

// Models and tokens people get wrong: each named, with what to do.
TEST(Inputs, BadModelsAndTokensAreNamed) {
  const std::string d = case_dir("models");
  const std::string m = fixture("tiny_script.pt"), bad = fixture("bad_models");
  { std::ofstream(d + "/empty.pt"); }
  {
    std::ifstream in(m, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(d + "/truncated.pt", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
    std::string noise(4096, '\0');
    for (size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<char>((i * 2654435761u) >> 13);
    std::ofstream(d + "/random.pt", std::ios::binary) << noise;
  }
  fs::create_directories(d + "/folder.pt");
  const std::string tiny_tokens = " --tokens 1,2,3";
  const std::vector<Case> cases = {
      {"run /nonexistent.pt" + tiny_tokens, 1, "/nonexistent.pt: no such model file", {}},
      {"run {d}/empty.pt" + tiny_tokens, 1, "{d}/empty.pt: not a TorchScript file", {}},
      {"run {d}/truncated.pt" + tiny_tokens, 1, "{d}/truncated.pt: not a TorchScript file", {}},
      {"run {d}/random.pt" + tiny_tokens, 1, "{d}/random.pt: not a TorchScript file", {}},
      {"run {d}/folder.pt" + tiny_tokens, 1, "{d}/folder.pt: is a folder, not a model file", {}},
      {"run " + bad + "/not_lm.pt" + tiny_tokens, 1, "not logits [batch, pos, vocab]; is this a language model?", {}},
      {"run " + bad + "/float_input.pt" + tiny_tokens, 1, "interp calls forward with int64 token ids", {}},
      {"run " + bad + "/dict_no_logits.pt" + tiny_tokens, 1, "returns a dict without a tensor under 'logits'", {}},
      {"run " + bad + "/returns_str.pt" + tiny_tokens, 1, "forward returned String, not logits", {}},
      {"hooks " + bad + "/not_lm.pt", 1, "is this a language model?", {}},
      {"run " + m + " --tokens 1,2,-3", 1, "token id -3 is outside the vocabulary of 50", {}},
      {"run " + m + " --tokens 1,2,50", 1, "token id 50 is outside the vocabulary of 50", {}},
      {"run " + m + " --tokens 1,x", 1, "'x' is not an integer token id", {}},
      {"run " + m + " --tokens '1,2;3'", 1, "sequence 2 has 1 tokens but sequence 1 has 2", {}},
      {"run " + m + " --tokens ''", 1, "give exactly one of --tokens IDS or --prompt TEXT", {}},
      {"run " + m + " --tokens 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1", 1, "17 tokens per sequence, but", {}},
      {"run " + m + " --tokens 99999999999999999999", 1, "--tokens", {}},
  };
  run_cases("models and tokens", cases, d);
}
