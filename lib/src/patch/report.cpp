// Pictures of patching results: an SVG heatmap and a self-contained HTML page.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "interp/report.h"
#include "io/html.h"

namespace interp {
namespace {

std::string esc(const std::string& s) { return detail::html_escape(s); }
std::string colour(double t) { return detail::diverging_colour(t); }
using detail::fmt_num;

// The values the picture shows: normalized where both baselines differ, else the raw values.
bool use_normalized(const PatchResult& r) { return std::isfinite(r.clean - r.corrupted) && std::abs(r.clean - r.corrupted) > 1e-12; }

}  // namespace

std::string heatmap_svg(const PatchResult& r, const std::vector<std::string>& pos_labels, const std::string& title) {
  const bool norm = use_normalized(r);
  at::Tensor shown = (norm ? r.normalized : r.values).to(at::kDouble).contiguous().reshape({-1});
  at::Tensor raw = r.values.to(at::kDouble).contiguous().reshape({-1});
  const int64_t n = shown.numel();
  int64_t cols = r.shape.size() >= 2 ? r.shape.back() : 1;
  int64_t rows = cols > 0 ? n / cols : 0;
  const std::string col_axis = r.axes.size() >= 2 ? r.axes.back() : "";
  std::vector<std::string> col_labels, row_labels;
  for (int64_t c = 0; c < cols; ++c) {
    if (col_axis == "pos") col_labels.push_back(static_cast<size_t>(c) < pos_labels.size() ? fmt::format("{} {}", c, pos_labels[static_cast<size_t>(c)]) : std::to_string(c));
    else if (col_axis == "head") col_labels.push_back(fmt::format("H{}", c));
    else col_labels.push_back(cols == 1 ? "all" : std::to_string(c));
  }
  for (int64_t rr = 0; rr < rows; ++rr) {
    if (r.shape.size() == 3) row_labels.push_back(fmt::format("L{} H{}", rr / r.shape[1], rr % r.shape[1]));
    else row_labels.push_back(fmt::format("L{}", rr));
  }
  const double* v = shown.data_ptr<double>();
  const double* raw_v = raw.data_ptr<double>();
  double vmax = 0;
  for (int64_t i = 0; i < n; ++i)
    if (std::isfinite(v[i])) vmax = std::max(vmax, std::abs(v[i]));
  if (vmax == 0) vmax = 1;
  const int cw = 30, ch = 22, left = r.shape.size() == 3 ? 64 : 44, top = 40;
  size_t longest = 0;
  for (const auto& l : col_labels) longest = std::max(longest, l.size());
  const int label_h = static_cast<int>(std::min<size_t>(longest, 24) * 7 + 10);
  const int width = std::max<int>({left + static_cast<int>(cols) * cw + 90, left + static_cast<int>(title.size()) * 8 + 20,
                                   left + 80 * 6 + 20}),
            height = top + static_cast<int>(rows) * ch + label_h + 10;
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n"
      "<text x=\"{}\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{}</text>\n"
      "<text x=\"{}\" y=\"32\" fill=\"#555\">{} ({}), colour centred on 0</text>\n",
      width, height, left, esc(title), left, norm ? "normalized: 0 = corrupted run, 1 = clean run" : "metric value",
      esc(r.metric));
  for (int64_t rr = 0; rr < rows; ++rr) {
    int y = top + static_cast<int>(rr) * ch;
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", left - 4, y + ch / 2 + 4, esc(row_labels[static_cast<size_t>(rr)]));
    for (int64_t c = 0; c < cols; ++c) {
      int64_t i = rr * cols + c;
      std::string label = static_cast<size_t>(i) < r.labels.size() ? r.labels[static_cast<size_t>(i)] : "";
      s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" stroke=\"#fff\"><title>{}: {} {}"
                       "{}</title></rect>\n",
                       left + static_cast<int>(c) * cw, y, cw, ch, colour(v[i] / vmax), esc(label), r.metric, fmt_num(raw_v[i]),
                       norm ? fmt::format(", normalized {}", fmt_num(v[i])) : "");
    }
  }
  int ybase = top + static_cast<int>(rows) * ch + 6;
  for (int64_t c = 0; c < cols; ++c) {
    int x = left + static_cast<int>(c) * cw + cw / 2;
    std::string l = col_labels[static_cast<size_t>(c)];
    if (l.size() > 24) l = l.substr(0, 23) + "~";
    s += fmt::format("<text x=\"{}\" y=\"{}\" transform=\"rotate(60 {} {})\">{}</text>\n", x, ybase, x, ybase, esc(l));
  }
  // Legend: a vertical bar from -vmax (bottom) to +vmax (top).
  int lx = left + static_cast<int>(cols) * cw + 20, lh = std::max(60, static_cast<int>(rows) * ch);
  s += "<defs><linearGradient id=\"scale\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
  for (int k = 0; k <= 10; ++k)
    s += fmt::format("<stop offset=\"{}\" stop-color=\"{}\"/>", k / 10.0, colour(-1.0 + k / 5.0));
  s += "</linearGradient></defs>\n";
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"{}\" fill=\"url(#scale)\" stroke=\"#999\"/>\n", lx, top, lh);
  s += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", lx + 16, top + 8, fmt_num(vmax));
  s += fmt::format("<text x=\"{}\" y=\"{}\">0</text>\n", lx + 16, top + lh / 2 + 4);
  s += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", lx + 16, top + lh, fmt_num(-vmax));
  s += "</svg>\n";
  return s;
}

std::string report_html(const PatchResult& r, const std::string& svg, const std::string& title,
                        const std::vector<std::pair<std::string, std::string>>& facts) {
  std::string h = fmt::format(
      "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{0}</title>\n"
      "<style>body{{font-family:sans-serif;margin:2em;max-width:80em}}table{{border-collapse:collapse}}"
      "td,th{{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}}</style></head><body>\n"
      "<h1>{0}</h1>\n",
      esc(title));
  h += "<p>Hover a cell for its exact values. The numbers are in <code>results.json</code>.</p>\n";
  h += svg;
  h += "<h2>Run</h2>\n<table>\n";
  auto row = [&](const std::string& k, const std::string& v) { h += fmt::format("<tr><th>{}</th><td>{}</td></tr>\n", esc(k), esc(v)); };
  for (const auto& [k, v] : facts) row(k, v);
  row("metric", r.metric);
  row("direction", r.direction);
  row(r.direction.find("ablate") != std::string::npos ? "metric without ablation" : "clean run", fmt_num(r.clean));
  if (r.direction.find("ablate") == std::string::npos) row("corrupted run", fmt_num(r.corrupted));
  row("mode", r.stats.mode + (r.stats.fallback.empty() ? "" : " (" + r.stats.fallback + ")"));
  row("forwards", std::to_string(r.stats.forwards));
  row("seconds", fmt::format("{:.3f}", r.stats.seconds));
  h += "</table>\n<h2>Largest effects</h2>\n<table><tr><th>site</th><th>value</th><th>normalized</th></tr>\n";
  at::Tensor v = r.values.to(at::kDouble).contiguous().reshape({-1}), nz = r.normalized.to(at::kDouble).contiguous().reshape({-1});
  std::vector<int64_t> idx(static_cast<size_t>(v.numel()));
  std::iota(idx.begin(), idx.end(), 0);
  const double* pv = v.data_ptr<double>();
  const double* pn = nz.data_ptr<double>();
  double ref = r.direction.find("ablate") != std::string::npos ? r.clean : r.corrupted;
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return std::abs(pv[a] - ref) > std::abs(pv[b] - ref); });
  for (size_t k = 0; k < std::min<size_t>(10, idx.size()); ++k) {
    int64_t i = idx[k];
    h += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                     esc(static_cast<size_t>(i) < r.labels.size() ? r.labels[static_cast<size_t>(i)] : ""), fmt_num(pv[i]), fmt_num(pn[i]));
  }
  h += "</table>\n</body></html>\n";
  return h;
}

}  // namespace interp
