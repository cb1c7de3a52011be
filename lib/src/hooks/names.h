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
  // A shipped map by name ("gpt2", "llama", "neox"; see builtin_names()), nullopt if none.
  static std::optional<NameMap> builtin(const std::string& name);
  static std::vector<std::string> builtin_names();
  // The shipped map (TransformerLens's names included) that maps most of `module_paths`, and a
  // sentence saying which and why. TransformerLens's names when none maps more than one path.
  static std::pair<NameMap, std::string> detect(const std::vector<std::string>& module_paths);
  // "--name-map VALUE": a shipped map's name or a JSON file.
  static NameMap from_option(const std::string& value);
  Role role_of(const std::string& module_path) const;
  const std::string& source() const { return source_; }

 private:
  struct Entry {
    std::string pattern;  // "transformer.h.{L}.attn"
    std::regex regex;     // ^transformer\.h\.(\d+)\.attn$
    Role::Kind kind;
  };
  void add(const std::string& pattern, const std::string& tl_name, const std::string& where);
  size_t mapped(const std::vector<std::string>& module_paths, std::string* example) const;
  std::vector<Entry> entries_;
  std::string source_;
};

// A name of a hook point with the structure it was made with.
struct PointTag {
  std::string name;
  PointKind kind = PointKind::Module;
  int layer = -1;
  // >= 0: one of several candidates for a module's output (the tensor elements of a tuple); after the
  // probe the first candidate shaped [batch, pos, d] keeps the tags of its group, the others drop them
  int group = -1;
};

// TransformerLens hook names a module's output carries ("blocks.3.hook_attn_out", ...).
std::vector<PointTag> output_hook_names(const Role& role);

// The names in `candidates` closest to `name` (edit distance), best first.
std::vector<std::string> closest_names(const std::string& name, const std::vector<std::string>& candidates,
                                       size_t n = 3);
std::string did_you_mean(const std::string& name, const std::vector<std::string>& candidates);

}  // namespace interp::detail
