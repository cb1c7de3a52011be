// Internal: module-path -> TransformerLens module name mapping, and "did you mean" suggestions.
#pragma once

#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "interp/hooks.h"

namespace interp::detail {

// What a module is, in TransformerLens terms.
struct Role {
  enum Kind { None, Embed, PosEmbed, Block, Attn, Mlp, Ln1, Ln2, LnFinal, Unembed } kind = None;
  int layer = -1;
};

class NameMap {
 public:
  static NameMap transformer_lens();                 // identity map for TL-named models
  static NameMap from_json_file(const std::string& path);  // throws interp::Error
  Role role_of(const std::string& module_path) const;
  const std::string& source() const { return source_; }

 private:
  struct Entry {
    std::string pattern;  // "transformer.h.{L}.attn"
    std::regex regex;     // ^transformer\.h\.(\d+)\.attn$
    Role::Kind kind;
  };
  void add(const std::string& pattern, const std::string& tl_name, const std::string& where);
  std::vector<Entry> entries_;
  std::string source_;
};

// A name of a hook point with the structure it was made with.
struct PointTag {
  std::string name;
  PointKind kind = PointKind::Module;
  int layer = -1;
};

// TransformerLens hook names a module's output carries ("blocks.3.hook_attn_out", ...).
std::vector<PointTag> output_hook_names(const Role& role);

// The names in `candidates` closest to `name` (edit distance), best first.
std::vector<std::string> closest_names(const std::string& name, const std::vector<std::string>& candidates,
                                       size_t n = 3);
std::string did_you_mean(const std::string& name, const std::vector<std::string>& candidates);

}  // namespace interp::detail
