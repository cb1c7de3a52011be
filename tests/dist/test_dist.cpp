// Data-parallel SAE training on torch.distributed (c10d, Gloo over loopback), against one process
// with the same global batch: the reference is the single-process trainer, whose own results the
// other tests pin (goldens, bit-for-bit resume).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "interp/dist.h"
#include "interp/error.h"
#include "interp/sae.h"
#include "interp/sae_train.h"
#include "interp/safetensors.h"
#include "interp/store.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

// A port nobody listens on now (bound to 0, then released).
int free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t n = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &n);
  const int port = ntohs(a.sin_port);
  ::close(s);
  return port;
}

interp::DistOptions rank_options(int rank, int world, int port, double timeout_s = 60) {
  interp::DistOptions d;
  d.rank = rank;
  d.world_size = world;
  d.local_rank = 0;
  d.master_addr = "127.0.0.1";
  d.master_port = port;
  d.timeout_s = timeout_s;
  return d;
}

struct RankRun {
  std::vector<interp::TrainProgress> log;
  std::vector<at::Tensor> params;
  double threshold = 0;
  interp::TrainResult result;
};

interp::SAEConfig sae_config(const std::string& arch) {
  interp::SAEConfig c;
  c.architecture = arch;
  c.d_in = 32;
  c.d_sae = 128;
  c.k = 4;
  c.l1_coefficient = 0.05;
  c.seed = 11;
  return c;
}

// One rank's training (group null: one process) on the same synthetic stream.
RankRun train(const std::string& arch, interp::ProcessGroup* group, int64_t steps = 60) {
  interp::SyntheticConfig sc;
  sc.n_features = 64;
  sc.d = 32;
  sc.seed = 5;
  interp::SyntheticData data(sc);
  auto source = interp::synthetic_source(data);
  interp::SAE sae(sae_config(arch));
  interp::TrainOptions o;
  o.steps = steps;
  o.batch = 512;
  o.lr = 1e-3;
  o.log_every = 10;
  o.group = group;
  RankRun r;
  o.progress = [&](const interp::TrainProgress& p) { r.log.push_back(p); };
  r.result = interp::train_sae(sae, *source, o);
  for (const auto& p : sae.parameters()) r.params.push_back(p.detach().clone());
  r.threshold = sae.inference_threshold();
  return r;
}

// Runs fn(rank) on `world` threads, each with its own process group over loopback.
template <class F>
std::vector<RankRun> on_ranks(int world, F fn) {
  const int port = free_port();
  std::vector<RankRun> runs(world);
  std::vector<std::string> errors(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        auto g = interp::ProcessGroup::connect(rank_options(r, world, port));
        runs[r] = fn(g.get());
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
  return runs;
}

double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return interp::test::max_abs_diff(a, b) / std::max(1e-12, a.abs().max().item<double>());
}

}  // namespace

// Two ranks, each on half of every batch, end where one process on the whole batch ends: the same
// logged losses and the same weights, to the order of the reductions (~1e-5 relative).
class TwoRanks : public ::testing::TestWithParam<std::string> {};

TEST_P(TwoRanks, EqualOneProcessWithTheSameGlobalBatch) {
  if (!interp::dist_available()) GTEST_SKIP() << "built without torch.distributed";
  const std::string arch = GetParam();
  RankRun one = train(arch, nullptr);
  std::vector<RankRun> two = on_ranks(2, [&](interp::ProcessGroup* g) { return train(arch, g); });
  ASSERT_EQ(two[0].params.size(), one.params.size());
  ASSERT_EQ(two[0].log.size(), one.log.size());
  for (size_t i = 0; i < one.log.size(); ++i) {
    const auto &a = one.log[i], &b = two[0].log[i];
    EXPECT_NEAR(b.mse, a.mse, 1e-5 * std::abs(a.mse) + 1e-7) << "step " << a.step;
    EXPECT_NEAR(b.sparsity, a.sparsity, 1e-5 * std::abs(a.sparsity) + 1e-7) << "step " << a.step;
    EXPECT_NEAR(b.l0, a.l0, 1e-4 * std::abs(a.l0) + 1e-6) << "step " << a.step;
    EXPECT_EQ(b.dead_fraction, a.dead_fraction) << "step " << a.step;
  }
  double worst = 0;
  for (size_t i = 0; i < one.params.size(); ++i) {
    const double d = rel_diff(one.params[i], two[0].params[i]);
    worst = std::max(worst, d);
    EXPECT_LT(d, 1e-5) << arch << " parameter " << i;
    EXPECT_TRUE(at::equal(two[0].params[i], two[1].params[i])) << "the ranks' SAEs differ: parameter " << i;
  }
  std::printf("  %s: 2 ranks vs 1 process after 60 steps: max relative weight difference %.2e, final mse %.6f vs "
              "%.6f; %llu bytes all-reduced per rank\n",
              arch.c_str(), worst, two[0].log.back().mse, one.log.back().mse,
              static_cast<unsigned long long>(two[0].result.bytes_reduced));
  // one message per step: every gradient, the loss, the fired latents and the stop flag (4 bytes each)
  int64_t n = 0;
  for (const auto& p : one.params) n += p.numel();
  const uint64_t per_step = 4 * static_cast<uint64_t>(n + 1 + 128 + 1);
  EXPECT_GE(two[0].result.bytes_reduced, 60 * per_step);
}

INSTANTIATE_TEST_SUITE_P(Architectures, TwoRanks, ::testing::Values("topk", "standard", "jumprelu"));

// BatchTopK selects within each rank's slice (documented); its threshold is still one for all.
TEST(Dist, BatchTopKRanksAgreeWithEachOther) {
  if (!interp::dist_available()) GTEST_SKIP() << "built without torch.distributed";
  std::vector<RankRun> two = on_ranks(2, [&](interp::ProcessGroup* g) { return train("batchtopk", g, 30); });
  for (size_t i = 0; i < two[0].params.size(); ++i) EXPECT_TRUE(at::equal(two[0].params[i], two[1].params[i]));
  EXPECT_EQ(two[0].threshold, two[1].threshold);
  EXPECT_GT(two[0].threshold, 0);
}

TEST(Dist, CollectivesSumMinAndBroadcast) {
  if (!interp::dist_available()) GTEST_SKIP() << "built without torch.distributed";
  on_ranks(3, [](interp::ProcessGroup* g) {
    std::vector<at::Tensor> t = {at::full({4}, static_cast<float>(g->rank() + 1)),
                                 at::arange(6, at::kDouble).reshape({2, 3}).t()};  // not contiguous
    g->all_reduce(t);
    EXPECT_TRUE(at::equal(t[0], at::full({4}, 6.0f)));
    EXPECT_TRUE(at::equal(t[1], 3 * at::arange(6, at::kDouble).reshape({2, 3}).t()));
    std::vector<at::Tensor> m = {at::full({1}, static_cast<double>(10 - g->rank()))};
    g->all_reduce(m, interp::ProcessGroup::Op::Min);
    EXPECT_EQ(m[0].item<double>(), 8);
    std::vector<at::Tensor> b = {at::full({2}, static_cast<int64_t>(g->rank() * 7))};
    g->broadcast(b, 2);
    EXPECT_TRUE(at::equal(b[0], at::full({2}, static_cast<int64_t>(14))));
    g->barrier();
    return RankRun{};
  });
}

// A rendezvous nobody comes to is an error within the timeout, naming what to check.
TEST(Dist, AMissingRankIsAClearErrorWithinTheTimeout) {
  if (!interp::dist_available()) GTEST_SKIP() << "built without torch.distributed";
  const auto t0 = std::chrono::steady_clock::now();
  try {
    (void)interp::ProcessGroup::connect(rank_options(0, 2, free_port(), 2.0));
    FAIL() << "no error";
  } catch (const interp::Error& e) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("  rank 0 alone: error after %.1f s: %s\n", s, e.what());
    EXPECT_LT(s, 30);
    EXPECT_NE(std::string(e.what()).find("could not meet the others"), std::string::npos) << e.what();
  }
  try {
    (void)interp::ProcessGroup::connect(rank_options(1, 2, free_port(), 2.0));
    FAIL() << "no error";
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("is rank 0 running"), std::string::npos) << e.what();
  }
}

// Under torchrun, the agent serves the store on MASTER_PORT before the workers start; the workers
// (rank 0 too) join it under "/worker/attempt_N" instead of serving one. The agent is played here
// by a TCPStore server of this process.
TEST(Dist, JoinsTheStoreTorchrunsAgentServes) {
  if (!interp::dist_available()) GTEST_SKIP() << "built without torch.distributed";
  const int port = free_port();
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(port);
  so.isServer = true;
  so.waitWorkers = false;
  auto agent = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", so);
  ::setenv("TORCHELASTIC_USE_AGENT_STORE", "True", 1);
  ::setenv("TORCHELASTIC_RESTART_COUNT", "0", 1);
  std::vector<double> sums(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.emplace_back([&, r] {
      try {
        auto g = interp::ProcessGroup::connect(rank_options(r, 2, port, 20));
        std::vector<at::Tensor> t = {at::full({1}, static_cast<double>(r + 1))};
        g->all_reduce(t);
        sums[r] = t[0].item<double>();
      } catch (const std::exception& e) {
        ADD_FAILURE() << "rank " << r << ": " << e.what();
      }
    });
  for (auto& t : ranks) t.join();
  ::unsetenv("TORCHELASTIC_USE_AGENT_STORE");
  ::unsetenv("TORCHELASTIC_RESTART_COUNT");
  EXPECT_EQ(sums[0], 3);
  EXPECT_EQ(sums[1], 3);
}

TEST(Dist, OptionsComeFromTheEnvironmentAndAreChecked) {
  ::setenv("RANK", "1", 1);
  ::setenv("WORLD_SIZE", "4", 1);
  ::setenv("MASTER_ADDR", "10.0.0.1", 1);
  ::setenv("MASTER_PORT", "29400", 1);
  ::setenv("LOCAL_RANK", "1", 1);
  interp::DistOptions d = interp::DistOptions::from_env();
  EXPECT_EQ(d.rank, 1);
  EXPECT_EQ(d.world_size, 4);
  EXPECT_EQ(d.master_addr, "10.0.0.1");
  EXPECT_EQ(d.master_port, 29400);
  EXPECT_EQ(d.local_rank, 1);
  interp::DistOptions given;
  given.rank = 3;  // a flag wins over the environment
  EXPECT_EQ(given.resolve().rank, 3);
  ::setenv("RANK", "4", 1);
  EXPECT_THROW(interp::DistOptions::from_env(), interp::Error);  // outside 0..3
  ::setenv("RANK", "x1", 1);
  try {
    (void)interp::DistOptions::from_env();
    FAIL();
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("RANK='x1' is not a non-negative integer"), std::string::npos) << e.what();
  }
  ::unsetenv("RANK");
  try {
    (void)interp::DistOptions::from_env();
    FAIL();
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("RANK is not set"), std::string::npos) << e.what();
  }
  for (const char* v : {"WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"}) ::unsetenv(v);
}

// The CLI: two `interp train-sae --dist` processes; rank 1 killed mid-run makes rank 0 fail with a
// clear error within the timeout; both restarted with --resume finish, and the SAE equals one
// uninterrupted process with the same global batch.
TEST(Dist, AKilledRankStopsTheOthersAndResumeFinishes) {
  if (!interp::dist_available()) GTEST_SKIP() << "built without torch.distributed";
  const std::string d = ::testing::TempDir() + "interp-dist-kill-" + std::to_string(::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  const std::string args = std::string(INTERP_BIN) +
                           " train-sae --synthetic --d 32 --features 64 --d-sae 128 --k 4 --steps 300 --batch 512 "
                           "--seed 3 --checkpoint-every 20 ";
  auto one = interp::test::shell(args + "--out " + d + "/one");
  ASSERT_EQ(one.code, 0) << one.out;

  auto launch = [&](int rank, int port, const std::string& extra) {
    const std::string cmd = args + "--out " + d + "/two --dist --rank " + std::to_string(rank) +
                            " --world-size 2 --master-addr 127.0.0.1 --master-port " + std::to_string(port) +
                            " --dist-timeout 20 " + extra + " > " + d + "/rank" + std::to_string(rank) + ".log 2>&1";
    pid_t pid = ::fork();
    if (pid == 0) {
      ::execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    return pid;
  };
  auto wait_exit = [](pid_t pid) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  };
  auto read = [&](const std::string& name) {
    std::ifstream in(d + "/" + name);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };

  int port = free_port();
  pid_t r0 = launch(0, port, ""), r1 = launch(1, port, "");
  const std::string ckpt = d + "/two/checkpoint.safetensors";
  for (int i = 0; i < 600 && !fs::exists(ckpt); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(fs::exists(ckpt)) << read("rank0.log");
  ::kill(r1, SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  const int code0 = wait_exit(r0);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(wait_exit(r1), -SIGKILL);
  const std::string log0 = read("rank0.log");
  EXPECT_EQ(code0, 1) << log0;
  EXPECT_NE(log0.find("another rank has probably stopped or died"), std::string::npos) << log0;
  EXPECT_EQ(log0.find("terminate called"), std::string::npos) << log0;
  EXPECT_LT(s, 25) << "rank 0 should give up within the 20 s timeout";
  const int64_t saved = std::stoll(interp::safetensors_load(ckpt).metadata.at("step"));
  std::printf("  rank 1 killed; rank 0 stopped %.1f s later; checkpoint at step %lld\n", s,
              static_cast<long long>(saved));

  port = free_port();
  r0 = launch(0, port, "--resume");
  r1 = launch(1, port, "--resume");
  EXPECT_EQ(wait_exit(r1), 0) << read("rank1.log");
  EXPECT_EQ(wait_exit(r0), 0) << read("rank0.log");
  EXPECT_NE(read("rank0.log").find("resumed from the checkpoint of step " + std::to_string(saved)), std::string::npos)
      << read("rank0.log");
  auto a = interp::safetensors_load(d + "/one/sae_weights.safetensors");
  auto b = interp::safetensors_load(d + "/two/sae_weights.safetensors");
  double worst = 0;
  for (const auto& [name, t] : a.tensors) {
    const double r = rel_diff(t, b.tensors.at(name));
    worst = std::max(worst, r);
    EXPECT_LT(r, 1e-5) << name;
  }
  std::printf("  resumed 2-rank SAE vs 1 process: max relative difference %.2e\n", worst);
  for (const auto& e : fs::directory_iterator(d + "/two"))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(Dist, TheCliChecksItsDistOptionsFirst) {
  const std::string d = ::testing::TempDir() + "interp-dist-cli-" + std::to_string(::getpid());
  fs::remove_all(d);
  const std::string syn = std::string(INTERP_BIN) + " train-sae --synthetic --d 16 --features 32 --d-sae 64 --k 4 ";
  struct Case {
    std::string cmd, message;
  } cases[] = {
      {"env -u RANK " + syn + "--dist --out " + d + "/a", "--dist: RANK is not set"},
      {syn + "--dist --rank 0 --world-size 3 --master-addr 127.0.0.1 --master-port 1 --batch 1000 --out " + d + "/a",
       "--batch 1000 must split evenly over the 3 ranks"},
      {syn + "--dist --rank 2 --world-size 2 --master-addr 127.0.0.1 --master-port 5 --out " + d + "/a",
       "rank 2 is outside 0..1"},
      {syn + "--rank 1 --out " + d + "/a", "need --dist"},
  };
  for (const auto& c : cases) {
    auto r = interp::test::shell(c.cmd);
    EXPECT_NE(r.code, 0) << c.cmd;
    EXPECT_NE(r.out.find(c.message), std::string::npos) << c.cmd << "\n" << r.out;
    EXPECT_FALSE(fs::exists(d + "/a")) << c.cmd;
  }
}

namespace {

// `interp capture` of the tiny LM into `out`; with rank >= 0, as that rank of 2 (extra: more flags,
// env: environment assignments before the command).
std::string capture_cmd(const std::string& out, int rank, int port, const std::string& extra = "",
                        const std::string& env = "") {
  std::string cmd = env + " " + std::string(INTERP_BIN) + " capture --model " +
                    interp::test::fixture("tiny_lm_trace.pt") + " --data " + interp::test::fixture("brown") +
                    " --tokenizer " + interp::test::fixture("brown-1k.model") +
                    " --hooks blocks.0.hook_resid_post,blocks.1.hook_mlp_out --tokens 8192 --ctx 64 --batch 4 "
                    "--shard-contexts 12 --out " + out + " " + extra;
  if (rank >= 0)
    cmd += " --dist --rank " + std::to_string(rank) + " --world-size 2 --master-addr 127.0.0.1 --master-port " +
           std::to_string(port);
  return cmd;
}

// Both ranks at once; their exit codes and outputs.
std::vector<interp::test::ShellResult> two_captures(const std::string& out, const std::string& extra0 = "",
                                                    const std::string& extra1 = "", const std::string& env1 = "") {
  const int port = free_port();
  std::vector<interp::test::ShellResult> r(2);
  std::thread t1([&] { r[1] = interp::test::shell(capture_cmd(out, 1, port, extra1, env1)); });
  r[0] = interp::test::shell(capture_cmd(out, 0, port, extra0));
  t1.join();
  return r;
}

nlohmann::json manifest_shards(const std::string& dir) {
  std::ifstream in(dir + "/manifest.json");
  return nlohmann::json::parse(in).at("shards");
}

}  // namespace

// Two ranks capture disjoint shards into one folder; rank 0 merges: the store is byte for byte the
// one a single process writes (same shard files, sizes and checksums), and it opens, verifies and
// loads like any store.
TEST(Dist, ShardedCaptureEqualsOneProcess) {
  if (!interp::dist_available()) GTEST_SKIP() << "built without torch.distributed";
  const std::string d = ::testing::TempDir() + "interp-dist-capture-" + std::to_string(::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  auto one = interp::test::shell(capture_cmd(d + "/one", -1, 0));
  ASSERT_EQ(one.code, 0) << one.out;
  auto two = two_captures(d + "/two");
  ASSERT_EQ(two[0].code, 0) << two[0].out;
  ASSERT_EQ(two[1].code, 0) << two[1].out;
  EXPECT_EQ(manifest_shards(d + "/one"), manifest_shards(d + "/two"));
  std::printf("  %zu shards, identical names, sizes and xxh64 to one process\n", manifest_shards(d + "/one").size());
  for (const auto& e : fs::directory_iterator(d + "/two")) {
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
    EXPECT_EQ(e.path().filename().string().find("manifest.rank-"), std::string::npos) << e.path();
  }
  auto store = interp::ActivationStore::open(d + "/two");
  EXPECT_TRUE(store.complete());
  store.verify();
  interp::ActivationLoader loader(store, "blocks.0.hook_resid_post", {4096, 0});
  int64_t rows = 0;
  while (auto b = loader.next()) rows += b->acts.size(0);
  EXPECT_EQ(rows, 8192);
}

// A rank killed mid-capture (right after writing a shard, before recording it): rank 0 finishes
// its own shards, then reports the silent rank within the timeout; both restarted with --resume
// finish, and the store equals one process's.
TEST(Dist, ShardedCaptureSurvivesAKilledRank) {
  if (!interp::dist_available()) GTEST_SKIP() << "built without torch.distributed";
  const std::string d = ::testing::TempDir() + "interp-dist-capture-kill-" + std::to_string(::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  auto one = interp::test::shell(capture_cmd(d + "/one", -1, 0));
  ASSERT_EQ(one.code, 0) << one.out;
  const auto t0 = std::chrono::steady_clock::now();
  auto two = two_captures(d + "/two", "--dist-timeout 3", "--dist-timeout 3", "INTERP_FAULT=kill-after-shard:3");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(two[1].code == 128 + SIGKILL || two[1].code == -1) << "rank 1 should have been killed:\n" << two[1].out;
  EXPECT_EQ(two[0].code, 1) << two[0].out;
  EXPECT_NE(two[0].out.find("rank 1 of 2 has written nothing for"), std::string::npos) << two[0].out;
  EXPECT_FALSE(fs::exists(d + "/two/manifest.json"));
  std::printf("  rank 1 killed after shard 3; rank 0 gave up after %.1f s\n", s);
  // a plain open says what the folder is
  try {
    (void)interp::ActivationStore::open(d + "/two");
    ADD_FAILURE() << "opened an unfinished sharded capture";
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("an unfinished sharded capture"), std::string::npos) << e.what();
  }
  auto again = two_captures(d + "/two", "--resume", "--resume");
  ASSERT_EQ(again[0].code, 0) << again[0].out;
  ASSERT_EQ(again[1].code, 0) << again[1].out;
  EXPECT_NE(again[1].out.find("kept from before"), std::string::npos) << again[1].out;
  EXPECT_EQ(manifest_shards(d + "/one"), manifest_shards(d + "/two"));
  for (const auto& e : fs::directory_iterator(d + "/two"))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
  interp::ActivationStore::open(d + "/two").verify();
}
