// interp/sae_train.h: training sparse autoencoders on an activation source.
//
// The trainer consumes an ActivationSource, not a model (SAELens's DataProvider): synthetic data,
// an on-disk store and a live model all feed the same loop.
//
//   interp::SyntheticData data({/*n_features=*/256, /*d=*/128});
//   auto source = interp::synthetic_source(data);
//   interp::SAE sae(cfg);
//   interp::TrainOptions o; o.steps = 3000; o.batch = 1024;
//   interp::TrainResult r = interp::train_sae(sae, *source, o);
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "interp/sae.h"
#include "interp/data.h"
#include "interp/hooks.h"
#include "interp/store.h"

namespace interp {

class ProcessGroup;  // interp/dist.h

class ActivationSource {
 public:
  virtual ~ActivationSource() = default;
  virtual at::Tensor next(int64_t batch) = 0;  // [batch, d_in] float32 (sources cycle when exhausted)
  virtual int64_t d_in() const = 0;
  virtual std::string describe() const = 0;
};

std::unique_ptr<ActivationSource> synthetic_source(SyntheticData& data);
// Rows of one hook point of a store, shuffled (seeded), repeating epochs as needed.
std::unique_ptr<ActivationSource> store_source(const ActivationStore& store, const std::string& hook,
                                               uint64_t seed = 0, int64_t shuffle_buffer = 262144);

// Activations made by other tools, with no manifest: a .safetensors file holding one float tensor
// [rows, d_in] or [n, ctx, d_in] (`tensor_name` picks one of several), a .npy file (C order, <f4 /
// <f2 / <f8), or a folder of such files (sorted; all of one d_in). Streamed in chunks of
// `chunk_rows` rows read from disk, shuffled within windows of `shuffle_buffer` rows, chunk order
// seeded per epoch; epochs repeat. Memory: about shuffle_buffer + chunk_rows rows.
std::unique_ptr<ActivationSource> tensor_files_source(const std::string& path, const std::string& tensor_name = "",
                                                      uint64_t seed = 0, int64_t shuffle_buffer = 262144,
                                                      int64_t chunk_rows = 16384);

// Activations captured on the fly from a live model (no disk): runs `contexts_per_forward` contexts
// at a time through the model, keeps the hook's per-token rows, cycles the contexts as needed.
std::unique_ptr<ActivationSource> live_source(const HookedModel& model, const PackedContexts& contexts,
                                              const std::string& hook, int64_t contexts_per_forward = 16);

struct TrainProgress {  // aux: AuxK; extra: the architecture's own loss term (gated, matryoshka)
  int64_t step = 0, steps = 0;
  double mse = 0, sparsity = 0, aux = 0, extra = 0, l0 = 0, dead_fraction = 0, lr = 0, tokens_per_s = 0, eta_s = 0;
};

struct TrainOptions {
  int64_t steps = 10000;
  int64_t batch = 4096;
  double lr = 4e-4;
  int64_t lr_warmup_steps = 0;          // linear warm-up from 0
  double lr_decay_fraction = 0.2;       // linear decay to 0 over this last fraction of training
  int64_t l1_warmup_steps = 0;          // sparsity coefficient ramps up from 0
  std::string b_dec_init = "geometric_median";  // geometric_median, mean, zeros
  int64_t init_samples = 16384;         // rows used for b_dec and the normalisation scale
  bool normalize_activations = true;    // scale inputs to E|x| = sqrt(d_in) (folded back on save)
  int64_t dead_window = 2'000'000;      // tokens without firing after which a latent is dead
  // Every resample_every steps (0: never), dead latents are re-initialised (Bricken et al. 2023):
  // decoder row = a centred input drawn with probability proportional to its squared loss, encoder
  // column = that direction scaled to 0.2 x the mean alive encoder norm, b_enc = 0, Adam state reset.
  int64_t resample_every = 0;
  int64_t log_every = 100;
  // Checkpoints: every `checkpoint_every` steps (0: never) the whole training state (weights, Adam
  // moments, dead-latent counters, step) is written atomically to checkpoint_path. With resume,
  // training continues from that file bit-for-bit: the source is replayed to the same position.
  std::string checkpoint_path;
  int64_t checkpoint_every = 0;
  bool resume = false;
  std::function<void(const TrainProgress&)> progress;
  // Data-parallel training over a group of processes (interp/dist.h; null: this process alone).
  // `batch` is then the global batch, split evenly: every rank draws the same stream from its
  // source and trains on its own slice of each batch; gradients, the loss, the latents that fired
  // (and batchtopk's threshold) are all-reduced in one message per step, so every rank takes the
  // same step and holds the same SAE. Rank 0 alone writes checkpoints; all ranks resume from them.
  // Exact against one process with the same global batch up to the order of the reductions, for
  // architectures whose loss is a mean over rows; batchtopk selects within each rank's slice, and
  // AuxK's normaliser is each slice's residual variance.
  ProcessGroup* group = nullptr;

  // Throws interp::Error naming the first bad setting (a count below its minimum, a learning rate
  // that is not a positive number, an unknown b_dec_init, checkpoints without a path). train_sae
  // calls it first; call it yourself before creating outputs.
  void validate() const;
};

struct TrainResult {
  int64_t steps = 0;
  double seconds = 0, tokens_per_s = 0;
  double mse = 0, l0 = 0, dead_fraction = 0;  // at the end (last logged window)
  int64_t resumed_from = 0;                   // step the run continued from (0: a fresh start)
  int64_t resampled = 0;                      // dead latents re-initialised
  // with a process group: what this rank sent through all-reduce, and the time it waited in them
  uint64_t bytes_reduced = 0;
  double seconds_communicating = 0;
};

// One training run, step by step (train_sae runs it to the end). The state lives on the SAE's
// device; statistics are read back to the host only when logged. A non-finite loss throws
// interp::Error naming the step, before the optimiser moves: the SAE keeps the weights of the step
// before, and the last checkpoint stays as it was.
//
//   interp::Trainer t(sae, *source, o);
//   t.start();                          // fresh (scale, b_dec from a sample) or o.resume'd
//   while (!t.done()) t.step();
//   t.finish();                         // SAE ready to save (inference threshold written back)
class Trainer {
 public:
  Trainer(SAE& sae, ActivationSource& source, const TrainOptions& options);  // validates the options
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Resumes from options.checkpoint_path when options.resume and the file exists, else init().
  void start();
  void init();                      // fresh start: the normalisation scale and b_dec from a sample
  void step();                      // one optimiser step (then checkpoints, logs as the options say)
  bool done() const;                // all options.steps taken
  int64_t steps_done() const;
  // The whole training state (weights, Adam moments, dead-latent counters; tensors on the CPU) and
  // its scalars, as checkpoints hold them.
  std::map<std::string, at::Tensor> state() const;
  std::map<std::string, std::string> state_metadata() const;
  void save(const std::string& path) const;  // a checkpoint, written atomically
  // Restores a checkpoint of this SAE's shape and replays the source to where it was; returns its
  // step. Throws interp::Error for another SAE, a checkpoint past options.steps, a damaged file.
  int64_t load(const std::string& path);
  TrainResult finish();             // writes back what the SAE keeps (inference threshold)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Trainer(sae, source, options): start, step until done, finish. Honours interp::request_stop()
// (checkpoint, then interp::Error saying how to resume).
TrainResult train_sae(SAE& sae, ActivationSource& source, const TrainOptions& options);

// The geometric median of the rows of x (Weiszfeld's algorithm).
at::Tensor geometric_median(const at::Tensor& x, int iterations = 50);

}  // namespace interp
