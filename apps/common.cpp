#include "common.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "interp/error.h"
#include "interp/tokenizer.h"
#include "interp/util.h"
#include "io/atomic_file.h"

#include <optional>
#include <atomic>
#include <csignal>
#include <unistd.h>

namespace interp::app {

void ModelArgs::add_to(CLI::App& cmd, const std::string& name, const std::string& help) {
  cmd.add_option(name, model, help)->required();
  cmd.add_option("--device", device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd.add_option("--name-map", name_map,
                 "module names -> TransformerLens names: a shipped map (gpt2, llama, neox, transformer_lens) or a "
                 "JSON file (docs/hooks.md); default: detected from the model's module tree");
  cmd.add_option("--output", output,
                 "which of forward's outputs are the logits: an index of a tuple or a dict key (default: a tensor; "
                 "a tuple's first tensor; a dict's 'logits')");
  cmd.add_flag("--edge-points", edge_points,
               "add the opt-in edge points blocks.L.hook_q_input/k_input/v_input, attn.hook_result and hook_mlp_in "
               "(cost compute; needed for edge-level circuits)");
}

void DistArgs::add_to(CLI::App& cmd) {
  cmd.add_flag("--dist", dist,
               "run as one rank of a torch.distributed group: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from the "
               "environment (torchrun, srun) or the flags below (docs/distributed.md)");
  cmd.add_option("--rank", rank, "with --dist: this process's rank (default: $RANK)")->check(non_negative());
  cmd.add_option("--world-size", world_size, "with --dist: number of ranks (default: $WORLD_SIZE)")->check(positive());
  cmd.add_option("--master-addr", master_addr, "with --dist: rank 0's address (default: $MASTER_ADDR)");
  cmd.add_option("--master-port", master_port, "with --dist: rank 0's rendezvous port (default: $MASTER_PORT)")
      ->check(positive());
  cmd.add_option("--dist-backend", backend, "with --dist: gloo, nccl, or auto (nccl on CUDA when built with it)")
      ->check(CLI::IsMember({"auto", "gloo", "nccl"}))
      ->capture_default_str();
  cmd.add_option("--dist-timeout", timeout_s,
                 "with --dist: seconds to wait for the other ranks, at the rendezvous and in every exchange")
      ->check(positive())
      ->capture_default_str();
}

std::optional<DistOptions> DistArgs::options() const {
  if (!dist) {
    if (rank >= 0 || world_size >= 0 || master_port >= 0 || !master_addr.empty())
      throw Error("--rank, --world-size, --master-addr and --master-port need --dist");
    return std::nullopt;
  }
  // A rank whose peer died must see the broken connection as an error it can report, not be killed
  // silently by SIGPIPE while writing to it.
  std::signal(SIGPIPE, SIG_IGN);
  DistOptions d;  // the flags given; the environment for the rest
  d.rank = rank;
  d.world_size = world_size;
  d.master_addr = master_addr;
  d.master_port = master_port;
  d.backend = backend;
  d.timeout_s = timeout_s;
  return d.resolve();
}

HookedModel load_model(const std::string& path, const std::string& device, const std::string& name_map,
                       bool edge_points, const std::string& output) {
  LoadOptions o;
  o.device = device;
  o.name_map = name_map;
  o.edge_points = edge_points;
  o.output = output;
  return HookedModel::load(path, o);
}

HookedModel ModelArgs::load() const { return load_model(model, device, name_map, edge_points, output); }

void TaskArgs::add_to(CLI::App& cmd, bool required) {
  auto* o = cmd.add_option("--pairs", pairs, "prompt pairs JSON (docs/patching.md)");
  if (required) o->required();
  cmd.add_option("--tokenizer", tokenizer, "sentencepiece .model for prompts given as text");
  cmd.add_option("--metric", metric, "logit_diff | prob | loss | kl")->capture_default_str();
  position_opt = cmd.add_option("--position", position,
                                "position the metric reads (negative: from the end; default: the pairs file's "
                                "\"position\", else -1)")
                     ->capture_default_str();
}

PromptPairs TaskArgs::load_pairs() const {
  std::optional<Tokenizer> tok;
  if (!tokenizer.empty()) tok = Tokenizer::load(tokenizer);
  return load_prompt_pairs(pairs, tok ? &*tok : nullptr);
}

Metric TaskArgs::make_metric(const PromptPairs& p, const HookedModel& model) const {
  check_token_ids(p, model.info().d_vocab, pairs);
  const int64_t pos = position_opt && position_opt->count() == 0 && p.position ? *p.position : position;
  auto need = [&](const at::Tensor& t, const char* field) {
    if (!t.defined())
      throw Error(fmt::format("--metric {} needs \"{}\" in every pair of {}", metric, field, pairs));
  };
  if (metric == "logit_diff") {
    need(p.answers, "answer");
    need(p.wrong, "wrong");
    return logit_diff(p.answers, p.wrong, pos);
  }
  if (metric == "prob") {
    need(p.answers, "answer");
    return answer_prob(p.answers, pos);
  }
  if (metric == "loss") {
    need(p.answers, "answer");
    return answer_loss(p.answers, pos);
  }
  if (metric == "kl") return kl_to(model.forward(p.clean).to(at::kCPU), {pos});
  throw Error(fmt::format("--metric {}: use logit_diff, prob, loss or kl", metric));
}

void CorpusArgs::add_to(CLI::App& cmd, bool required) {
  cmd.add_option("--data", data, "corpus: a Brown folder, text file(s), or a token file (.safetensors)")->required(required);
  cmd.add_option("--format", format, "auto, brown, text-files, text-lines, tokens")->capture_default_str();
  cmd.add_option("--tokenizer", tokenizer, "sentencepiece .model (needed for text corpora)");
}

TokenizedCorpus CorpusArgs::load() const {
  if (tokenizer.empty()) return load_tokens(data, format, nullptr);
  Tokenizer tok = Tokenizer::load(tokenizer);
  return load_tokens(data, format, &tok);
}

std::vector<std::string> split_list(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    size_t a = cur.find_first_not_of(" \t\n"), b = cur.find_last_not_of(" \t\n");
    if (a != std::string::npos) out.push_back(cur.substr(a, b - a + 1));
    cur.clear();
  };
  for (char c : text) {
    if (c == sep) flush();
    else cur += c;
  }
  flush();
  return out;
}

void PromptArgs::add_to(CLI::App& cmd) {
  cmd.add_option("--tokens", tokens, "token ids: \"1,2,3\", sequences separated by ';'");
  cmd.add_option("--prompt", prompt, "a text prompt instead of --tokens (needs --tokenizer; BOS is prepended)");
  cmd.add_option("--tokenizer", tokenizer, "sentencepiece .model: encodes --prompt, shows tokens as text");
}

std::optional<Tokenizer> PromptArgs::load_tokenizer() const {
  if (tokens.empty() == prompt.empty()) throw Error("give exactly one of --tokens IDS or --prompt TEXT");
  if (!prompt.empty() && tokenizer.empty()) throw Error("--prompt needs --tokenizer (the model's sentencepiece .model)");
  if (tokenizer.empty()) return std::nullopt;
  return Tokenizer::load(tokenizer);
}

at::Tensor PromptArgs::sequences(const std::optional<Tokenizer>& tok) const {
  if (prompt.empty()) return parse_tokens(tokens);
  std::vector<int32_t> ids = tok->encode(prompt);
  if (tok->bos_id() >= 0) ids.insert(ids.begin(), tok->bos_id());
  return at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong).view({1, -1});
}

at::Tensor parse_tokens(const std::string& text) {
  std::vector<std::vector<int64_t>> rows;
  for (const auto& seq : split_list(text, ';')) {
    std::vector<int64_t> row;
    for (const auto& tok : split_list(seq, ',')) {
      size_t used = 0;
      long long v = 0;
      try {
        v = std::stoll(tok, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != tok.size() || used == 0)
        throw Error(fmt::format("--tokens: '{}' is not an integer token id; write ids like \"1,2,3\" and separate "
                                "sequences with ';'",
                                tok));
      row.push_back(v);
    }
    if (row.empty()) continue;
    if (!rows.empty() && row.size() != rows[0].size())
      throw Error(fmt::format("--tokens: sequence {} has {} tokens but sequence 1 has {}; all sequences in a batch "
                              "must have the same length",
                              rows.size() + 1, row.size(), rows[0].size()));
    rows.push_back(std::move(row));
  }
  if (rows.empty()) throw Error("--tokens: no token ids given; write ids like \"1,2,3\"");
  at::Tensor t = at::empty({static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())}, at::kLong);
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < rows[i].size(); ++j) t[i][j] = rows[i][j];
  return t;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} {}", b, units[u]) : fmt::format("{:.1f} {}", b, units[u]);
}

namespace {
std::atomic<bool> g_graceful{false};

extern "C" void on_stop_signal(int sig) {
  if (g_graceful.load() && !stop_requested()) {
    request_stop();
    static const char msg[] =
        "\ninterp: stopping at the next safe point, keeping the work done so far (again to quit at once)\n";
    ssize_t ignored = ::write(2, msg, sizeof msg - 1);
    (void)ignored;
    return;
  }
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}
}  // namespace

void install_stop_handlers() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

void allow_graceful_stop() { g_graceful.store(true); }

namespace {
CLI::Validator number_check(bool zero_ok) {
  return CLI::Validator(
      [zero_ok](std::string& text) -> std::string {
        double v = 0;
        size_t used = 0;
        try {
          v = std::stod(text, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != text.size() || v != v) return fmt::format("'{}' is not a number", text);
        if (zero_ok ? v < 0 : v <= 0) return fmt::format("must be {} (got {})", zero_ok ? "0 or more" : "positive", text);
        return "";
      },
      zero_ok ? "NONNEGATIVE" : "POSITIVE");
}
}  // namespace

CLI::Validator positive() { return number_check(false); }
CLI::Validator non_negative() { return number_check(true); }

void check_output_file(const std::string& path, const std::string& option) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  const fs::path parent = p.has_parent_path() ? p.parent_path() : fs::path(".");
  if (!fs::is_directory(parent, ec))
    throw Error(fmt::format("{} {}: the folder {} does not exist; create it first", option, path, parent.string()));
  check_replaceable(path);
}

OutputDir::~OutputDir() {
  if (!created_ || keep_) return;
  std::error_code ec;
  if (std::filesystem::is_empty(path_, ec) && !ec) std::filesystem::remove(path_, ec);
}

void OutputDir::create() {
  std::error_code ec;
  if (std::filesystem::exists(path_, ec)) {
    if (!std::filesystem::is_directory(path_, ec))
      throw Error(fmt::format("{}: exists and is not a folder; choose another output path", path_));
    return;
  }
  std::filesystem::create_directories(path_, ec);
  if (ec) throw Error(fmt::format("{}: cannot create the output folder ({})", path_, ec.message()));
  created_ = true;
}

}  // namespace interp::app
