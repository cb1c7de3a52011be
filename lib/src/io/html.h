// Internal: small helpers for the SVG / HTML reports (patching heatmaps, circuit pages).
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <string>

namespace interp::detail {

inline std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

// Diverging blue - white - red for t in [-1, 1].
inline std::string diverging_colour(double t) {
  if (!std::isfinite(t)) return "#cccccc";
  t = std::clamp(t, -1.0, 1.0);
  const double neg[3] = {33, 102, 172}, pos[3] = {178, 24, 43}, mid[3] = {247, 247, 247};
  const double* end = t < 0 ? neg : pos;
  double a = std::abs(t);
  int rgb[3];
  for (int i = 0; i < 3; ++i) rgb[i] = static_cast<int>(std::lround(mid[i] + (end[i] - mid[i]) * a));
  return fmt::format("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]);
}

inline std::string fmt_num(double x) { return std::isfinite(x) ? fmt::format("{:.4g}", x) : "n/a"; }

}  // namespace interp::detail
