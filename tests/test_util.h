// Helpers shared by the tests: fixture paths and tensor comparison that reports the max difference.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <ostream>
#include <string>

#include "interp/hooks.h"

namespace interp::test {

inline std::string fixture(const std::string& name) { return std::string(INTERP_FIXTURES) + "/" + name; }

// Runs a shell command; its exit code (-1 if it did not exit normally) and stdout + stderr together.
struct ShellResult {
  int code = -1;
  std::string out;
};
inline ShellResult shell(const std::string& cmd) {
  ShellResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// Equal values (infinities of the same sign included: a -inf attention mask) differ by 0.
inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor x = a.to(at::kCPU, at::kDouble), y = b.to(at::kCPU, at::kDouble);
  return at::where(x == y, at::zeros_like(x), x - y).abs().max().item<double>();
}

// Same shape and within tol; the message names what was compared and the max difference.
inline ::testing::AssertionResult close(const at::Tensor& got, const at::Tensor& want, double tol,
                                        const std::string& what) {
  if (got.sizes() != want.sizes())
    return ::testing::AssertionFailure() << what << ": shape " << got.sizes() << " != golden " << want.sizes();
  double d = max_abs_diff(got, want);
  if (!(d <= tol)) return ::testing::AssertionFailure() << what << ": max diff " << d << " > " << tol;
  return ::testing::AssertionSuccess() << what << ": max diff " << d;
}

// A fixture model and its golden file (tests/fixtures), with the name map it needs ("" for
// TransformerLens names).
struct ModelFixture {
  std::string model, golden, name_map;
};
inline std::ostream& operator<<(std::ostream& os, const ModelFixture& f) { return os << f.model; }

inline HookedModel load(const ModelFixture& f, bool edge_points = false) {
  LoadOptions o;
  o.edge_points = edge_points;
  if (!f.name_map.empty()) o.name_map = fixture(f.name_map);
  return HookedModel::load(fixture(f.model), o);
}

}  // namespace interp::test
