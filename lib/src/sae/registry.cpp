#include <fmt/format.h>
#include <fmt/ranges.h>

#include "interp/error.h"
#include "sae/architectures.h"

namespace interp {

namespace {
const std::vector<SAEArchitecture>& all() {
  static const std::vector<SAEArchitecture> a = {sae_detail::standard(), sae_detail::topk(), sae_detail::batchtopk(),
                                                 sae_detail::jumprelu(), sae_detail::gated(), sae_detail::matryoshka()};
  return a;
}
}  // namespace

const SAEArchitecture& sae_architecture(const std::string& name) {
  for (const auto& a : all())
    if (a.name == name) return a;
  throw Error(fmt::format("SAE config: architecture '{}' is not one of {}", name, fmt::join(sae_architectures(), ", ")));
}

std::vector<std::string> sae_architectures() {
  std::vector<std::string> n;
  for (const auto& a : all()) n.push_back(a.name);
  return n;
}

}  // namespace interp
