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

std::string rank_manifest_file(int rank, int world) {
  return fmt::format("{}{}-of-{}.json", kRankManifestPrefix, rank, world);
}

void write_manifest(const std::string& dir, const json& m, const std::string& name) {
  std::string text = m.dump(2) + "\n";
  AtomicFile out((fs::path(dir) / name).string());
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
  if (!in) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.path().filename().string().rfind(kRankManifestPrefix, 0) == 0)
        throw Error(fmt::format("{}: an unfinished sharded capture (capture --dist; found {}): start every rank again "
                                "with --resume and the same number of ranks to finish it",
                                dir, e.path().filename().string()));
    throw Error(fmt::format("{}: no manifest.json; is this an activation store (written by `interp capture`)?", dir));
  }
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

json read_rank_manifest(const std::string& dir, int rank, int world) {
  const std::string name = rank_manifest_file(rank, world);
  const std::string path = (fs::path(dir) / name).string();
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: cannot read {}", dir, name));
  auto bad = [&](const std::string& why) {
    return Error(fmt::format("{}: damaged rank manifest: {}; delete the store folder and capture again", path, why));
  };
  json m;
  try {
    m = json::parse(in);
    const json& cm = m;
    if (cm.value("format", "") != kFormat) throw Error(fmt::format("format is not {}", kFormat));
    for (const char* k : {"identity", "ctx", "hooks", "shards", "complete", "contexts_per_shard", "target_contexts"})
      if (!cm.contains(k)) throw Error(fmt::format("field '{}' missing", k));
    const int64_t per_shard = json_int(cm.at("contexts_per_shard"), "contexts_per_shard", 1);
    const int64_t total = json_int(cm.at("target_contexts"), "target_contexts", 1);
    if (!cm.at("shards").is_array()) throw Error("shards is not a list");
    for (const auto& s : cm.at("shards")) {
      if (!s.is_object()) throw Error("a shard is not an object");
      for (const char* k : {"file", "first_context", "contexts", "bytes", "xxh64"})
        if (!s.contains(k)) throw Error(fmt::format("a shard lacks '{}'", k));
      const int64_t first = json_int(s.at("first_context"), "a shard's first_context");
      if (first % per_shard != 0 || first >= total) throw Error(fmt::format("a shard starts at context {}", first));
      const int64_t index = first / per_shard;
      if (index % world != rank) throw Error(fmt::format("shard {} belongs to rank {}", index, index % world));
      if (s.at("file") != shard_file(index)) throw Error(fmt::format("shard {} is named {}", index, s.at("file").dump()));
      if (json_int(s.at("contexts"), "a shard's contexts", 1) != std::min(per_shard, total - first))
        throw Error(fmt::format("shard {} has the wrong number of contexts", index));
      json_int(s.at("bytes"), "a shard's bytes", 0);
      if (!s.at("xxh64").is_string()) throw Error("a shard's xxh64 is not a string");
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
