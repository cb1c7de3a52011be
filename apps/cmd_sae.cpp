// interp train-sae: train a sparse autoencoder on synthetic ground truth or an activation store,
// and save it in the SAELens layout.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <cstdio>

#include "common.h"
#include "interp/error.h"
#include "interp/data.h"
#include "interp/sae.h"
#include "interp/sae_eval.h"
#include "interp/tokenizer.h"
#include "io/atomic_file.h"
#include "interp/sae_train.h"
#include "interp/store.h"

namespace interp::app {

void register_sae(CLI::App& app) {
  auto* cmd = app.add_subcommand("train-sae", "Train a sparse autoencoder (synthetic ground truth or a store)");
  struct Args {
    bool synthetic = false;
    std::string activations, hook, out, arch = "topk", frequencies = "uniform", model, data, tokenizer;
    std::string name_map, output, device = "cpu", format = "saelens";
    int64_t ctx = 128;
    int64_t features = 512, d = 256, d_sae = 2048, k = 32, steps = 5000, batch = 4096, warmup = 0, l1_warmup = 0,
            checkpoint_every = 1000, resample_every = 0;
    bool resume = false;
    double lr = 4e-4, l1 = 1.0, mean_active = 5;
    uint64_t seed = 0;
    std::vector<int64_t> prefixes;
    DistArgs dist;
  };
  auto a = std::make_shared<Args>();
  auto* syn = cmd->add_flag("--synthetic", a->synthetic, "train on synthetic superposition with known features");
  auto* act = cmd->add_option("--activations", a->activations,
                              "activation store folder (interp capture), or activations from other tools: a "
                              ".safetensors or .npy file of [rows, d_in] (or [n, ctx, d_in]), or a folder of them");
  auto* live = cmd->add_option("--model", a->model, "train on a live model's activations at --hook (no disk)");
  syn->excludes(act);
  syn->excludes(live);
  act->excludes(live);
  cmd->add_option("--data", a->data, "with --model: corpus (Brown folder, text, or token file)");
  cmd->add_option("--tokenizer", a->tokenizer, "with --model: sentencepiece .model for text corpora");
  cmd->add_option("--ctx", a->ctx, "with --model: tokens per context")->check(positive())->capture_default_str();
  cmd->add_option("--hook", a->hook, "hook point in the store (default: its only one); for a .safetensors file of "
                  "several tensors, the tensor's name; written into the SAE's cfg.json");
  cmd->add_option("--name-map", a->name_map, "with --model: module names -> TransformerLens names (docs/hooks.md)");
  cmd->add_option("--output", a->output, "with --model: which of forward's outputs are the logits");
  cmd->add_option("--device", a->device, "with --model: the model's device (cpu, cuda, cuda:N)")->capture_default_str();
  cmd->add_option("--features", a->features, "synthetic: number of true features")->check(positive())->capture_default_str();
  cmd->add_option("--d", a->d, "synthetic: dimension")->check(positive())->capture_default_str();
  cmd->add_option("--frequencies", a->frequencies, "synthetic: uniform or geometric (0.99^i)")->capture_default_str();
  cmd->add_option("--mean-active", a->mean_active, "synthetic: features active per sample")->check(positive())->capture_default_str();
  cmd->add_option("--arch", a->arch, fmt::format("{}", fmt::join(sae_architectures(), ", ")))->capture_default_str();
  cmd->add_option("--d-sae", a->d_sae, "latents")->check(positive())->capture_default_str();
  cmd->add_option("--k", a->k, "topk/batchtopk/matryoshka: active latents per row")->check(positive())->capture_default_str();
  cmd->add_option("--prefixes", a->prefixes, "matryoshka: increasing prefix sizes ending at --d-sae, e.g. 128,512,2048 "
                  "(default: d_sae/16, /8, /4, /2, d_sae)")->delimiter(',');
  cmd->add_option("--l1", a->l1, "standard/gated: L1 coefficient; jumprelu: L0 coefficient")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--steps", a->steps, "training steps")->check(positive())->capture_default_str();
  cmd->add_option("--batch", a->batch, "rows per step")->check(positive())->capture_default_str();
  cmd->add_option("--lr", a->lr, "Adam learning rate")->check(positive())->capture_default_str();
  cmd->add_option("--lr-warmup", a->warmup, "learning-rate warm-up steps")->check(non_negative())->capture_default_str();
  cmd->add_option("--l1-warmup", a->l1_warmup, "sparsity-coefficient warm-up steps")->check(non_negative())->capture_default_str();
  cmd->add_option("--seed", a->seed, "seed (init and synthetic data)")->check(non_negative())->capture_default_str();
  cmd->add_option("--checkpoint-every", a->checkpoint_every, "steps between checkpoints (OUT/checkpoint.safetensors; 0: none)")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_flag("--resume", a->resume, "continue from OUT/checkpoint.safetensors, bit-for-bit");
  cmd->add_option("--resample-every", a->resample_every, "steps between resampling dead latents (0: never; AuxK "
                  "revives TopK latents anyway)")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--out", a->out, "output folder (SAELens layout: cfg.json, sae_weights.safetensors)")->required();
  cmd->add_option("--format", a->format, "saelens (cfg.json + sae_weights.safetensors) or sparsify (cfg.json + "
                  "sae.safetensors; TopK only)")
      ->check(CLI::IsMember({"saelens", "sparsify"}))
      ->capture_default_str();
  a->dist.add_to(*cmd);
  cmd->callback([a] {
    allow_graceful_stop();  // Ctrl-C / SIGTERM: stop at the next shard or step, resumable
    const std::optional<DistOptions> dist = a->dist.options();  // checked before any work
    if (dist && a->batch % dist->world_size != 0)
      throw Error(fmt::format("--batch {} must split evenly over the {} ranks (--batch is the global batch)", a->batch,
                              dist->world_size));
    if (dist && a->device == "cuda") a->device = fmt::format("cuda:{}", dist->local_rank);  // one GPU a rank
    if (a->format == "sparsify" && a->arch != "topk")  // before training, not after
      throw Error(fmt::format("--format sparsify holds TopK SAEs; --arch is {} (use --format saelens)", a->arch));
    if (!a->synthetic && a->activations.empty() && a->model.empty())
      throw Error("train-sae needs a source: --synthetic, --activations STORE, or --model M --hook H --data D");
    std::optional<SyntheticData> data;
    std::optional<ActivationStore> store;
    std::optional<HookedModel> model;
    std::optional<PackedContexts> contexts;
    std::unique_ptr<ActivationSource> source;
    SAEConfig cfg;
    cfg.architecture = a->arch;
    cfg.d_sae = a->d_sae;
    cfg.k = a->k;
    cfg.l1_coefficient = a->l1;
    cfg.matryoshka_prefixes = a->prefixes;
    cfg.seed = a->seed;
    if (a->synthetic || !a->activations.empty() || !a->model.empty()) {  // the settings, before any work
      SAEConfig check = cfg;
      check.d_in = 1;
      check.validate();
    }
    TrainOptions o;
    o.steps = a->steps;
    o.batch = a->batch;
    o.lr = a->lr;
    o.lr_warmup_steps = a->warmup;
    o.l1_warmup_steps = a->l1_warmup;
    o.log_every = std::max<int64_t>(1, a->steps / 50);
    o.checkpoint_path = (std::filesystem::path(a->out) / "checkpoint.safetensors").string();
    o.checkpoint_every = a->checkpoint_every;
    o.resume = a->resume;
    o.resample_every = a->resample_every;
    o.validate();
    if (!a->resume && std::filesystem::exists(o.checkpoint_path))
      throw Error(fmt::format("{} holds a checkpoint of an earlier run; pass --resume to continue it, or choose another "
                              "--out",
                              a->out));
    if (a->synthetic) {
      SyntheticConfig sc;
      sc.n_features = a->features;
      sc.d = a->d;
      sc.frequencies = a->frequencies;
      sc.mean_active = a->mean_active;
      sc.seed = a->seed + 1;
      data.emplace(sc);
      source = synthetic_source(*data);
    } else if (!a->model.empty()) {
      if (a->hook.empty() || a->data.empty()) throw Error("--model needs --hook and --data");
      model.emplace(load_model(a->model, a->device, a->name_map, false, a->output));
      CorpusArgs corpus;
      corpus.data = a->data;
      corpus.tokenizer = a->tokenizer;
      PackOptions po;
      po.ctx = a->ctx;
      po.seed = a->seed;
      contexts.emplace(corpus.load(), po);
      a->hook = model->hook_point(a->hook).name;
      source = live_source(*model, *contexts, a->hook);
      cfg.hook_name = a->hook;
    } else if (!std::filesystem::exists(std::filesystem::path(a->activations) / "manifest.json")) {
      source = tensor_files_source(a->activations, a->hook, a->seed);  // files made by other tools
      cfg.hook_name = a->hook;
    } else {
      store.emplace(ActivationStore::open(a->activations));
      if (a->hook.empty()) {
        if (store->hooks().size() != 1)
          throw Error(fmt::format("{} holds {} hook points; name one with --hook", a->activations, store->hooks().size()));
        a->hook = store->hooks()[0].name;
      }
      source = store_source(*store, a->hook, a->seed);
      cfg.hook_name = a->hook;
    }
    cfg.d_in = source->d_in();
    SAE sae(cfg);
    // With --dist: every rank draws the same stream and trains on its slice of each batch; rank 0
    // alone writes (the checkpoint and the SAE) into --out, which all ranks see.
    std::unique_ptr<ProcessGroup> group;
    if (dist) {
      group = ProcessGroup::connect(*dist, "cpu");
      o.group = group.get();
    }
    const bool writer = !group || group->rank() == 0;
    OutputDir out(a->out);
    if (writer) out.create();
    // Temporaries of a run that was killed mid-write (NAME.tmp.PID): never read, removed here.
    if (writer) for (const auto& e : std::filesystem::directory_iterator(a->out)) {
      const std::string name = e.path().filename().string();
      for (const char* ours : {"cfg.json.tmp.", "sae_weights.safetensors.tmp.", "sae.safetensors.tmp.",
                               "checkpoint.safetensors.tmp."})
        if (name.rfind(ours, 0) == 0) {
          std::error_code ec;
          std::filesystem::remove(e.path(), ec);
        }
    }
    const bool tty = isatty(2);
    if (writer) o.progress = [tty](const TrainProgress& p) {
      std::string line = fmt::format("step {}/{}  mse {:.4f}  sparsity {:.4f}  aux {:.4f}{}  L0 {:.1f}  dead {:.1f}%  "
                                     "lr {:.2e}  {:.0f} tokens/s  ETA {:.0f} s",
                                     p.step, p.steps, p.mse, p.sparsity, p.aux,
                                     p.extra != 0 ? fmt::format("  extra {:.4f}", p.extra) : "", p.l0,
                                     100 * p.dead_fraction, p.lr, p.tokens_per_s, p.eta_s);
      bool last = p.step == p.steps;
      if (tty) fmt::print(stderr, "\r{}{}", line, last ? "\n" : "");
      else if (last || p.step % (p.steps / 10 > 0 ? p.steps / 10 : 1) == 0) fmt::print(stderr, "{}\n", line);
    };
    if (writer)
      fmt::print("train-sae\n  source  {}\n  sae     {} d_in {} d_sae {}{}\n  steps   {} x {} rows, lr {}\n  out     {}\n{}",
                 source->describe(), cfg.architecture, cfg.d_in, cfg.d_sae,
                 sae_architecture(cfg.architecture).uses_k ? fmt::format(" k {}", cfg.k) : "", o.steps, o.batch, o.lr,
                 a->out,
                 group ? fmt::format("  dist    {} ranks ({}), {} rows each per step\n", group->size(), group->backend(),
                                     o.batch / group->size())
                       : "");
    std::fflush(stdout);
    TrainResult r = train_sae(sae, *source, o);
    if (group && r.steps > r.resumed_from)
      fmt::print("rank {}: {} all-reduced per step, {:.3f} s per step waiting in exchanges ({:.1f}% of the run)\n",
                 group->rank(), human_bytes(static_cast<double>(r.bytes_reduced) / static_cast<double>(r.steps - r.resumed_from)),
                 r.seconds_communicating / static_cast<double>(r.steps - r.resumed_from),
                 100 * r.seconds_communicating / r.seconds);
    if (!writer) return;  // rank 0 writes the SAE
    if (r.resumed_from > 0) fmt::print("resumed from the checkpoint of step {}\n", r.resumed_from);
    if (r.resampled > 0) fmt::print("resampled {} dead latents\n", r.resampled);
    if (a->format == "sparsify") sae.save_sparsify(a->out);
    else sae.save(a->out);
    fmt::print("trained in {:.1f} s ({:.0f} tokens/s): mse {:.4f}, L0 {:.2f}, dead {:.1f}%\n", r.seconds, r.tokens_per_s,
               r.mse, r.l0, 100 * r.dead_fraction);
    if (data) {
      Recovery rec = feature_recovery(data->features(), sae.W_dec());
      fmt::print("ground truth: MMCS {:.4f}, {} of {} features recovered (max cosine > 0.9)\n", rec.mmcs, rec.recovered,
                 rec.n_features);
    }
    out.keep();
    fmt::print("wrote {}/cfg.json and {}/{}\n", a->out, a->out,
               a->format == "sparsify" ? "sae.safetensors" : "sae_weights.safetensors");
  });
}

void register_eval_sae(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval-sae", "Evaluate an SAE: reconstruction, latents, and CE loss recovered");
  struct Args {
    ModelArgs model;
    CorpusArgs corpus;
    std::string sae, hook, out;
    int64_t tokens = 65536, ctx = 128, batch = 16;
    uint64_t seed = 1;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--sae", a->sae, "SAE folder (SAELens, sparsify or dictionary_learning layout)")->required();
  a->model.add_to(*cmd, "--model", "TorchScript model the SAE was trained on");
  a->corpus.add_to(*cmd);
  cmd->add_option("--hook", a->hook, "hook point (default: the SAE's hook_name)");
  cmd->add_option("--tokens", a->tokens, "tokens to evaluate on")->check(positive())->capture_default_str();
  cmd->add_option("--ctx", a->ctx, "tokens per context")->check(positive())->capture_default_str();
  cmd->add_option("--batch", a->batch, "contexts per forward")->check(positive())->capture_default_str();
  cmd->add_option("--seed", a->seed, "seed of the context order (use another than for training)")->check(non_negative())->capture_default_str();
  cmd->add_option("--out", a->out, "write the results as JSON to this file");
  cmd->callback([a] {
    if (!a->out.empty()) check_output_file(a->out);
    HookedModel model = a->model.load();
    SAE sae = SAE::load(a->sae);
    sae.to(model.device());
    TokenizedCorpus tc = a->corpus.load();
    PackOptions po;
    po.ctx = a->ctx;
    po.seed = a->seed;
    PackedContexts contexts(tc, po);
    SAEEvalOptions o;
    o.hook = a->hook;
    o.tokens = a->tokens;
    o.batch = a->batch;
    o.progress = true;
    std::fflush(stdout);
    SAEEval e = evaluate_sae(sae, model, contexts, o);
    fmt::print("{}", e.summary());
    if (!a->out.empty()) {
      std::string text = e.to_json();
      AtomicFile f(a->out);
      f.write(text.data(), text.size());
      f.commit();
      fmt::print("wrote {}\n", a->out);
    }
  });
}

}  // namespace interp::app
