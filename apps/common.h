// Shared by the subcommands: options every subcommand takes, token parsing, small printing helpers.
#pragma once

#include <CLI/CLI.hpp>
#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

#include "interp/data.h"
#include "interp/dist.h"
#include "interp/hooks.h"
#include "interp/metrics.h"
#include "interp/prompts.h"
#include "interp/tokenizer.h"

namespace interp::app {

// --device and --name-map, and the model: a positional argument by default, or an option
// (name "--model").
struct ModelArgs {
  std::string model;
  std::string device = "cpu";
  std::string name_map;
  std::string output;
  bool edge_points = false;
  void add_to(CLI::App& cmd, const std::string& name = "model", const std::string& help = "TorchScript model file (.pt)");
  HookedModel load() const;
};

HookedModel load_model(const std::string& path, const std::string& device, const std::string& name_map,
                       bool edge_points = false, const std::string& output = "");

// --pairs, --tokenizer, --metric, --position: prompt pairs and what to measure on them.
struct TaskArgs {
  std::string pairs, tokenizer, metric = "logit_diff";
  int64_t position = -1;
  CLI::Option* position_opt = nullptr;
  void add_to(CLI::App& cmd, bool required = true);
  PromptPairs load_pairs() const;
  // kl is measured against the model's run on the clean prompts (run only for kl).
  Metric make_metric(const PromptPairs& p, const HookedModel& model) const;
};

// --data, --format, --tokenizer: a corpus, tokenized (or a token file as it is).
struct CorpusArgs {
  std::string data, format = "auto", tokenizer;
  void add_to(CLI::App& cmd, bool required = true);
  TokenizedCorpus load() const;  // loads the tokenizer only when one is given
};

// --tokens IDS | --prompt TEXT --tokenizer T: the input sequences of run and steer.
struct PromptArgs {
  std::string tokens, prompt, tokenizer;
  void add_to(CLI::App& cmd);
  // Checks the combination (before any work); loads the tokenizer if one is given.
  std::optional<Tokenizer> load_tokenizer() const;
  // [batch, pos]: the parsed ids, or the encoded prompt with BOS prepended.
  at::Tensor sequences(const std::optional<Tokenizer>& tok) const;
};

// --dist and its rendezvous: the environment torchrun/SLURM set (RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT, LOCAL_RANK), each overridable by a flag.
struct DistArgs {
  bool dist = false;
  int rank = -1, world_size = -1, master_port = -1;
  std::string master_addr, backend = "auto";
  double timeout_s = 300;
  void add_to(CLI::App& cmd);
  // With --dist: the options, checked (before any work). Without: nullopt.
  std::optional<DistOptions> options() const;
};

// Option checks with plain messages ("--steps must be positive (got -3)"): CLI11's own print a
// range up to 1.8e308. A value that is not a number, or is NaN, fails both.
CLI::Validator positive();
CLI::Validator non_negative();

// "1,2,3" -> [[1,2,3]]; "1,2;3,4" -> [[1,2],[3,4]] (sequences of equal length, ';' between them).
at::Tensor parse_tokens(const std::string& text);

// "a,b,c" -> {"a","b","c"}, trimming spaces, dropping empties.
std::vector<std::string> split_list(const std::string& text, char sep = ',');

std::string human_bytes(double bytes);

// SIGINT / SIGTERM: by default they end the process at once, as always. A command that saves its
// state at safe points (capture, train-sae) calls allow_graceful_stop(): the first signal then asks
// the job to stop at its next safe point (interp::request_stop; the job's error says how to
// resume) and a second ends the process at once.
void install_stop_handlers();
void allow_graceful_stop();

// Before any work: an output file's folder must exist and the path must be nothing or a regular
// file (the atomic writer replaces only those), so a long run does not fail at its last step.
void check_output_file(const std::string& path, const std::string& option = "--out");

// An output folder made for one command. create() makes it (and its parents) with a clear error;
// if the command then fails (keep() not called), a folder this command created is removed again
// when still empty, so a failed run leaves nothing that blocks a plain rerun. An existing folder is
// never removed.
class OutputDir {
 public:
  explicit OutputDir(std::string path) : path_(std::move(path)) {}
  ~OutputDir();
  OutputDir(const OutputDir&) = delete;
  OutputDir& operator=(const OutputDir&) = delete;
  void create();
  void keep() { keep_ = true; }

 private:
  std::string path_;
  bool created_ = false, keep_ = false;
};

// Each subcommand registers itself on the app: one file each.
void register_hooks(CLI::App& app);
void register_sae_info(CLI::App& app);
void register_steer(CLI::App& app);
void register_cache(CLI::App& app);
void register_run(CLI::App& app);
void register_tokenizer(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_capture(CLI::App& app);
void register_store(CLI::App& app);
void register_sae(CLI::App& app);
void register_eval_sae(CLI::App& app);
void register_patch(CLI::App& app);
void register_ablate(CLI::App& app);
void register_circuit(CLI::App& app);
void register_eval_lm(CLI::App& app);
void register_features(CLI::App& app);
void register_heads(CLI::App& app);

}  // namespace interp::app
