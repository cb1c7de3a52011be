// Internal: the store manifest (DIR/manifest.json) and shard files; format in docs/store.md.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace interp::store_detail {

inline constexpr const char* kFormat = "interp.store.v1";

std::string shard_file(int64_t index);                                // "shard-000003.safetensors"
// A sharded (--dist) capture in progress: each rank's own manifest, merged into manifest.json by
// rank 0 when every rank is done. "manifest.rank-1-of-4.json"
std::string rank_manifest_file(int rank, int world);
inline constexpr const char* kRankManifestPrefix = "manifest.rank-";
// atomic replace of DIR/NAME (default: the store's manifest.json)
void write_manifest(const std::string& dir, const nlohmann::json& m, const std::string& name = "manifest.json");
nlohmann::json read_manifest(const std::string& dir);                 // parsed and validated
// A rank manifest: the same fields, its shards those with index % world == rank, each checked
// against the shard size of the capture (shard i holds contexts [i * per_shard, ...)).
nlohmann::json read_rank_manifest(const std::string& dir, int rank, int world);
void check_shard(const std::string& dir, const nlohmann::json& shard); // size and xxh64, or interp::Error
// A JSON integer in [min, max], or interp::Error naming `what` (a float such as 4e30 converted by
// json::get<int64_t> would be undefined behaviour).
int64_t json_int(const nlohmann::json& v, const std::string& what, int64_t min = 0,
                 int64_t max = int64_t{1} << 53);

}  // namespace interp::store_detail
