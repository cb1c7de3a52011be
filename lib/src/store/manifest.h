// Internal: the store manifest (DIR/manifest.json) and shard files; format in docs/store.md.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace interp::store_detail {

inline constexpr const char* kFormat = "interp.store.v1";

std::string shard_file(int64_t index);                                // "shard-000003.safetensors"
void write_manifest(const std::string& dir, const nlohmann::json& m);  // atomic replace
nlohmann::json read_manifest(const std::string& dir);                 // parsed and validated
void check_shard(const std::string& dir, const nlohmann::json& shard); // size and xxh64, or interp::Error

}  // namespace interp::store_detail
