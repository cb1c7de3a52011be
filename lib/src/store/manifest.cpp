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
    for (const auto& s : m["shards"]) {
      for (const char* k : {"file", "first_context", "contexts", "bytes", "xxh64"})
        if (!s.contains(k)) throw bad(fmt::format("shard {} lacks '{}'", i, k));
      if (s["file"] != shard_file(i)) throw bad(fmt::format("shard {} is named {}", i, s["file"].dump()));
      if (s["first_context"].get<int64_t>() != next)
        throw bad(fmt::format("shard {} starts at context {}, expected {}", i, s["first_context"].get<int64_t>(), next));
      if (s["contexts"].get<int64_t>() < 1) throw bad(fmt::format("shard {} holds no contexts", i));
      next += s["contexts"].get<int64_t>();
      ++i;
    }
  } catch (const json::exception& e) {
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
