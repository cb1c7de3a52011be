// Internal: reading numbers from SAE config files (SAELens, sparsify) without undefined behaviour.
#pragma once

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "interp/error.h"

namespace interp::sae_detail {

// A size or count: an integer, or a float that is one exactly (16.0); 16.5, text, or a number past
// 2^53 or int64 is an interp::Error naming `where` and `field` (json::get<int64_t> of 4e30 would be
// undefined behaviour).
inline int64_t json_integer(const nlohmann::json& v, const std::string& where, const std::string& field) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      throw Error(fmt::format("{}: '{}' is too large (got {})", where, field, v.dump()));
    return v.get<int64_t>();
  }
  if (v.is_number_float() && std::abs(v.get<double>()) < 9007199254740992.0 && v.get<double>() == std::floor(v.get<double>()))
    return static_cast<int64_t>(v.get<double>());
  throw Error(fmt::format("{}: '{}' must be an integer (got {})", where, field, v.dump()));
}

}  // namespace interp::sae_detail
