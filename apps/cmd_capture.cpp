// interp capture: run a model over a corpus and write activations to a sharded store (docs/store.md);
// interp store info|verify: inspect and check a store.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "common.h"
#include "interp/data.h"
#include "interp/error.h"
#include "interp/store.h"
#include "interp/tokenizer.h"

namespace interp::app {
namespace {

std::string duration(double s) {
  if (s < 0 || s > 1e7) return "?";
  int t = static_cast<int>(s + 0.5);
  return t >= 3600 ? fmt::format("{}h{:02d}m", t / 3600, t / 60 % 60) : fmt::format("{}m{:02d}s", t / 60, t % 60);
}

// One `\r` progress line on a terminal; a line per ~10% otherwise (logs, CI).
class Progress {
 public:
  void operator()(const CaptureProgress& p) {
    auto now = std::chrono::steady_clock::now();
    double pct = p.tokens_total ? 100.0 * static_cast<double>(p.tokens_done) / static_cast<double>(p.tokens_total) : 100;
    bool last = p.tokens_done >= p.tokens_total;
    std::string line = fmt::format("capture: {:>5.1f}%  {} / {} tokens  {:.0f} tokens/s  ETA {}  {} shards written", pct,
                                   p.tokens_done, p.tokens_total, p.tokens_per_s, duration(p.eta_s), p.shards_written);
    if (tty_) {
      if (last || now - shown_ > std::chrono::milliseconds(250)) {
        fmt::print(stderr, "\r{}{}", line, last ? "\n" : "");
        shown_ = now;
      }
    } else if (last || pct >= next_pct_) {
      fmt::print(stderr, "{}\n", line);
      next_pct_ = pct + 10;
    }
  }

 private:
  bool tty_ = isatty(2);
  double next_pct_ = 0;
  std::chrono::steady_clock::time_point shown_{};
};

}  // namespace

void register_capture(CLI::App& app) {
  auto* cmd = app.add_subcommand("capture", "Capture activations over a corpus into a sharded, resumable store");
  struct Args {
    ModelArgs model;
    CorpusArgs corpus;
    std::string hooks, out, dtype = "f32";
    int64_t tokens = 0, ctx = 128, batch = 32, shard_contexts = 0;
    uint64_t seed = 0;
    bool resume = false, no_shuffle = false, no_bos = false;
    DistArgs dist;
  };
  auto a = std::make_shared<Args>();
  a->model.add_to(*cmd, "--model");
  a->corpus.add_to(*cmd);
  cmd->add_option("--hooks", a->hooks, "comma-separated hook names to capture")->required();
  cmd->add_option("--tokens", a->tokens, "how many tokens to capture (rounded up to whole contexts)")->check(positive())->required();
  cmd->add_option("--ctx", a->ctx, "tokens per context, BOS included")->check(positive())->capture_default_str();
  cmd->add_option("--batch", a->batch, "contexts per forward pass")->check(positive())->capture_default_str();
  cmd->add_option("--dtype", a->dtype, "stored dtype: f32, f16, bf16")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}))
      ->capture_default_str();
  cmd->add_option("--shard-contexts", a->shard_contexts, "contexts per shard (0: about 64 MiB per shard)")->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "seed of the context order")->check(non_negative())->capture_default_str();
  cmd->add_flag("--no-shuffle", a->no_shuffle, "keep the corpus order");
  cmd->add_flag("--no-bos", a->no_bos, "do not start each context with BOS");
  cmd->add_option("--out", a->out, "store folder (new, or this capture's folder with --resume)")->required();
  cmd->add_flag("--resume", a->resume, "continue an interrupted capture in --out");
  a->dist.add_to(*cmd);
  cmd->callback([a] {
    allow_graceful_stop();  // Ctrl-C / SIGTERM: stop at the next shard or step, resumable
    const std::optional<DistOptions> dist = a->dist.options();  // checked before any work
    if (dist && a->model.device == "cuda") a->model.device = fmt::format("cuda:{}", dist->local_rank);  // one GPU a rank
    HookedModel model = a->model.load();
    TokenizedCorpus tc = a->corpus.load();
    if (tc.vocab_size > model.info().d_vocab)
      throw Error(fmt::format("the tokenizer's vocabulary ({}) is larger than the model's ({}); they do not belong "
                              "together",
                              tc.vocab_size, model.info().d_vocab));
    CaptureOptions o;
    o.hooks = split_list(a->hooks);
    o.n_tokens = a->tokens;
    o.batch = a->batch;
    o.contexts_per_shard = a->shard_contexts;
    o.dtype = a->dtype;
    o.resume = a->resume;
    o.tokenizer_path = a->corpus.tokenizer;
    o.tokenizer_hash = tc.tokenizer_hash;
    o.corpus = tc.source;
    o.corpus_hash = tc.corpus_hash;
    o.pack.ctx = a->ctx;
    o.pack.bos = !a->no_bos;
    o.pack.shuffle = !a->no_shuffle;
    o.pack.seed = a->seed;
    PackedContexts contexts(tc, o.pack);
    // With --dist: every rank packs the same contexts and captures its share of the shards into
    // --out (shared by all ranks); rank 0 merges the manifests at the end.
    std::unique_ptr<ProcessGroup> group;
    if (dist) {
      group = ProcessGroup::connect(*dist, a->model.device);
      o.group = group.get();
      o.stall_timeout_s = dist->timeout_s;
    }
    fmt::print("capture\n  model      {} ({} layers, d_model {}, device {})\n  data       {}: {} tokens -> {} contexts "
               "of {}\n  hooks      {}\n  tokens     {} in batches of {} contexts, stored as {}\n  out        {}{}\n",
               a->model.model, model.info().n_layers,
               model.info().d_model > 0 ? std::to_string(model.info().d_model) : std::string("unknown"),
               a->model.device, tc.source, tc.tokens.size(),
               contexts.size(), a->ctx, fmt::join(o.hooks, ", "), a->tokens, a->batch, a->dtype, a->out,
               a->resume ? " (resume)" : "");
    if (group)
      fmt::print("  dist       rank {} of {}: shards i with i % {} == {}{}\n", group->rank(), group->size(), group->size(),
                 group->rank(), group->rank() == 0 ? "; merges the manifests at the end" : "");
    std::fflush(stdout);  // before the progress lines on stderr
    o.progress = Progress();
    CaptureResult r = capture(model, contexts, a->out, o);
    if (group && group->rank() != 0)
      fmt::print("rank {}: wrote {} tokens in {} shards to {} ({} kept from before) in {:.1f} s; rank 0 merges the "
                 "manifest\n",
                 group->rank(), r.tokens, r.shards - r.resumed_shards, a->out, r.resumed_shards, r.seconds);
    else
      fmt::print("wrote {} tokens in {} shards to {} ({} shards kept from before) in {:.1f} s{}\n", r.tokens, r.shards,
                 a->out, r.resumed_shards, r.seconds,
                 group ? fmt::format(", {:.1f} s of it waiting for the other ranks", r.merge_wait_seconds) : "");
  });
}

void register_store(CLI::App& app) {
  auto* cmd = app.add_subcommand("store", "Inspect or verify an activation store");
  cmd->require_subcommand(1);
  auto dir = std::make_shared<std::string>();
  auto* info = cmd->add_subcommand("info", "Print a store's manifest summary");
  info->add_option("dir", *dir, "store folder")->required();
  info->callback([dir] {
    auto s = ActivationStore::open(*dir);
    fmt::print("{}: {} tokens ({} contexts of {}) in {} shards, {}, {}\n", *dir, s.n_tokens(), s.n_contexts(), s.ctx(),
               s.shards().size(), s.dtype(), s.complete() ? "complete" : "INCOMPLETE (resume the capture)");
    for (const auto& h : s.hooks()) fmt::print("  {} [{}]\n", h.name, fmt::join(h.shape, ", "));
  });
  auto* verify = cmd->add_subcommand("verify", "Check every shard's size and checksum");
  verify->add_option("dir", *dir, "store folder")->required();
  verify->callback([dir] {
    auto s = ActivationStore::open(*dir);
    const bool tty = isatty(2);
    s.verify([tty](int64_t done, int64_t total) {
      if (tty) fmt::print(stderr, "\rverify: {}/{} shards{}", done, total, done == total ? "\n" : "");
    });
    fmt::print("{}: all {} shards intact{}\n", *dir, s.shards().size(), s.complete() ? "" : " (capture incomplete)");
  });
}

}  // namespace interp::app
