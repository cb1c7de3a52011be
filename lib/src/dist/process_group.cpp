// interp::ProcessGroup on c10d: a TCPStore rendezvous and ProcessGroupGloo (ProcessGroupNCCL when
// built with INTERP_NCCL). Built without torch.distributed's headers (INTERP_HAVE_C10D unset),
// connect() says so.
#include "interp/dist.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "interp/error.h"

#ifdef INTERP_HAVE_C10D
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>
#ifdef INTERP_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#endif

namespace interp {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// An unset value from the environment; `flag` is the CLI's option for the same.
int env_int(const char* name, const char* flag) {
  const std::string v = env(name);
  if (v.empty())
    throw Error(fmt::format("--dist: {} is not set: launch with torchrun or srun, set it in the environment, or pass "
                            "{} (docs/distributed.md)",
                            name, flag));
  size_t used = 0;
  long long x = -1;
  try {
    x = std::stoll(v, &used);
  } catch (const std::logic_error&) {
    used = 0;
  }
  if (used != v.size() || x < 0 || x > std::numeric_limits<int>::max())
    throw Error(fmt::format("--dist: {}='{}' is not a non-negative integer", name, v));
  return static_cast<int>(x);
}

}  // namespace

DistOptions DistOptions::resolve() const {
  DistOptions d = *this;
  if (d.rank < 0) d.rank = env_int("RANK", "--rank");
  if (d.world_size < 0) d.world_size = env_int("WORLD_SIZE", "--world-size");
  if (d.master_addr.empty()) {
    d.master_addr = env("MASTER_ADDR");
    if (d.master_addr.empty()) (void)env_int("MASTER_ADDR", "--master-addr");  // its message
  }
  if (d.master_port < 0) d.master_port = env_int("MASTER_PORT", "--master-port");
  if (d.local_rank < 0) d.local_rank = env("LOCAL_RANK").empty() ? 0 : env_int("LOCAL_RANK", "LOCAL_RANK");
  d.validate();
  return d;
}

void DistOptions::validate() const {
  if (world_size < 1) throw Error(fmt::format("--dist: the world size must be at least 1 (got {})", world_size));
  if (rank < 0 || rank >= world_size)
    throw Error(fmt::format("--dist: rank {} is outside 0..{} (world size {})", rank, world_size - 1, world_size));
  if (master_port < 1 || master_port > 65535)
    throw Error(fmt::format("--dist: the rendezvous port must be in 1..65535 (got {})", master_port));
  if (master_addr.empty()) throw Error("--dist: no rendezvous address (MASTER_ADDR)");
  if (!(timeout_s > 0) || !std::isfinite(timeout_s))
    throw Error(fmt::format("--dist: the timeout must be a positive number of seconds (got {})", timeout_s));
  if (backend != "auto" && backend != "gloo" && backend != "nccl")
    throw Error(fmt::format("--dist: backend '{}' is not gloo, nccl or auto", backend));
}

#ifdef INTERP_HAVE_C10D

bool dist_available() { return true; }

namespace {

// LibTorch 2.x made the backends (ProcessGroupGloo, ProcessGroupNCCL) c10d::Backends; in 1.x they
// are c10d::ProcessGroups. Both have the collectives used here, with the same signatures.
#if TORCH_VERSION_MAJOR >= 2
using C10dBackend = c10d::Backend;
#else
using C10dBackend = c10d::ProcessGroup;
#endif

class C10dGroup final : public ProcessGroup {
 public:
  C10dGroup(const DistOptions& o, const std::string& device) : o_(o) {
    const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000));
    const bool cuda = device.rfind("cuda", 0) == 0;
    std::string backend = o.backend == "auto" ? (cuda && nccl_built() ? "nccl" : "gloo") : o.backend;
    if (backend == "nccl" && !nccl_built())
      throw Error("--dist: this build of interp has no NCCL (configure with -DINTERP_NCCL=ON against a CUDA LibTorch); "
                  "use --dist-backend gloo");
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(o.master_port);
    // Under torchrun the agent already serves the store on MASTER_PORT; workers join it under the
    // prefix of their restart attempt, as PyTorch's env:// rendezvous does.
    const bool agent_store = env("TORCHELASTIC_USE_AGENT_STORE") == "True";
    so.isServer = o.rank == 0 && !agent_store;
    so.numWorkers = static_cast<size_t>(o.world_size);
    so.waitWorkers = true;
    so.timeout = timeout;
    try {
      store_ = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
      if (agent_store) {
        const std::string attempt = env("TORCHELASTIC_RESTART_COUNT");
        store_ = c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + (attempt.empty() ? "0" : attempt), store_);
      }
    } catch (const std::exception& e) {
      throw Error(fmt::format("--dist: rank {} of {} could not meet the others at {}:{} within {} s ({}); {}", o.rank,
                              o.world_size, o.master_addr, o.master_port, o.timeout_s, first_line(e.what()),
                              o.rank == 0 ? "is the port free, and did every rank start?"
                                          : "is rank 0 running, and are MASTER_ADDR and MASTER_PORT those of rank 0?"));
    }
    try {
      if (backend == "gloo") {
        auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
        const std::string ifname = env("GLOO_SOCKET_IFNAME");
        if (!ifname.empty()) opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
        else if (o.master_addr == "127.0.0.1" || o.master_addr == "localhost")
          opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        else opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
        opts->threads = 2;
        pg_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, o.rank, o.world_size, opts);
      } else {
#ifdef INTERP_NCCL
        auto opts = c10d::ProcessGroupNCCL::Options::create();
        opts->timeout = timeout;
        pg_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(store_, o.rank, o.world_size, opts);
#endif
      }
    } catch (const std::exception& e) {  // the backend meets the other ranks again here
      throw Error(fmt::format("--dist: rank {} of {} could not meet the others at {}:{} within {} s ({}: {}); {}", o.rank,
                              o.world_size, o.master_addr, o.master_port, o.timeout_s, backend, first_line(e.what()),
                              "did every rank start, with the same WORLD_SIZE, MASTER_ADDR and MASTER_PORT?"));
    }
    backend_ = backend;
  }

  int rank() const override { return o_.rank; }
  int size() const override { return o_.world_size; }
  std::string backend() const override { return backend_; }

  void all_reduce(std::vector<at::Tensor>& tensors, Op op) override {
    c10d::AllreduceOptions ao;
    ao.reduceOp = op == Op::Sum ? c10d::ReduceOp::SUM : op == Op::Min ? c10d::ReduceOp::MIN : c10d::ReduceOp::MAX;
    for (at::Tensor& t : tensors) {  // one at a time: c10d's lists are one tensor per device
      bytes_reduced_ += static_cast<uint64_t>(t.numel() * t.element_size());
      each(t, [&](std::vector<at::Tensor>& one) { run("all_reduce", [&] { return pg_->allreduce(one, ao); }); });
    }
  }
  void broadcast(std::vector<at::Tensor>& tensors, int root) override {
    c10d::BroadcastOptions bo;
    bo.rootRank = root;
    for (at::Tensor& t : tensors)
      each(t, [&](std::vector<at::Tensor>& one) { run("broadcast", [&] { return pg_->broadcast(one, bo); }); });
  }
  void barrier() override {
    run("barrier", [&] { return pg_->barrier(); });
  }

 private:
  static bool nccl_built() {
#ifdef INTERP_NCCL
    return true;
#else
    return false;
#endif
  }
  static std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

  // Runs f on t alone, through a contiguous copy written back when t is not contiguous.
  template <class F>
  static void each(at::Tensor& t, F&& f) {
    std::vector<at::Tensor> one = {t.is_contiguous() ? t : t.contiguous()};
    f(one);
    if (!one[0].is_same(t)) t.copy_(one[0]);
  }

  template <class F>
  void run(const char* what, F&& start) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      auto work = start();
      work->wait();
    } catch (const std::exception& e) {
      throw Error(fmt::format("--dist: rank {} of {}: {} failed ({}); another rank has probably stopped or died. Stop "
                              "every rank, then start them all again (with --resume to continue from the last "
                              "checkpoint)",
                              o_.rank, o_.world_size, what, first_line(e.what())));
    }
    seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  DistOptions o_;
  std::string backend_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<C10dBackend> pg_;
};

}  // namespace

std::unique_ptr<ProcessGroup> ProcessGroup::connect(const DistOptions& options, const std::string& device) {
  options.validate();
  return std::make_unique<C10dGroup>(options, device);
}

#else  // no c10d headers in this build

bool dist_available() { return false; }

std::unique_ptr<ProcessGroup> ProcessGroup::connect(const DistOptions& options, const std::string&) {
  options.validate();
  throw Error("--dist: this build of interp has no torch.distributed (the c10d and Gloo headers were not found when it "
              "was configured: install libgloo-dev, then reconfigure)");
}

#endif

}  // namespace interp
