// interp: command-line front end. One file per subcommand (cmd_*.cpp); this file only dispatches
// and turns errors into `error: ...` with a non-zero exit code.
#include <c10/util/Exception.h>
#include <fmt/format.h>

#include <csignal>
#include <iostream>

#include "common.h"
#include "interp/error.h"

int main(int argc, char** argv) {
  // A file-size limit (ulimit -f) then fails the write with EFBIG, reported by file name, instead of
  // killing the process and leaving a temporary file behind.
  std::signal(SIGXFSZ, SIG_IGN);
  interp::app::install_stop_handlers();
  CLI::App app{"interp: mechanistic interpretability for TorchScript transformers"};
  app.require_subcommand(1);
  app.option_defaults()->always_capture_default();
  interp::app::register_hooks(app);
  interp::app::register_cache(app);
  interp::app::register_run(app);
  interp::app::register_tokenizer(app);
  interp::app::register_tokenize(app);
  interp::app::register_capture(app);
  interp::app::register_store(app);
  interp::app::register_sae(app);
  interp::app::register_eval_sae(app);
  interp::app::register_sae_info(app);
  interp::app::register_steer(app);
  interp::app::register_patch(app);
  interp::app::register_ablate(app);
  interp::app::register_circuit(app);
  interp::app::register_eval_lm(app);
  interp::app::register_features(app);
  interp::app::register_heads(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "error: " << e.what() << "\n(run with --help for usage)\n";
    return 2;
  } catch (const interp::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    // A LibTorch error no check of ours caught first: its message without the C++ backtrace.
    std::cerr << "error: " << e.what_without_backtrace()
              << "\n(an error from LibTorch that interp did not check for first; please report the command)\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: unexpected failure: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
