// interp eval-lm: a model's next-token loss and accuracy on a corpus (or its held-out documents).
#include <fmt/format.h>

#include <cmath>
#include <numeric>

#include "common.h"
#include "interp/error.h"
#include "interp/lm_eval.h"
#include "interp/util.h"

namespace interp::app {

void register_eval_lm(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval-lm", "Next-token loss and accuracy of a model on a corpus (or its held-out documents)");
  struct Args {
    ModelArgs model;
    CorpusArgs corpus;
    std::string out;
    int64_t every = 0, ctx = 0, batch = 16, max_contexts = 0;
  };
  auto a = std::make_shared<Args>();
  a->model.add_to(*cmd);
  a->corpus.add_to(*cmd);
  cmd->add_option("--held-out-every", a->every,
                  "evaluate only documents whose index is a multiple of N (models/train_brown.py holds out N = 20)->check(non_negative()); 0: all")
      ->capture_default_str();
  cmd->add_option("--ctx", a->ctx, "tokens per context, BOS included (0: the model's context)")->check(non_negative())->capture_default_str();
  cmd->add_option("--batch", a->batch, "contexts per forward")->check(positive())->capture_default_str();
  cmd->add_option("--max-contexts", a->max_contexts, "evaluate at most this many contexts (0: all)")->check(non_negative())->capture_default_str();
  cmd->add_option("--out", a->out, "write the results as JSON to this file");
  cmd->callback([a] {
    if (!a->out.empty()) check_output_file(a->out);
    if (a->every < 0) throw Error(fmt::format("--held-out-every {}: use 0 (all documents) or a positive N", a->every));
    if (a->ctx < 0 || a->ctx == 1) throw Error(fmt::format("--ctx {}: use 0 (the model's context) or at least 2", a->ctx));
    HookedModel model = a->model.load();
    TokenizedCorpus tc = a->corpus.load();
    if (model.info().d_vocab > 0 && tc.vocab_size > model.info().d_vocab)
      throw Error(fmt::format("the tokenizer has {} pieces but the model's vocabulary is {}; use the model's tokenizer",
                              tc.vocab_size, model.info().d_vocab));
    const int64_t n_docs = static_cast<int64_t>(tc.doc_offsets.size()) - 1;
    if (a->every > 0) {
      std::vector<int64_t> docs;
      for (int64_t d = 0; d < n_docs; d += a->every) docs.push_back(d);
      tc = select_documents(tc, docs);
    }
    PackOptions po;
    po.ctx = a->ctx > 0 ? a->ctx : model.info().n_ctx;
    if (po.ctx < 2) throw Error("the model's context length is unknown; pass --ctx");
    po.shuffle = false;
    PackedContexts contexts(tc, po);
    LmEvalOptions o;
    o.batch = a->batch;
    o.max_contexts = a->max_contexts;
    o.progress = true;
    LmEval e = evaluate_lm(model, contexts, o);
    fmt::print("{}: loss {:.4f} (perplexity {:.1f}), next-token accuracy {:.4f} over {} tokens in {} contexts of {} "
               "({} of {} documents{}), {:.1f} s\n",
               a->model.model, e.loss, std::exp(e.loss), e.accuracy, e.tokens, e.contexts, po.ctx,
               static_cast<int64_t>(tc.doc_offsets.size()) - 1, n_docs,
               a->every > 0 ? fmt::format(": index % {} == 0", a->every) : "", e.seconds);
    if (!a->out.empty()) {
      write_text_file(a->out, e.to_json());
      fmt::print("wrote {}\n", a->out);
    }
  });
}

}  // namespace interp::app
