// Kill anywhere, lose nothing. Capture and SAE training are killed with SIGKILL at 20 random moments
// each (each restart is killed after a delay uniform in [0, t/3), t an uninterrupted run's length,
// startup included, so the kills fall in every phase as the work advances); every restart passes
// --resume; the end result must equal the uninterrupted run's byte for byte, with no temporary file
// left. SIGINT and SIGTERM stop at the next safe point with a message saying how to resume.
//   INTERP_KILL_SEED=N picks other moments (the seed used is printed).
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_util.h"

extern char** environ;

using interp::test::fixture;
namespace fs = std::filesystem;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Starts `sh -c "exec CMD > LOG 2>&1"`: the pid is interp's own.
pid_t start(const std::string& cmd, const std::string& log) {
  const std::string line = "exec " + cmd + " > '" + log + "' 2>&1";
  const char* argv[] = {"/bin/sh", "-c", line.c_str(), nullptr};
  pid_t pid = -1;
  if (posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ) != 0) return -1;
  return pid;
}

// Exit code, or 128 + signal.
int wait_for(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

double run_seconds(const std::string& cmd, const std::string& log, int* code) {
  auto t0 = std::chrono::steady_clock::now();
  *code = wait_for(start(cmd, log));
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

uint64_t seed() {
  const char* s = std::getenv("INTERP_KILL_SEED");
  return s && *s ? std::strtoull(s, nullptr, 10) : 20261130;
}

// Runs `resume_cmd` again and again, each time killing it with SIGKILL after a delay uniform in
// [startup / 2, startup + work / 8): late in its start-up or during its work, which advances between
// kills. `marker` reads the job's saved progress (a manifest, a checkpoint); a kill after which it
// changed landed mid-work. After `kills` kills the job runs to its end. Returns kills that hit a
// running process; *mid_work counts those after saved progress grew.
int kill_and_resume(const std::string& resume_cmd, const std::string& log, double startup, double work, int kills,
                    std::mt19937_64& rng, const std::function<std::string()>& marker, int* mid_work, int* final_code) {
  std::uniform_real_distribution<double> when(startup / 2, startup + work / 8);
  int hit = 0;
  *mid_work = 0;
  std::string last = marker();
  for (int i = 0; i < kills; ++i) {
    pid_t pid = start(resume_cmd, log);
    std::this_thread::sleep_for(std::chrono::duration<double>(when(rng)));
    const bool sent = kill(pid, SIGKILL) == 0;
    const int code = wait_for(pid);
    if (sent && code == 128 + SIGKILL) {
      ++hit;
      const std::string now = marker();
      if (now != last) ++*mid_work;
      last = now;
    } else if (code != 0) {
      ADD_FAILURE() << "a run between kills failed (" << code << "):\n" << slurp(log);
    }
  }
  *final_code = wait_for(start(resume_cmd, log));
  return hit;
}

void no_temporaries(const std::string& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << "left behind: " << e.path();
}

std::string temp_dir(const std::string& name) {
  std::string d = ::testing::TempDir() + "interp-kill-" + name + "-" + std::to_string(::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

const std::string kCapture = " capture --model " + fixture("tiny_lm_trace.pt") + " --data " + fixture("brown") +
                             " --tokenizer " + fixture("brown-1k.model") +
                             " --hooks blocks.0.hook_resid_post,blocks.1.hook_mlp_out --ctx 32 --batch 8"
                             " --shard-contexts 16 --seed 1 ";

}  // namespace

// The corpus: the Brown fixture 20 times over, as a token file (so start-up does not tokenize).
std::string big_token_file(const std::string& d) {
  std::string text;
  for (int i = 0; i < 20; ++i)
    for (const auto& e : fs::directory_iterator(fixture("brown"))) text += slurp(e.path().string()) + "\n";
  std::ofstream(d + "/big.txt") << text;
  int code = wait_for(start(std::string(INTERP_BIN) + " tokenize --data " + d + "/big.txt --tokenizer " +
                                fixture("brown-1k.model") + " --out " + d + "/big.safetensors",
                            d + "/tokenize.log"));
  EXPECT_EQ(code, 0) << slurp(d + "/tokenize.log");
  return d + "/big.safetensors";
}

double startup_seconds(const std::string& d) {
  int code = 0;
  return run_seconds(std::string(INTERP_BIN) + " hooks " + fixture("tiny_lm_trace.pt"), d + "/hooks.log", &code);
}

TEST(KillAnywhere, CaptureResumedAfter20RandomKillsEqualsAnUninterruptedOne) {
  const std::string d = temp_dir("capture");
  const std::string bin = INTERP_BIN;
  const std::string cap = bin + " capture --model " + fixture("tiny_lm_trace.pt") + " --data " + big_token_file(d) +
                          " --hooks blocks.0.hook_resid_post,blocks.1.hook_mlp_out --ctx 32 --batch 8"
                          " --shard-contexts 16 --seed 1 --tokens 250000 --out ";
  int code = 0;
  const double startup = startup_seconds(d);
  const double t = run_seconds(cap + d + "/whole", d + "/whole.log", &code);
  ASSERT_EQ(code, 0) << slurp(d + "/whole.log");
  std::mt19937_64 rng(seed());
  int mid = 0;
  auto marker = [&] { return slurp(d + "/killed/manifest.json"); };
  const int hit = kill_and_resume(cap + d + "/killed --resume", d + "/killed.log", startup, t - startup, 20, rng, marker,
                                  &mid, &code);
  std::printf("  seed %llu: uninterrupted run %.2f s (start-up %.2f s); 20 kills, %d of a running capture, %d of them "
              "after shards were saved\n",
              static_cast<unsigned long long>(seed()), t, startup, hit, mid);
  ASSERT_EQ(code, 0) << slurp(d + "/killed.log");
  const auto whole = nlohmann::json::parse(slurp(d + "/whole/manifest.json"));
  const auto killed = nlohmann::json::parse(slurp(d + "/killed/manifest.json"));
  EXPECT_EQ(killed["shards"], whole["shards"]);
  EXPECT_TRUE(killed["complete"].get<bool>());
  for (const auto& s : whole["shards"]) {
    const std::string f = s["file"];
    EXPECT_EQ(slurp(d + "/killed/" + f), slurp(d + "/whole/" + f)) << f;
  }
  no_temporaries(d + "/killed");
  // (timing-dependent counts, so loose bounds: on a loaded machine later restarts may finish first)
  EXPECT_GE(hit, 8) << "most kills should land while the capture runs";
  EXPECT_GE(mid, 2) << "kills should land mid-capture, not only during start-up";
}

TEST(KillAnywhere, TrainingResumedAfter20RandomKillsIsBitForBitTheSame) {
  const std::string d = temp_dir("train");
  const std::string bin = INTERP_BIN;
  int code = 0;
  ASSERT_EQ(run_seconds(bin + kCapture + "--tokens 4096 --out " + d + "/store", d + "/store.log", &code) > 0 && code == 0, true)
      << slurp(d + "/store.log");
  const std::string train =
      " train-sae --activations " + d + "/store --hook blocks.0.hook_resid_post --d-sae 128 --k 8 --steps 2000 --batch 256 --checkpoint-every 25 --out ";
  const double startup = startup_seconds(d);
  const double t = run_seconds(bin + train + d + "/whole", d + "/whole.log", &code);
  ASSERT_EQ(code, 0) << slurp(d + "/whole.log");
  std::mt19937_64 rng(seed() + 1);
  int mid = 0;
  auto marker = [&] { return slurp(d + "/killed/checkpoint.safetensors"); };
  const int hit = kill_and_resume(bin + train + d + "/killed --resume", d + "/killed.log", startup, t - startup, 20, rng,
                                  marker, &mid, &code);
  std::printf("  seed %llu: uninterrupted run %.2f s (start-up %.2f s); 20 kills, %d of a running training, %d of them "
              "after a checkpoint was saved\n",
              static_cast<unsigned long long>(seed() + 1), t, startup, hit, mid);
  ASSERT_EQ(code, 0) << slurp(d + "/killed.log");
  EXPECT_EQ(slurp(d + "/killed/sae_weights.safetensors"), slurp(d + "/whole/sae_weights.safetensors"))
      << "the resumed SAE differs from the uninterrupted one";
  EXPECT_EQ(slurp(d + "/killed/cfg.json"), slurp(d + "/whole/cfg.json"));
  no_temporaries(d + "/killed");
  EXPECT_GE(hit, 8) << "most kills should land while training runs";
  EXPECT_GE(mid, 2) << "kills should land mid-training, not only during start-up";
}

// SIGINT and SIGTERM: the job stops at its next safe point, says how to resume, and the resumed
// run ends where an uninterrupted one does.
TEST(KillAnywhere, SigintAndSigtermStopCleanlyAndResume) {
  const std::string d = temp_dir("signals");
  const std::string bin = INTERP_BIN;
  int code = 0;
  run_seconds(bin + kCapture + "--tokens 4096 --out " + d + "/store", d + "/store.log", &code);
  ASSERT_EQ(code, 0) << slurp(d + "/store.log");
  const std::string train =
      " train-sae --activations " + d + "/store --hook blocks.0.hook_resid_post --d-sae 128 --k 8 --steps 20000 --batch 256 --checkpoint-every 100000 --out ";
  for (int sig : {SIGINT, SIGTERM}) {
    const std::string out = d + "/sae-" + std::to_string(sig);
    pid_t pid = start(bin + train + out, out + ".log");
    for (int i = 0; i < 200 && slurp(out + ".log").find("step ") == std::string::npos; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // training has started
    kill(pid, sig);
    EXPECT_EQ(wait_for(pid), 1);
    const std::string log = slurp(out + ".log");
    EXPECT_NE(log.find("stopping at the next safe point"), std::string::npos) << log;
    EXPECT_NE(log.find("run the same command again with --resume to continue"), std::string::npos) << log;
    EXPECT_TRUE(fs::exists(out + "/checkpoint.safetensors")) << log;
    no_temporaries(out);
  }
  // capture: stopped after a shard, resumable to the same store
  const std::string cap = bin + kCapture + "--tokens 13824 --out " + d + "/cap";
  pid_t pid = start(cap, d + "/cap.log");
  for (int i = 0; i < 200 && !fs::exists(d + "/cap/shard-000001.safetensors"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  kill(pid, SIGINT);
  EXPECT_EQ(wait_for(pid), 1) << slurp(d + "/cap.log");
  EXPECT_NE(slurp(d + "/cap.log").find("run the same command again with --resume to continue"), std::string::npos)
      << slurp(d + "/cap.log");
  run_seconds(cap + " --resume", d + "/cap.log", &code);
  EXPECT_EQ(code, 0) << slurp(d + "/cap.log");
  run_seconds(bin + kCapture + "--tokens 13824 --out " + d + "/cap-whole", d + "/cap-whole.log", &code);
  EXPECT_EQ(nlohmann::json::parse(slurp(d + "/cap/manifest.json"))["shards"],
            nlohmann::json::parse(slurp(d + "/cap-whole/manifest.json"))["shards"]);
  no_temporaries(d + "/cap");
}
