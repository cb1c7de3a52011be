// interp/dist.h: a group of processes working together, on PyTorch's torch.distributed engine (c10d:
// a TCPStore rendezvous, then ProcessGroupGloo on CPUs or ProcessGroupNCCL on GPUs).
//
// Processes find each other the way torchrun and SLURM launch PyTorch jobs: RANK, WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT (LOCAL_RANK picks the GPU), or the same given as options.
//
//   interp::DistOptions d = interp::DistOptions::from_env();  // throws naming what is missing
//   auto group = interp::ProcessGroup::connect(d);              // waits for all ranks (d.timeout_s)
//   std::vector<at::Tensor> t = {grads};
//   group->all_reduce(t);                                       // sum over ranks, in place
//
// Every collective is bounded by timeout_s: a rank that died makes the others throw an interp::Error
// naming the operation and the timeout, not hang.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace interp {

struct DistOptions {
  // -1 / empty: unset, taken from the environment by resolve()
  int rank = -1, world_size = -1;
  int local_rank = -1;                  // which GPU of this machine (LOCAL_RANK; default 0)
  std::string master_addr;
  int master_port = -1;
  std::string backend = "auto";         // gloo, nccl, auto (nccl for CUDA when built with it)
  double timeout_s = 300;               // rendezvous and every collective

  // Fills what is unset from RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK, then checks
  // it all: a missing or malformed one is an interp::Error naming the variable (and its flag).
  DistOptions resolve() const;
  static DistOptions from_env() { return DistOptions{}.resolve(); }
  void validate() const;
};

// Whether this build has torch.distributed (Gloo); without it connect() throws saying so.
bool dist_available();

class ProcessGroup {
 public:
  enum class Op { Sum, Min, Max };
  virtual ~ProcessGroup() = default;
  // Rendezvous: rank 0 serves the TCPStore at master_addr:master_port, all ranks join it.
  static std::unique_ptr<ProcessGroup> connect(const DistOptions& options, const std::string& device = "cpu");

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;
  // In place, on every rank. Tensors must be contiguous, of the same shapes and dtypes on every rank.
  virtual void all_reduce(std::vector<at::Tensor>& tensors, Op op = Op::Sum) = 0;
  virtual void broadcast(std::vector<at::Tensor>& tensors, int root = 0) = 0;
  virtual void barrier() = 0;
  uint64_t bytes_reduced() const { return bytes_reduced_; }  // by all_reduce, this rank, so far
  double seconds_communicating() const { return seconds_; }  // waiting in collectives, this rank

 protected:
  uint64_t bytes_reduced_ = 0;
  double seconds_ = 0;
};

}  // namespace interp
