// The bad inputs people really make, through the interp command line: each case is a command, the
// exit code it must give, a fragment its message must hold, and files that must not exist after it.
// No case may crash, leak a raw library backtrace ("terminate called", "Exception raised from"), or
// leave a temporary file (*.tmp.PID) behind.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "test_util.h"

using interp::test::fixture;
namespace fs = std::filesystem;

namespace {

struct Case {
  std::string args;                 // after `interp`; {d} is the case folder
  int code;                         // expected exit code
  std::string message;              // expected in stdout + stderr
  std::vector<std::string> absent;  // paths (with {d}) that must not exist afterwards
  std::string shell_prefix;         // e.g. "ulimit -f 64;"
};

std::string subst(std::string s, const std::string& d) {
  for (size_t p; (p = s.find("{d}")) != std::string::npos;) s.replace(p, 3, d);
  return s;
}

std::string case_dir(const std::string& name) {
  std::string d = ::testing::TempDir() + "interp-inputs-" + name + "-" + std::to_string(::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void no_temporaries(const std::string& d, const std::string& what) {
  for (const auto& e : fs::recursive_directory_iterator(d, fs::directory_options::skip_permission_denied))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << what << ": left behind " << e.path();
}

void run_cases(const std::string& group, const std::vector<Case>& cases, const std::string& d) {
  for (const Case& c : cases) {
    const std::string args = subst(c.args, d);
    const std::string cmd = subst(c.shell_prefix, d) + " " + std::string(INTERP_BIN) + " " + args;
    auto r = interp::test::shell("(" + cmd + ")");
    EXPECT_EQ(r.code, c.code) << group << ": interp " << args << "\n" << r.out;
    EXPECT_NE(r.out.find(subst(c.message, d)), std::string::npos)
        << group << ": interp " << args << "\nexpected: " << subst(c.message, d) << "\ngot: " << r.out;
    EXPECT_EQ(r.out.find("terminate called"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("Exception raised from"), std::string::npos) << "a raw c10 backtrace:\n" << r.out;
    for (const std::string& p : c.absent)
      EXPECT_FALSE(fs::exists(subst(p, d))) << group << ": interp " << args << " left " << subst(p, d);
    no_temporaries(d, group + ": interp " + args);
  }
}

}  // namespace

// Writers replace only regular files, and a file-size limit (as a full disk) is an error naming the
// file, with nothing left under the final name or as a temporary.
TEST(Inputs, WritersNeverReplaceOtherFilesAndReportAFullDisk) {
  const std::string d = case_dir("writers");
  const std::string m = fixture("tiny_script.pt");
  ASSERT_EQ(::mkfifo((d + "/fifo").c_str(), 0644), 0);
  fs::create_directories(d + "/folder.safetensors");
  fs::create_symlink(d + "/elsewhere.safetensors", d + "/link.safetensors");
  const std::string cache = "cache " + m + " --tokens 1,2,3 --hooks blocks.0.hook_resid_pre --out ";
  const std::vector<Case> cases = {
      {cache + "{d}/fifo", 1, "{d}/fifo: is a FIFO; interp writes its outputs as regular files", {}},
      {cache + "/dev/null", 1, "/dev/null: is a device", {}},
      {cache + "{d}/folder.safetensors", 1, "is a folder", {}},
      {cache + "{d}/link.safetensors", 1, "is a symbolic link", {"{d}/elsewhere.safetensors"}},
      {"cache " + m + " --tokens 1,2,3 --out {d}/big.safetensors", 1,
       "{d}/big.safetensors.tmp.", {"{d}/big.safetensors"}, "ulimit -f 8;"},
      {"cache " + m + " --tokens 1,2,3 --out {d}/big2.safetensors", 1,
       "the disk, quota or file-size limit is full", {"{d}/big2.safetensors"}, "ulimit -f 8;"},
  };
  run_cases("writers", cases, d);
  struct stat st;
  ASSERT_EQ(::lstat((d + "/fifo").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode)) << "the FIFO was replaced";
  ASSERT_EQ(::lstat("/dev/null", &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode)) << "/dev/null was replaced";
  EXPECT_TRUE(fs::is_symlink(d + "/link.safetensors"));
}
