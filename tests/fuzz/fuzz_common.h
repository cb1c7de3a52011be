// Shared by the fuzz targets (tests/fuzz/fuzz_*.cpp). Each target feeds one kind of outside input to
// its parser: an interp::Error is a clean refusal; any other exception escaping, a crash, a hang or
// a sanitizer report is a finding. The same sources are built twice: with libFuzzer
// (scripts/fuzz.sh, clang, ASan + UBSan) and with replay_main.cpp into the test suite, which runs
// every file of tests/fuzz/corpus/<target>/ and tests/fuzz/crashes/<target>/ once.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "interp/error.h"

namespace interp::fuzz {

// A folder of this process's own under the temporary folder, for parsers that read files.
inline std::string scratch(const std::string& name) {
  static const std::string dir = [] {
    std::string d = (std::filesystem::temp_directory_path() / ("interp-fuzz-" + std::to_string(::getpid()))).string();
    std::filesystem::create_directories(d);
    static std::string to_remove = d;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(to_remove, ec);
    });
    return d;
  }();
  return dir + "/" + name;
}

inline void write_file(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

// A scratch folder `name` holding a copy of the fixture `fixed` (a path under tests/fixtures) under
// its own file name, and the fuzzed bytes as `fuzzed`: an SAE folder with one file damaged. The
// copy is made once per process. Returns the folder.
inline std::string folder_with(const std::string& name, const std::string& fixtures, const std::string& fixed,
                               const std::string& fuzzed, const uint8_t* data, size_t size) {
  const std::string dir = scratch(name);
  static std::map<std::string, bool> ready;
  if (!ready[dir]) {
    std::filesystem::create_directories(dir);
    const std::filesystem::path from = std::filesystem::path(fixtures) / fixed;
    std::filesystem::copy_file(from, std::filesystem::path(dir) / from.filename(),
                               std::filesystem::copy_options::overwrite_existing);
    ready[dir] = true;
  }
  write_file(dir + "/" + fuzzed, data, size);
  return dir;
}

}  // namespace interp::fuzz

// Defines LLVMFuzzerTestOneInput around BODY, which sees `data` and `size` (the replay build names
// each target's entry point differently with -DINTERP_FUZZ_ENTRY=..., to link them all in one program).
#ifndef INTERP_FUZZ_ENTRY
#define INTERP_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif
#define INTERP_FUZZ_TARGET(BODY)                                         \
  extern "C" int INTERP_FUZZ_ENTRY(const uint8_t* data, size_t size) {   \
    try {                                                                   \
      BODY                                                                  \
    } catch (const interp::Error&) {                                        \
    }                                                                       \
    return 0;                                                               \
  }
