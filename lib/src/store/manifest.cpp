#include "store/manifest.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>

#include "interp/error.h"
#include "interp/util.h"
#include "io/atomic_file.h"

namespace interp::store_detail {
namespace fs = std::filesystem;
using json = nlohmann::json;

std::string shard_file(int64_t index) { return fmt::format("shard-{:06d}.safetensors", index); }

void write_manifest(const std::string& dir, const json& m) {
  std::string text = m.dump(2) + "\n";
  AtomicFile out((fs::path(dir) / "manifest.json").string());
  out.write(text.data(), text.size());
  out.commit();
}

int64_t json_int(const nlohmann::json& v, const std::string& what, int64_t min, int64_t max) {
  bool ok = v.is_number_integer();
  if (ok && v.is_number_unsigned()) ok = v.get<uint64_t>() <= static_cast<uint64_t>(max);
  const int64_t x = ok ? v.get<int64_t>() : 0;
  if (!ok || x < min || x > max)
    throw Error(fmt::format("{} must be an integer in [{}, {}] (got {})", what, min, max, v.dump()));
  return x;
}

json read_manifest(const std::string& dir) {
  const std::string path = (fs::path(dir) / "manifest.json").string();
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: no manifest.json; is this an activation store (written by `interp capture`)?", dir));
  json m;
  try {
    m = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: manifest is not valid JSON ({}); the store is damaged", path, e.what()));
  }
  auto bad = [&](const std::string& why) { return Error(fmt::format("{}: mismatched manifest: {}", path, why)); };
  try {
    if (m.value("format", "") != kFormat) throw bad(fmt::format("format is not {}", kFormat));
    for (const char* k : {"identity", "ctx", "dtype", "hooks", "shards", "complete", "contexts_per_shard"})
      if (!m.contains(k)) throw bad(fmt::format("field '{}' missing", k));
    if (!m["shards"].is_array() || !m["hooks"].is_array() || m["hooks"].empty()) throw bad("shards/hooks malformed");
    int64_t next = 0, i = 0;
    const json& cm = m;  // read only: operator[] on a missing key of a const json is undefined
    json_int(cm.at("ctx"), "ctx", 1);
    for (const auto& h : cm.at("hooks")) {
      if (!h.is_object() || !h.contains("name") || !h.at("name").is_string() || !h.contains("shape") ||
          !h.at("shape").is_array())
        throw bad("each hook needs a name and a shape");
      for (const auto& d : h.at("shape")) json_int(d, "a hook's shape entry", 0);
    }
    for (const auto& s : cm.at("shards")) {
      if (!s.is_object()) throw bad(fmt::format("shard {} is not an object", i));
      for (const char* k : {"file", "first_context", "contexts", "bytes", "xxh64"})
        if (!s.contains(k)) throw bad(fmt::format("shard {} lacks '{}'", i, k));
      if (s.at("file") != shard_file(i)) throw bad(fmt::format("shard {} is named {}", i, s.at("file").dump()));
      const int64_t first = json_int(s.at("first_context"), fmt::format("shard {}'s first_context", i));
      if (first != next) throw bad(fmt::format("shard {} starts at context {}, expected {}", i, first, next));
      const int64_t contexts = json_int(s.at("contexts"), fmt::format("shard {}'s contexts", i), 1);
      json_int(s.at("bytes"), fmt::format("shard {}'s bytes", i), 0);
      if (!s.at("xxh64").is_string()) throw bad(fmt::format("shard {}'s xxh64 is not a string", i));
      next += contexts;
      ++i;
    }
  } catch (const json::exception& e) {
    throw bad(e.what());
  } catch (const Error& e) {
    throw bad(e.what());
  }
  return m;
}

void check_shard(const std::string& dir, const json& s) {
  const std::string file = s["file"].get<std::string>();
  const std::string path = (fs::path(dir) / file).string();
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw Error(fmt::format("{}: shard {} is missing; the store is incomplete (re-run the capture into a new folder)",
                            dir, file));
  auto size = static_cast<int64_t>(fs::file_size(path, ec));
  if (size != s["bytes"].get<int64_t>())
    throw Error(fmt::format("{}: shard {} has {} bytes but the manifest says {}; truncated or replaced", dir, file, size,
                            s["bytes"].get<int64_t>()));
  std::string got = hex64(xxh64_file(path));
  if (got != s["xxh64"].get<std::string>())
    throw Error(fmt::format("{}: shard {} is corrupt (xxh64 {} but the manifest says {})", dir, file, got,
                            s["xxh64"].get<std::string>()));
}

}  // namespace interp::store_detail
