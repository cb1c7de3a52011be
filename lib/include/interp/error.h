// interp/error.h: the one exception type of the library.
//
// Every failure the library reports is an interp::Error whose message says what was wrong, with
// which file / hook / shape, and what to do about it. The library never prints and never exits; the
// `interp` app catches Error in main, prints `error: ...` and returns non-zero.
//
//   try { auto model = interp::HookedModel::load("model.pt"); }
//   catch (const interp::Error& e) { std::cerr << "error: " << e.what() << "\n"; }
#pragma once

#include <stdexcept>
#include <string>

namespace interp {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace interp
