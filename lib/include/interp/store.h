// interp/store.h: a sharded, resumable on-disk store of activations, and a shuffling reader.
//
// capture() runs the model over packed contexts and writes the requested hook points to shards
// (safetensors, one tensor per hook point, plus the token ids) and a JSON manifest; the format is
// in docs/store.md. Each shard is written under a temporary name and renamed when complete; the
// manifest is replaced atomically after each shard; a killed capture resumes (options.resume)
// losing at most the shard in flight. Batches are copied (and converted to the stored dtype) into
// reused shard buffers; a writer thread writes finished shards while the next forward runs; at
// most `queue` finished shards wait for it, so memory stays bounded (queue + 1 shard buffers).
//
//   interp::CaptureOptions o;
//   o.hooks = {"blocks.2.hook_resid_post"}; o.n_tokens = 1'000'000;
//   interp::capture(model, contexts, "store/", o);
//   auto store = interp::ActivationStore::open("store/");
//   interp::ActivationLoader loader(store, "blocks.2.hook_resid_post", {/*batch_size=*/4096});
//   while (auto b = loader.next()) train_step(b->acts);            // [<=4096, d_model] float32
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "interp/data.h"
#include "interp/safetensors.h"

namespace interp {

class HookedModel;
class ProcessGroup;  // interp/dist.h

struct CaptureProgress {
  int64_t tokens_done = 0, tokens_total = 0;  // this run's, resumed tokens included in done
  int64_t shards_written = 0;
  double tokens_per_s = 0, eta_s = 0;
};

struct CaptureOptions {
  std::vector<std::string> hooks;    // names or aliases; stored under their primary names
  int64_t n_tokens = 0;              // rounded up to whole contexts
  int64_t batch = 32;                // contexts per forward
  int64_t contexts_per_shard = 0;    // 0: about 64 MiB of activations per shard (a multiple of batch)
  std::string dtype = "f32";         // stored dtype: f32, f16, bf16
  bool resume = false;               // continue an interrupted capture in the same folder
  int queue = 2;                     // finished shards that may wait for the writer
  // What the store is made from, recorded in the manifest (the capture's identity).
  std::string tokenizer_path, tokenizer_hash, corpus, corpus_hash;
  PackOptions pack;
  std::function<void(const CaptureProgress&)> progress;  // after every batch (this rank's tokens)
  // Sharded capture (interp/dist.h; null: this process alone). Rank r of W captures shards i with
  // i % W == r into the same folder (a shared filesystem), recording them in its own
  // manifest.rank-R-of-W.json; rank 0, when its shards are done, waits for the others' manifests
  // to say complete and merges them into manifest.json. The store is the one a single process
  // would write: the same shard boundaries, files and checksums. A rank whose manifest stops
  // changing for `stall_timeout_s` while rank 0 waits is reported as dead; --resume continues.
  ProcessGroup* group = nullptr;
  double stall_timeout_s = 300;
};

struct CaptureResult {
  int64_t tokens = 0, shards = 0;
  int64_t resumed_shards = 0;  // shards found complete and kept
  double seconds = 0;          // this run
  double forward_seconds = 0;  // of which in forward passes
  double wait_seconds = 0;     // and waiting for the writer (disk slower than the model)
  double writer_cpu_seconds = 0;  // CPU time the writer thread used (on another core)
  double merge_wait_seconds = 0;  // sharded: rank 0 waiting for the other ranks before merging
};

CaptureResult capture(const HookedModel& model, const PackedContexts& data, const std::string& dir,
                      const CaptureOptions& options);

struct StoreHook {
  std::string name;
  std::vector<int64_t> shape;  // per context, e.g. [ctx, d_model] or [n_heads, ctx, ctx]
  bool per_token = false;      // shape[0] is the position: its rows are tokens
};

struct StoreShard {
  std::string file;
  int64_t first_context = 0, contexts = 0, bytes = 0;
  std::string xxh64;
};

class ActivationStore {
 public:
  // Reads and validates DIR/manifest.json; checks every shard file exists with its recorded size.
  static ActivationStore open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const std::vector<StoreHook>& hooks() const { return hooks_; }
  const StoreHook& hook(const std::string& name) const;  // throws with the names available
  const std::vector<StoreShard>& shards() const { return shards_; }
  int64_t ctx() const { return ctx_; }
  int64_t n_contexts() const;
  int64_t n_tokens() const { return n_contexts() * ctx_; }
  const std::string& dtype() const { return dtype_; }
  const std::string& tokenizer_path() const { return tokenizer_; }  // as given to the capture ("" if none)
  // Tagged corpora: shards hold "tags" [contexts, ctx] (int16 indices into these, -1 for none).
  const std::vector<std::string>& tag_names() const { return tag_names_; }
  bool complete() const { return complete_; }
  const std::string& manifest_text() const { return manifest_text_; }

  // One shard's tensors ("tokens", one per hook, ...). verify: check the checksum first.
  SafetensorsFile read_shard(int64_t i, bool verify = true) const;
  // A per-token hook's rows in shard i: [contexts * ctx, d...] in the stored dtype.
  at::Tensor shard_rows(int64_t i, const std::string& hook, bool verify = true) const;
  // Checks every shard's size and checksum; throws interp::Error naming the first bad shard.
  void verify(const std::function<void(int64_t done, int64_t total)>& progress = nullptr) const;

 private:
  std::string dir_, dtype_, manifest_text_, tokenizer_;
  int64_t ctx_ = 0;
  bool complete_ = false;
  std::vector<StoreHook> hooks_;
  std::vector<StoreShard> shards_;
  std::vector<std::string> tag_names_;
};

struct LoaderOptions {
  int64_t batch_size = 4096;        // rows per batch (the last batch of an epoch may be smaller)
  int64_t shuffle_buffer = 262144;  // rows mixed across shards; 0: no shuffling (store order)
  uint64_t seed = 0;
  int epochs = 1;
  bool verify = true;               // check each shard's checksum as it is read
};

// Streams a per-token hook's rows as float32 batches. With a shuffle buffer, shards are visited in
// a seeded random order each epoch and rows mixed across them; every row appears exactly once per
// epoch; the same seed gives the same batches.
class ActivationLoader {
 public:
  ActivationLoader(const ActivationStore& store, const std::string& hook, const LoaderOptions& options = {});
  ~ActivationLoader();
  struct Batch {
    at::Tensor acts;   // [n, d...] float32
    at::Tensor index;  // [n] int64: row = first_context * ctx + position, i.e. the token's place in the store
    int epoch = 0;
  };
  std::optional<Batch> next();
  int64_t rows_per_epoch() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace interp
