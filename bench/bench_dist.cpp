// Data-parallel SAE training: one process on the whole batch against 2 ranks (processes, Gloo over
// loopback) on half of it each, on the same machine, paired rounds, median ratio. Each rank also
// reports the bytes it all-reduced per step and the time it waited in the exchanges; the projection
// to more machines is written out from those.
//
//   build/bench/bench_dist [--d-in 256] [--d-sae 4096] [--k 32] [--batch 4096] [--steps 20] [--rounds 5]
//                          [--threads 2]
// (--threads: the single process's intra-op threads; each rank gets threads / 2, at least 1.)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_util.h"
#include "interp/dist.h"
#include "interp/sae.h"
#include "interp/sae_train.h"

namespace {

struct Shape {
  int64_t d_in = 256, d_sae = 4096, k = 32, batch = 4096, steps = 20;
};

struct Timing {
  double seconds = 0, comm = 0;
  uint64_t bytes = 0;
};

// `steps` training steps (plus the initialisation, not timed) on synthetic data; group null: alone.
Timing train(const Shape& s, interp::ProcessGroup* group) {
  interp::SyntheticConfig sc;
  sc.n_features = 2 * s.d_in;
  sc.d = s.d_in;
  interp::SyntheticData data(sc);
  auto source = interp::synthetic_source(data);
  interp::SAEConfig c;
  c.architecture = "topk";
  c.d_in = s.d_in;
  c.d_sae = s.d_sae;
  c.k = s.k;
  interp::SAE sae(c);
  interp::TrainOptions o;
  o.steps = s.steps + 1;
  o.batch = s.batch;
  o.log_every = 0;
  o.init_samples = s.batch;
  o.b_dec_init = "mean";
  o.group = group;
  interp::Trainer t(sae, *source, o);
  t.start();
  t.step();  // warm-up: first-touch of buffers
  const double comm0 = group ? group->seconds_communicating() : 0;
  const uint64_t bytes0 = group ? group->bytes_reduced() : 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (!t.done()) t.step();
  Timing r;
  r.seconds = interp::bench::seconds_since(t0);
  if (group) {
    r.comm = group->seconds_communicating() - comm0;
    r.bytes = group->bytes_reduced() - bytes0;
  }
  return r;
}

int free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t n = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &n);
  const int port = ntohs(a.sin_port);
  ::close(s);
  return port;
}

}  // namespace

int main(int argc, char** argv) {
  Shape s;
  int64_t rounds = 5, threads = 2, rank = -1, port = 0;
  std::string args;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int64_t v = std::atoll(argv[i + 1]);
    if (a == "--d-in") s.d_in = v;
    else if (a == "--d-sae") s.d_sae = v;
    else if (a == "--k") s.k = v;
    else if (a == "--batch") s.batch = v;
    else if (a == "--steps") s.steps = v;
    else if (a == "--rounds") rounds = v;
    else if (a == "--threads") threads = v;
    else if (a == "--rank") rank = v;  // internal: run as one rank
    else if (a == "--port") port = v;
    else {
      fmt::print(stderr, "usage: bench_dist [--d-in 256] [--d-sae 4096] [--k 32] [--batch 4096] [--steps 20] "
                         "[--rounds 5] [--threads 2]\n");
      return 2;
    }
    if (a != "--rank" && a != "--port") args += fmt::format(" {} {}", a, v);
  }
  if (rank >= 0) {  // one rank of the pair: prints its timing
    at::set_num_threads(static_cast<int>(std::max<int64_t>(1, threads / 2)));
    interp::DistOptions d;
    d.rank = static_cast<int>(rank);
    d.world_size = 2;
    d.local_rank = 0;
    d.master_addr = "127.0.0.1";
    d.master_port = static_cast<int>(port);
    d.timeout_s = 120;
    auto g = interp::ProcessGroup::connect(d);
    Timing t = train(s, g.get());
    std::printf("%.9f %.9f %llu\n", t.seconds, t.comm, static_cast<unsigned long long>(t.bytes));
    return 0;
  }
  if (!interp::dist_available()) {
    fmt::print(stderr, "bench_dist: this build has no torch.distributed\n");
    return 2;
  }
  fmt::print("SAE training step (topk d_in {} d_sae {} k {}), global batch {}, {} steps per round, {} paired rounds\n"
             "  alone: 1 process, {} intra-op threads; 2 ranks: 2 processes (Gloo, loopback), {} thread(s) each\n",
             s.d_in, s.d_sae, s.k, s.batch, s.steps, rounds, threads, std::max<int64_t>(1, threads / 2));
  at::set_num_threads(static_cast<int>(threads));
  std::vector<double> alone, pair, comm, ratio;
  uint64_t bytes = 0;
  for (int64_t r = 0; r < rounds; ++r) {
    Timing a = train(s, nullptr);
    const int p = free_port();
    std::vector<FILE*> procs;
    for (int k = 0; k < 2; ++k)
      procs.push_back(popen(fmt::format("'{}' {} --rank {} --port {}", argv[0], args, k, p).c_str(), "r"));
    double worst = 0, wait = 0;
    for (FILE* f : procs) {
      double sec = 0, c = 0;
      unsigned long long b = 0;
      if (!f || std::fscanf(f, "%lf %lf %llu", &sec, &c, &b) != 3) {
        fmt::print(stderr, "bench_dist: a rank failed\n");
        return 1;
      }
      pclose(f);
      worst = std::max(worst, sec);
      wait = std::max(wait, c);
      bytes = b;
    }
    alone.push_back(a.seconds / static_cast<double>(s.steps));
    pair.push_back(worst / static_cast<double>(s.steps));
    comm.push_back(wait / static_cast<double>(s.steps));
    ratio.push_back(a.seconds / worst);
    fmt::print("  round {}: alone {:.1f} ms/step, 2 ranks {:.1f} ms/step (waiting {:.1f} ms), ratio {:.2f}\n", r + 1,
               1e3 * alone.back(), 1e3 * pair.back(), 1e3 * comm.back(), ratio.back());
  }
  using interp::bench::median;
  const double per_step_bytes = static_cast<double>(bytes) / static_cast<double>(s.steps);
  const double t1 = median(alone), t2 = median(pair), c2 = median(comm);
  fmt::print("median: alone {:.1f} ms/step, 2 ranks {:.1f} ms/step, speed ratio {:.2f}x (same {} cores)\n", 1e3 * t1,
             1e3 * t2, median(ratio), threads);
  fmt::print("per step, per rank: {:.2f} MB all-reduced (gradients {:.0f} floats + loss + fired latents + stop flag); "
             "{:.1f} ms waiting in exchanges ({:.0f}% of the step)\n",
             per_step_bytes / 1e6, per_step_bytes / 4 - static_cast<double>(s.d_sae) - 2, 1e3 * c2, 100 * c2 / t2);
  // Projection: W machines, each as fast as this one alone (t1 for the whole batch), ring
  // all-reduce moving 2 (W-1)/W x the message per rank per step at bandwidth BW.
  fmt::print("projection, W ranks each as fast as this machine alone, ring all-reduce at 10 Gbit/s (1.25 GB/s):\n");
  for (int w : {2, 4, 8, 16}) {
    const double compute = t1 / w, transfer = 2.0 * (w - 1) / w * per_step_bytes / 1.25e9;
    fmt::print("  W={:2d}: compute {:.1f} ms + all-reduce {:.1f} ms = {:.1f} ms/step, {:.1f}x one machine\n", w,
               1e3 * compute, 1e3 * transfer, 1e3 * (compute + transfer), t1 / (compute + transfer));
  }
  return 0;
}
