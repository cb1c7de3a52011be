// interp heads: previous-token, induction and copying scores of every attention head on repeated
// random tokens (head_scores in interp/circuits.h), ranked by induction score.
#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common.h"
#include "interp/circuits.h"
#include "interp/error.h"
#include "interp/tokenizer.h"
#include "interp/util.h"

namespace interp::app {

void register_heads(CLI::App& app) {
  auto* cmd = app.add_subcommand("heads", "Induction, previous-token and copying scores of every attention head");
  struct Args {
    ModelArgs model;
    std::string tokenizer, out;
    int64_t sequences = 32, segment = 10, bos = -1, top = 10;
    uint64_t seed = 0;
  };
  auto a = std::make_shared<Args>();
  a->model.add_to(*cmd);
  cmd->add_option("--sequences", a->sequences, "random sequences, each a segment repeated once")
      ->check(positive())->capture_default_str();
  cmd->add_option("--segment", a->segment, "tokens per segment (capped by the model's context)")->check(positive())->capture_default_str();
  cmd->add_option("--bos", a->bos, "first token of every sequence (default: the tokenizer's BOS, else 0)")->check(non_negative());
  cmd->add_option("--tokenizer", a->tokenizer, "sentencepiece .model: its BOS starts every sequence");
  cmd->add_option("--top", a->top, "heads listed (0: all)")->check(non_negative())->capture_default_str();
  cmd->add_option("--seed", a->seed, "seed of the random tokens")->check(non_negative())->capture_default_str();
  cmd->add_option("--out", a->out, "write every head's scores as JSON to this file");
  cmd->callback([a] {
    if (!a->out.empty()) check_output_file(a->out);
    if (a->segment < 2) throw Error(fmt::format("--segment {}: use at least 2 tokens", a->segment));
    int64_t bos = a->bos;
    if (bos < 0 && !a->tokenizer.empty()) bos = Tokenizer::load(a->tokenizer).bos_id();
    if (bos < 0) bos = 0;
    HookedModel model = a->model.load();
    if (model.info().d_vocab > 0 && bos >= model.info().d_vocab)
      throw Error(fmt::format("--bos {} is outside the model's vocabulary of {}", bos, model.info().d_vocab));
    HeadScores hs = head_scores(model, a->sequences, a->segment, a->seed, bos);
    struct Row {
      int L;
      int64_t h;
      double prev, ind, copy;
    };
    std::vector<Row> rows;
    for (int L = 0; L < hs.induction.size(0); ++L)
      for (int64_t h = 0; h < hs.induction.size(1); ++h)
        rows.push_back({L, h, hs.prev_token[L][h].item<double>(), hs.induction[L][h].item<double>(),
                        hs.copying[L][h].item<double>()});
    std::stable_sort(rows.begin(), rows.end(), [](const Row& x, const Row& y) { return x.ind > y.ind; });
    fmt::print("heads of {} on {} sequences of {} random tokens repeated once (BOS {}), by induction score\n"
               "  induction: attention from the second copy to the token after the same token's first occurrence\n"
               "  prev-token: attention to the previous position; copying: drop in the correct next token's log-prob\n"
               "  on the second copy when the head is zero-ablated ({})\n",
               a->model.model, a->sequences, a->segment, bos,
               hs.copying_direct ? "its direct path to the logits" : "its total effect");
    fmt::print("  {:<8} {:>9} {:>10} {:>8}\n", "head", "induction", "prev-token", "copying");
    const size_t n = a->top > 0 ? std::min(rows.size(), static_cast<size_t>(a->top)) : rows.size();
    for (size_t i = 0; i < n; ++i)
      fmt::print("  a{}.h{:<4} {:>9.3f} {:>10.3f} {:>+8.3f}\n", rows[i].L, rows[i].h, rows[i].ind, rows[i].prev,
                 rows[i].copy);
    if (!a->out.empty()) {
      nlohmann::json j = {{"model", a->model.model}, {"sequences", a->sequences}, {"segment", a->segment},
                          {"bos", bos},           {"seed", a->seed},          {"copying_direct", hs.copying_direct}};
      for (const auto& r : rows)
        j["heads"].push_back({{"head", fmt::format("a{}.h{}", r.L, r.h)}, {"layer", r.L}, {"index", r.h},
                              {"induction", r.ind}, {"prev_token", r.prev}, {"copying", r.copy}});
      write_text_file(a->out, j.dump(2) + "\n");
      fmt::print("wrote {}\n", a->out);
    }
  });
}

}  // namespace interp::app
