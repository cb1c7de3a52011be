// Circuit outputs: edges.json, faithfulness.json, the graph and the curves as SVG, one HTML page.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

#include "interp/circuits.h"
#include "io/html.h"

namespace interp {
namespace {

using json = nlohmann::json;
using detail::fmt_num;
using detail::html_escape;

json num(double x) { return std::isfinite(x) ? json(x) : json(nullptr); }

json choice_json(const AblationChoice& c) {
  return {{"ablation", ablation_name(c.kind)},
          {"direction", c.restore ? "restore" : "noise"},
          {"positions", c.task_positions ? "task" : "all"},
          {"level", c.level == CircuitLevel::Edge ? "edge" : "node"},
          {"seed", c.seed},
          {"label", c.label()}};
}

// Curve colours: one per choice (cycled).
const char* kPalette[] = {"#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02",
                          "#a6761d", "#666666", "#1f78b4", "#b2df8a", "#fb9a99", "#cab2d6"};

}  // namespace

std::string scores_json(const CircuitGraph& graph, const CircuitScores& s) {
  json j;
  j["method"] = method_name(s.method);
  j["level"] = graph.level == CircuitLevel::Edge ? "edge" : "node";
  j["clean_metric"] = num(s.clean_metric);
  j["corrupted_metric"] = num(s.corrupted_metric);
  j["forwards"] = s.forwards;
  j["backwards"] = s.backwards;
  j["rows"] = s.rows;
  j["seconds"] = s.seconds;
  auto rank = s.ranking();
  std::vector<int64_t> rank_of(rank.size());
  for (size_t i = 0; i < rank.size(); ++i) rank_of[static_cast<size_t>(rank[i])] = static_cast<int64_t>(i) + 1;
  json units = json::array();
  for (size_t u = 0; u < s.units.size(); ++u) {
    json e = {{"name", s.units[u]}, {"score", num(s.scores[static_cast<int64_t>(u)].item<double>())}, {"rank", rank_of[u]}};
    if (graph.level == CircuitLevel::Edge) {
      const auto& ed = graph.edges[u];
      e["sender"] = graph.nodes[static_cast<size_t>(ed.sender)].name;
      e["receiver"] = graph.nodes[static_cast<size_t>(ed.receiver)].name;
      if (ed.input) e["input"] = std::string(1, ed.input);
    }
    if (!s.kept.empty()) e["kept"] = bool(s.kept[u]);
    units.push_back(e);
  }
  j[graph.level == CircuitLevel::Edge ? "edges" : "nodes"] = units;
  return j.dump(1) + "\n";
}

std::string faithfulness_json(const FaithfulnessReport& r) {
  json j;
  j["sizes"] = r.sizes;
  json spread = json::array();
  for (double x : r.spread) spread.push_back(num(x));
  j["spread"] = spread;
  j["forwards"] = r.forwards;
  j["seconds"] = r.seconds;
  json curves = json::array();
  for (const auto& c : r.curves) {
    json cj = choice_json(c.choice);
    cj["full"] = num(c.full);
    cj["empty"] = num(c.empty);
    json m = json::array(), n = json::array();
    for (double x : c.metric) m.push_back(num(x));
    for (double x : c.normalized) n.push_back(num(x));
    cj["metric"] = m;
    cj["normalized"] = n;
    for (const auto& [pct, size] : c.smallest) cj["smallest_" + std::to_string(pct)] = size < 0 ? json(nullptr) : json(size);
    curves.push_back(cj);
  }
  j["curves"] = curves;
  return j.dump(1) + "\n";
}

std::string circuit_svg(const CircuitGraph& g, const CircuitScores& s, int64_t keep) {
  // Rows by layer (embed at the bottom, logits at the top), the layer's heads then its MLP.
  const int row_h = 110, col_w = 90, margin = 60;
  int64_t per_row = g.n_heads + (g.has_mlp ? 1 : 0);
  const int width = std::max(720, static_cast<int>(margin * 2 + col_w * std::max<int64_t>(per_row, 1)));
  const int height = margin * 2 + row_h * (g.n_layers + 1);
  std::vector<std::pair<double, double>> pos(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const auto& n = g.nodes[i];
    int row = n.kind == CircuitNode::Kind::Embed ? 0 : n.kind == CircuitNode::Kind::Logits ? g.n_layers + 1 : n.layer + 1;
    double y = height - margin - row * row_h * (g.n_layers + 1.0) / (g.n_layers + 1.0);
    y = height - margin - static_cast<double>(row) * (height - 2.0 * margin) / (g.n_layers + 1.0);
    const double x0 = (width - col_w * static_cast<double>(per_row)) / 2.0;  // the rows, centred
    double x = width / 2.0;
    if (n.kind == CircuitNode::Kind::Head) x = x0 + col_w * (n.head + 0.5);
    if (n.kind == CircuitNode::Kind::Mlp) x = x0 + col_w * (static_cast<double>(g.n_heads) + 0.5);
    pos[i] = {x, y};
  }
  auto rank = s.ranking();
  keep = std::clamp<int64_t>(keep, 0, static_cast<int64_t>(rank.size()));
  double smax = 0;
  for (int64_t i = 0; i < keep; ++i) smax = std::max(smax, std::abs(s.scores[rank[static_cast<size_t>(i)]].item<double>()));
  std::string o = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n"
      "<text x=\"8\" y=\"16\" font-size=\"13\">{} {}: {} {} of {}; width by |score|, blue positive, red negative</text>\n"
      "<text x=\"8\" y=\"31\" fill=\"#555\">{}</text>\n",
      width, height, method_name(s.method), g.level == CircuitLevel::Edge ? "edges" : "nodes",
      s.kept.empty() ? "the top" : "the kept", keep, rank.size(),
      s.method == CircuitMethod::ACDC ? "score: the objective's increase when the unit was removed"
                                      : "score: the metric's change when the unit alone is ablated");
  std::vector<bool> in(g.nodes.size(), false);
  for (int64_t i = 0; i < keep; ++i) {
    int64_t u = rank[static_cast<size_t>(i)];
    double v = s.scores[u].item<double>();
    double w = 0.8 + 7.0 * (smax > 0 ? std::abs(v) / smax : 0);
    std::string colour = detail::diverging_colour(smax > 0 ? -v / smax : 0);  // blue: positive
    if (g.level == CircuitLevel::Edge) {
      const auto& e = g.edges[static_cast<size_t>(u)];
      auto [x1, y1] = pos[static_cast<size_t>(e.sender)];
      auto [x2, y2] = pos[static_cast<size_t>(e.receiver)];
      double dx = e.input == 'q' ? -12 : e.input == 'k' ? 0 : e.input == 'v' ? 12 : 0;
      x2 += dx;
      y2 += 14;
      y1 -= 14;
      o += fmt::format("<path d=\"M{:.1f},{:.1f} C{:.1f},{:.1f} {:.1f},{:.1f} {:.1f},{:.1f}\" fill=\"none\" stroke=\"{}\" "
                       "stroke-width=\"{:.2f}\" stroke-opacity=\"0.8\"><title>{} score {}</title></path>\n",
                       x1, y1, x1, (y1 + y2) / 2, x2, (y1 + y2) / 2, x2, y2, colour, w, html_escape(e.name), fmt_num(v));
      in[static_cast<size_t>(e.sender)] = in[static_cast<size_t>(e.receiver)] = true;
    } else {
      in[static_cast<size_t>(g.unit_nodes()[static_cast<size_t>(u)])] = true;
    }
  }
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    auto [x, y] = pos[i];
    const auto& n = g.nodes[i];
    bool head = n.kind == CircuitNode::Kind::Head;
    o += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{}\" height=\"28\" rx=\"5\" fill=\"{}\" stroke=\"#333\" "
                     "stroke-width=\"{}\"><title>{}</title></rect>\n",
                     x - (head ? 26 : 34), y - 14, head ? 52 : 68, in[i] ? "#fff7bc" : "#f4f4f4", in[i] ? 1.5 : 0.5,
                     html_escape(n.name));
    o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", x, y + 4, html_escape(n.name));
    if (head && g.level == CircuitLevel::Edge)
      o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"8\" fill=\"#777\" text-anchor=\"middle\">q k v</text>\n",
                       x, y + 24);
  }
  o += "</svg>\n";
  return o;
}

std::string faithfulness_svg(const FaithfulnessReport& r) {
  const int W = 860, H = 380, left = 56, right = 300, top = 30, bottom = 44;
  const int pw = W - left - right, ph = H - top - bottom;
  const double lo = -0.25, hi = 1.25;
  size_t n = r.sizes.size();
  auto X = [&](size_t i) { return left + (n > 1 ? pw * static_cast<double>(i) / static_cast<double>(n - 1) : pw / 2.0); };
  auto Y = [&](double v) { return top + ph * (hi - std::clamp(v, lo, hi)) / (hi - lo); };
  std::string o = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n"
      "<text x=\"{}\" y=\"16\" font-size=\"13\">faithfulness (0 = empty circuit, 1 = full model) by units kept</text>\n",
      W, H, left);
  for (double v : {0.0, 0.5, 0.8, 0.9, 1.0}) {
    o += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\" stroke-dasharray=\"{}\"/>\n", left,
                     left + pw, Y(v), Y(v), v == 0.0 || v == 1.0 ? "#999" : "#ddd", v == 0.9 ? "4,3" : "");
    o += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", left - 6, Y(v) + 4, v);
  }
  for (size_t i = 0; i < n; ++i)
    o += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", X(i), top + ph + 16, r.sizes[i]);
  o += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">units kept (top by |score|)</text>\n", left + pw / 2,
                   H - 8);
  for (size_t c = 0; c < r.curves.size(); ++c) {
    const auto& cv = r.curves[c];
    const char* col = kPalette[c % (sizeof(kPalette) / sizeof(kPalette[0]))];
    std::string pts;
    for (size_t i = 0; i < n; ++i)
      if (std::isfinite(cv.normalized[i])) pts += fmt::format("{:.1f},{:.1f} ", X(i), Y(cv.normalized[i]));
    const char* dash = cv.choice.level == CircuitLevel::Node ? "5,3" : "";
    o += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\" stroke-dasharray=\"{}\">"
                     "<title>{}</title></polyline>\n",
                     pts, col, dash, html_escape(cv.choice.label()));
    double ly = top + 14.0 * static_cast<double>(c);
    o += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\" stroke-width=\"2\" "
                     "stroke-dasharray=\"{}\"/><text x=\"{}\" y=\"{:.1f}\" font-size=\"10\">{}</text>\n",
                     left + pw + 10, left + pw + 28, ly, ly, col, dash, left + pw + 32, ly + 3,
                     html_escape(cv.choice.label()));
  }
  o += "</svg>\n";
  return o;
}

std::string circuit_html(const CircuitGraph& g, const CircuitScores& s, const FaithfulnessReport& r,
                         const std::string& graph_svg, const std::string& curves_svg,
                         const std::vector<std::pair<std::string, std::string>>& facts) {
  std::string title = fmt::format("circuit: {} ({} level)", method_name(s.method), g.level == CircuitLevel::Edge ? "edge" : "node");
  std::string h = fmt::format(
      "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{0}</title>\n"
      "<style>body{{font-family:sans-serif;margin:2em;max-width:90em}}table{{border-collapse:collapse}}"
      "td,th{{padding:2px 8px;text-align:right;border-bottom:1px solid #ddd}}td:first-child,th:first-child{{text-align:left}}"
      ".bad{{color:#b2182b}}</style></head><body>\n<h1>{0}</h1>\n",
      html_escape(title));
  h += "<h2>Run</h2>\n<table>\n";
  auto row = [&](const std::string& k, const std::string& v) {
    h += fmt::format("<tr><th>{}</th><td>{}</td></tr>\n", html_escape(k), html_escape(v));
  };
  for (const auto& [k, v] : facts) row(k, v);
  row("clean metric", fmt_num(s.clean_metric));
  row("corrupted metric", fmt_num(s.corrupted_metric));
  row("forwards / backwards", fmt::format("{} / {}", s.forwards, s.backwards));
  row("seconds", fmt::format("{:.3f}", s.seconds));
  h += "</table>\n<h2>Graph</h2>\n<p>Hover an edge for its name and score. Every score is in <code>edges.json</code>.</p>\n";
  h += graph_svg;
  h += "<h2>Faithfulness under every ablation choice</h2>\n<p>Each number: (circuit - empty) / (full - empty) for the "
       "top-k units. <b>spread</b> is max - min over the choices: how much the conclusion depends on the ablation.</p>\n";
  h += curves_svg;
  h += "<table><tr><th>ablation / direction / positions / level</th><th>full</th><th>empty</th>";
  for (int64_t k : r.sizes) h += fmt::format("<th>k={}</th>", k);
  h += "<th>80%</th><th>90%</th><th>95%</th></tr>\n";
  for (const auto& c : r.curves) {
    h += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td>", html_escape(c.choice.label()), fmt_num(c.full), fmt_num(c.empty));
    for (double v : c.normalized) h += fmt::format("<td>{}</td>", std::isfinite(v) ? fmt::format("{:.3f}", v) : "n/a");
    for (int pct : {80, 90, 95}) {
      int64_t k = c.smallest.at(pct);
      h += fmt::format("<td>{}</td>", k < 0 ? "none" : std::to_string(k));
    }
    h += "</tr>\n";
  }
  h += "<tr><th>spread</th><td></td><td></td>";
  for (double v : r.spread) h += fmt::format("<td class=\"{}\">{}</td>", v > 0.2 ? "bad" : "", std::isfinite(v) ? fmt::format("{:.3f}", v) : "n/a");
  h += "<td></td><td></td><td></td></tr>\n</table>\n";
  h += "<h2>Top units</h2>\n<table><tr><th>unit</th><th>score</th>";
  if (!s.kept.empty()) h += "<th>kept</th>";
  h += "</tr>\n";
  auto rank = s.ranking();
  for (size_t i = 0; i < std::min<size_t>(30, rank.size()); ++i) {
    int64_t u = rank[i];
    h += fmt::format("<tr><td>{}</td><td>{}</td>", html_escape(s.units[static_cast<size_t>(u)]), fmt_num(s.scores[u].item<double>()));
    if (!s.kept.empty()) h += fmt::format("<td>{}</td>", s.kept[static_cast<size_t>(u)] ? "yes" : "");
    h += "</tr>\n";
  }
  h += "</table>\n</body></html>\n";
  return h;
}

}  // namespace interp
