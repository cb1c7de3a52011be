// Runs fuzz targets' entry points on every file of their seed corpus (tests/fuzz/corpus/TARGET/)
// and of the crashes found so far (tests/fuzz/crashes/TARGET/): the regression half of fuzzing, in
// the ordinary test suite. Each target's source is compiled here with its entry point renamed
// (-DINTERP_FUZZ_ENTRY=fuzz_TARGET).
//
//   fuzz-replay FUZZ_DIR TARGET...     (no TARGET: all of them)
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "fuzz_targets.h"  // INTERP_FUZZ_TARGETS(X): one X(name) per tests/fuzz/fuzz_NAME.cpp

#define DECLARE(name) extern "C" int fuzz_##name(const uint8_t* data, size_t size);
INTERP_FUZZ_TARGETS(DECLARE)
#undef DECLARE

int main(int argc, char** argv) {
  using Entry = int (*)(const uint8_t*, size_t);
  const std::map<std::string, Entry> targets = {
#define ENTRY(name) {#name, fuzz_##name},
      INTERP_FUZZ_TARGETS(ENTRY)
#undef ENTRY
  };
  if (argc < 2) {
    std::fprintf(stderr, "usage: fuzz-replay FUZZ_DIR [TARGET...]\n");
    return 2;
  }
  const std::filesystem::path root = argv[1];
  std::vector<std::string> names;
  for (int i = 2; i < argc; ++i) names.push_back(argv[i]);
  if (names.empty())
    for (const auto& [name, fn] : targets) names.push_back(name);
  int status = 0;
  for (const std::string& name : names) {
    auto it = targets.find(name);
    if (it == targets.end()) {
      std::fprintf(stderr, "fuzz-replay: no target '%s'\n", name.c_str());
      return 2;
    }
    int corpus = 0, crashes = 0;
    for (const char* kind : {"corpus", "crashes"}) {
      const auto dir = root / kind / name;
      std::error_code ec;
      if (!std::filesystem::is_directory(dir, ec)) continue;
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::directory_iterator(dir))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& p : files) {
        std::ifstream in(p, std::ios::binary);
        std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        it->second(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
        ++(std::string(kind) == "corpus" ? corpus : crashes);
      }
    }
    std::printf("%-16s replayed %d seed inputs and %d past crashes\n", name.c_str(), corpus, crashes);
    if (corpus == 0) {
      std::fprintf(stderr, "fuzz-replay: %s has no seed corpus under %s\n", name.c_str(), (root / "corpus" / name).c_str());
      status = 1;
    }
  }
  return status;
}
