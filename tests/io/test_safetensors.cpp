// safetensors: round trips, an independent minimal reader (raw bytes + JSON, no interp code), and
// a fuzz loop over corrupted files that must only ever produce interp::Error.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "interp/error.h"
#include "interp/safetensors.h"
#include "test_util.h"

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Independent reader: follows the spec directly, for F32 and I64 only.
struct Raw {
  nlohmann::json header;
  std::string data;
};
Raw independent_read(const std::string& path) {
  std::string bytes = read_all(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);  // little-endian host
  Raw r;
  r.header = nlohmann::json::parse(bytes.substr(8, n));
  r.data = bytes.substr(8 + n);
  return r;
}
std::vector<float> floats_of(const Raw& r, const std::string& name) {
  auto off = r.header[name]["data_offsets"];
  size_t a = off[0], b = off[1];
  std::vector<float> v((b - a) / 4);
  std::memcpy(v.data(), r.data.data() + a, b - a);
  return v;
}

TEST(Safetensors, RoundTripDtypesAndShapes) {
  std::string path = ::testing::TempDir() + "/rt.safetensors";
  at::Tensor x = at::randn({3, 5});
  std::map<std::string, at::Tensor> in = {
      {"f32", x},
      {"f16", x.to(at::kHalf)},
      {"bf16", x.to(at::kBFloat16)},
      {"i64", at::arange(7, at::kLong)},
      {"noncontig", x.t()},
      {"empty", at::empty({0, 4})},
      {"scalar", at::scalar_tensor(3.5)},
      {"bool", at::tensor({1, 0, 1}).to(at::kBool)},
  };
  interp::safetensors_save(path, in, {{"k", "v"}});
  auto f = interp::safetensors_load(path);
  EXPECT_EQ(f.metadata.at("k"), "v");
  ASSERT_EQ(f.tensors.size(), in.size());
  for (const auto& [name, t] : in) {
    ASSERT_TRUE(f.tensors.count(name)) << name;
    EXPECT_EQ(f.tensors[name].scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(at::equal(f.tensors[name], t.contiguous())) << name;
  }
  // header is padded to 8 bytes, as the spec recommends
  std::string bytes = read_all(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
}

TEST(Safetensors, IndependentReaderAgrees) {
  std::string path = ::testing::TempDir() + "/ind.safetensors";
  at::Tensor a = at::randn({2, 3}), b = at::randn({4});
  interp::safetensors_save(path, {{"a", a}, {"b", b}}, {{"model", "m.pt"}});
  Raw r = independent_read(path);
  EXPECT_EQ(r.header["a"]["dtype"], "F32");
  EXPECT_EQ(r.header["a"]["shape"], nlohmann::json::array({2, 3}));
  EXPECT_EQ(r.header["__metadata__"]["model"], "m.pt");
  auto va = floats_of(r, "a");
  ASSERT_EQ(va.size(), 6u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(va[i], a.view(-1)[i].item<float>());
  auto vb = floats_of(r, "b");
  for (int i = 0; i < 4; ++i) EXPECT_EQ(vb[i], b[i].item<float>());
}

TEST(Safetensors, ReadsPythonWrittenGolden) {
  // written by models/safetensors_io.py; tokens are int64 [2, 7]
  auto f = interp::safetensors_load(interp::test::fixture("tiny.golden.safetensors"));
  EXPECT_EQ(f.tensors.at("tokens").scalar_type(), at::kLong);
  EXPECT_EQ(f.tensors.at("tokens").sizes(), (std::vector<int64_t>{2, 7}));
  EXPECT_TRUE(f.metadata.count("config"));
}

TEST(Safetensors, FailedWriteLeavesNothing) {
  std::string dir = ::testing::TempDir() + "/no-such-dir";
  EXPECT_THROW(interp::safetensors_save(dir + "/x.safetensors", {{"a", at::ones({2})}}), interp::Error);
  EXPECT_FALSE(std::filesystem::exists(dir));
  std::string own = ::testing::TempDir() + "/st-atomic";
  std::filesystem::remove_all(own);
  std::filesystem::create_directories(own);
  std::string path = own + "/keep.safetensors";
  interp::safetensors_save(path, {{"a", at::ones({2})}});
  EXPECT_THROW(interp::safetensors_save(path, {{"a", at::ones({2}).to(at::kComplexFloat)}}), interp::Error);
  EXPECT_TRUE(at::equal(interp::safetensors_load(path).tensors.at("a"), at::ones({2})))
      << "a failed write must leave the old file untouched";
  for (const auto& e : std::filesystem::directory_iterator(own))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << "left behind: " << e.path();
}

TEST(Safetensors, ClearErrors) {
  auto msg = [](const std::string& bytes) {
    try {
      interp::safetensors_parse(bytes, "f.safetensors");
    } catch (const interp::Error& e) {
      return std::string(e.what());
    }
    return std::string("NO ERROR");
  };
  EXPECT_NE(msg("abc").find("shorter than the 8-byte header length"), std::string::npos);
  std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string len(8, '\0');
  len[0] = static_cast<char>(h.size());
  EXPECT_NE(msg(len + h + std::string(4, 'x')).find("outside the 4 data bytes; truncated?"), std::string::npos);
  EXPECT_EQ(msg(len + h + std::string(8, 'x')), "NO ERROR");
  std::string bad = R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})";
  len[0] = static_cast<char>(bad.size());
  EXPECT_NE(msg(len + bad + std::string(8, 'x')).find("unsupported dtype 'F33'"), std::string::npos);
  std::string overlap = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  len[0] = static_cast<char>(overlap.size());
  EXPECT_NE(msg(len + overlap + std::string(8, 'x')).find("overlap"), std::string::npos);
}

// Fuzz: byte flips, truncations, insertions and header-length edits of a valid file must either
// parse or throw interp::Error, never crash or throw anything else. (Run under ASan for more.)
TEST(Safetensors, FuzzCorruptedFiles) {
  std::string path = ::testing::TempDir() + "/fuzz.safetensors";
  interp::safetensors_save(path, {{"a", at::randn({3, 4})}, {"b", at::arange(5, at::kLong)}, {"c", at::ones({2}).to(at::kHalf)}},
                           {{"m", "x"}});
  const std::string base = read_all(path);
  std::mt19937 rng(7);
  int errors = 0, parsed = 0;
  for (int it = 0; it < 3000; ++it) {
    std::string s = base;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 5) {
        case 0: s[rng() % s.size()] = static_cast<char>(rng()); break;
        case 1: s.resize(rng() % (s.size() + 1)); break;
        case 2: if (!s.empty()) s.insert(s.begin() + static_cast<long>(rng() % s.size()), static_cast<char>(rng())); break;
        case 3: if (s.size() >= 8) s[rng() % 8] = static_cast<char>(rng()); break;
        case 4: {  // a digit in the JSON header
          size_t p = 8 + rng() % std::max<size_t>(1, std::min<size_t>(s.size(), 200) - 8);
          if (p < s.size() && std::isdigit(static_cast<unsigned char>(s[p]))) s[p] = static_cast<char>('0' + rng() % 10);
          break;
        }
      }
      if (s.empty()) break;
    }
    try {
      interp::safetensors_parse(s, "fuzz");
      ++parsed;
    } catch (const interp::Error&) {
      ++errors;
    }
  }
  std::printf("  fuzz: %d parsed, %d rejected with interp::Error\n", parsed, errors);
  EXPECT_GT(errors, 1000);
}

}  // namespace
