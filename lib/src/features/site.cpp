// The feature dashboard: a static site that opens from disk (no server, no fetch: data travels in
// <script> files, which browsers load from file:// URLs), and the terminal and JSON summaries.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "interp/error.h"
#include "interp/features.h"
#include "interp/tokenizer.h"
#include "interp/util.h"

namespace interp {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

double r4(double x) { return std::isfinite(x) ? std::round(x * 1e4) / 1e4 : 0.0; }

// A piece as shown: sentencepiece's word-start mark becomes a space.
std::string show_piece(const Tokenizer& tok, int32_t id) {
  if (id < 0 || id >= tok.vocab_size()) return fmt::format("<{}>", id);
  std::string p = tok.piece(id);
  std::string out;
  for (size_t i = 0; i < p.size();) {
    if (p.compare(i, 3, "\xE2\x96\x81") == 0) {
      out += ' ';
      i += 3;
    } else {
      out += p[i++];
    }
  }
  return out;
}

// The commonest activating tokens among a latent's top activations.
std::vector<int32_t> top_tokens(const LatentStats& l, size_t n) {
  std::map<int32_t, int> count;
  for (const auto& w : l.top) count[w.tokens[static_cast<size_t>(w.center)]]++;
  std::vector<std::pair<int32_t, int>> v(count.begin(), count.end());
  std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::vector<int32_t> out;
  for (size_t i = 0; i < v.size() && i < n; ++i) out.push_back(v[i].first);
  return out;
}

std::vector<const LatentStats*> by_purity(const FeatureStats& s) {
  std::vector<const LatentStats*> v;
  for (const auto& l : s.latents)
    if (l.purity >= 0) v.push_back(&l);
  std::stable_sort(v.begin(), v.end(), [](const LatentStats* a, const LatentStats* b) {
    if (a->purity != b->purity) return a->purity > b->purity;
    if (a->distinct_tokens != b->distinct_tokens) return a->distinct_tokens > b->distinct_tokens;
    return a->firings > b->firings;
  });
  return v;
}

json window_json(const FeatureWindow& w) {
  json acts = json::array();
  for (float a : w.acts) acts.push_back(r4(a));
  return {{"row", w.row}, {"c", w.center}, {"v", r4(w.value)}, {"t", w.tokens}, {"a", acts}};
}

json counts_json(const FeatureStats& s) {
  return {{"tokens", s.tokens},           {"d_sae", s.d_sae},   {"live", s.live()},
          {"dead", s.d_sae - s.live()},   {"scored", s.scored()}, {"pure", s.pure()},
          {"pure_fraction_of_live", r4(s.pure_fraction())},
          {"pure_multi_token", s.pure_multi_token()}, {"pure_multi_token_fraction_of_live", r4(s.pure_multi_token_fraction())},
          {"min_distinct_tokens", s.min_distinct},
          {"pure_firings", s.pure_firings()}, {"pure_firings_fraction_of_live", r4(s.pure_firings_fraction())},
          {"pure_fraction_of_scored", s.scored() ? r4(static_cast<double>(s.pure()) / static_cast<double>(s.scored())) : 0.0},
          {"purity_threshold", s.purity_threshold}};
}

void write(const fs::path& path, const std::string& text) { write_text_file(path.string(), text); }

const char* kStyle = R"CSS(
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px}h2{font-size:16px;margin-top:24px}
table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{cursor:pointer;user-select:none;background:#f6f6f6}th.sorted{background:#e4ecf7}
.num{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#777}
.ctx{font-family:ui-monospace,monospace;font-size:13px;white-space:pre-wrap;margin:2px 0;padding:2px 4px;border-left:3px solid #eee}
.tok{border-radius:2px}.max{outline:2px solid #b2182b;font-weight:bold}
.bar{display:inline-block;height:10px;background:#4a7bd0;vertical-align:middle}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:24px}
code{background:#f4f4f4;padding:0 3px}
)CSS";

const char* kIndexHtml = R"HTML(<!doctype html>
<html><head><meta charset="utf-8"><title>interp features</title><style>%STYLE%</style>
<script src="data/vocab.js"></script><script src="data/index.js"></script></head>
<body><h1 id="title">interp features</h1><div id="meta"></div>
<p class="muted">Click a column to sort. Purity: the share of the commonest part-of-speech tag among a
latent's top activations (Brown tags, modifiers such as -tl dropped); blank when too few are tagged.
Distinct: how many different tokens those top activations are. Purity (all firings): the same over
every firing, weighted by activation.</p>
<table id="latents"><thead><tr>
<th data-k="0" class="num">latent</th><th data-k="1" class="num">density</th><th data-k="2" class="num">max act</th>
<th data-k="3" class="num">purity</th><th data-k="4">top tag</th><th data-k="7" class="num">distinct</th><th data-k="8" class="num">purity (all firings)</th><th>top tokens</th><th>promotes</th></tr></thead>
<tbody></tbody></table>
<script>
"use strict";
const D = INTERP_INDEX, V = INTERP_VOCAB;
const tok = i => JSON.stringify(V[i] === undefined ? "<" + i + ">" : V[i]);
document.getElementById("title").textContent = D.meta.title;
const m = D.meta, c = m.counts;
let html = "<p>SAE <code>" + m.sae + "</code> on <code>" + m.hook + "</code>, " + c.tokens.toLocaleString() +
  " tokens of <code>" + m.source + "</code>. " + c.live + " of " + c.d_sae + " latents fired (" + c.dead +
  " dead). Latents with purity &ge; " + c.purity_threshold + ": <b>" + (100 * c.pure_fraction_of_live).toFixed(1) +
  "%</b> of live latents (" + c.pure + "); over &ge; " + c.min_distinct_tokens + " distinct tokens (a part of speech, not one word): <b>" +
  (100 * c.pure_multi_token_fraction_of_live).toFixed(1) + "%</b> (" + c.pure_multi_token + "); over all firings, activation-weighted: <b>" +
  (100 * c.pure_firings_fraction_of_live).toFixed(1) + "%</b>";
if (m.baseline) html += ". Random directions with the same k: <b>" + (100 * m.baseline.pure_fraction_of_live).toFixed(1) +
  "%</b>, <b>" + (100 * m.baseline.pure_multi_token_fraction_of_live).toFixed(1) + "%</b> and <b>" +
  (100 * m.baseline.pure_firings_fraction_of_live).toFixed(1) + "%</b>";
html += ".</p><p class='muted'>Promoted tokens: " + m.logit_path + "</p>";
document.getElementById("meta").innerHTML = html;
const body = document.querySelector("#latents tbody");
let rows = D.latents.slice(), key = 3, desc = true;
function render() {
  rows.sort((a, b) => { const x = a[key], y = b[key];
    const r = (x === null) - (y === null) || (x < y ? -1 : x > y ? 1 : 0) * (desc ? -1 : 1); return r || a[0] - b[0]; });
  body.innerHTML = rows.map(r => "<tr><td class='num'><a href='latent.html#" + r[0] + "'>" + r[0] + "</a></td><td class='num'>" +
    (100 * r[1]).toPrecision(3) + "%</td><td class='num'>" + r[2].toPrecision(4) + "</td><td class='num'>" +
    (r[3] === null ? "" : r[3].toFixed(2)) + "</td><td>" + (r[4] || "") + "</td><td class='num'>" + r[7] + "</td><td class='num'>" + (r[8] === null ? "" : r[8].toFixed(2)) + "</td><td>" +
    r[5].map(tok).join(" ").replace(/</g, "&lt;") + "</td><td>" + r[6].map(tok).join(" ").replace(/</g, "&lt;") +
    "</td></tr>").join("");
  document.querySelectorAll("th").forEach(th => th.classList.toggle("sorted", +th.dataset.k === key));
}
document.querySelectorAll("th[data-k]").forEach(th => th.onclick = () => {
  const k = +th.dataset.k; desc = k === key ? !desc : k !== 0 && k !== 4; key = k; render(); });
render();
</script></body></html>
)HTML";

const char* kLatentHtml = R"HTML(<!doctype html>
<html><head><meta charset="utf-8"><title>interp latent</title><style>%STYLE%</style>
<script src="data/vocab.js"></script><script src="data/meta.js"></script></head>
<body><p><a href="index.html">&larr; all latents</a></p><h1 id="title">latent</h1><div id="stats"></div>
<div class="grid"><div><h2>Activation histogram (firings per log10 activation bin)</h2><div id="hist"></div></div>
<div><h2>Tags of the top activations</h2><div id="tags"></div></div></div>
<div class="grid"><div><h2>Promotes</h2><table id="pro"></table></div><div><h2>Suppresses</h2><table id="sup"></table></div></div>
<p class="muted" id="path"></p>
<h2>Top activations</h2><div id="top"></div><h2>Random firings, by band of the max activation</h2><div id="samples"></div>
<script>
"use strict";
const V = INTERP_VOCAB, M = INTERP_META;
const esc = s => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const piece = i => V[i] === undefined ? "<" + i + ">" : V[i];
function ctx(w, max) {
  return "<div class='ctx'>" + w.t.map((t, i) => {
    const a = Math.max(0, Math.min(1, w.a[i] / max));
    return "<span class='tok" + (i === w.c ? " max" : "") + "' title='" + w.a[i] + "' style='background:rgba(255,102,0," +
      a.toFixed(3) + ")'>" + esc(piece(t)) + "</span>"; }).join("") + " <span class='muted'>" + w.v.toFixed(3) + "</span></div>";
}
function table(id, list) {
  document.getElementById(id).innerHTML = list.map(p => "<tr><td><code>" + esc(JSON.stringify(piece(p[0]))) +
    "</code></td><td class='num'>" + p[1].toFixed(3) + "</td></tr>").join("");
}
function INTERP_LATENT(d) {
  document.title = "latent " + d.index;
  document.getElementById("title").textContent = "Latent " + d.index;
  document.getElementById("stats").innerHTML = "<p>Fired on " + d.firings.toLocaleString() + " of " + M.tokens.toLocaleString() +
    " tokens (density " + (100 * d.density).toPrecision(3) + "%); max activation " + d.max.toPrecision(4) + ", mean " +
    d.mean.toPrecision(4) + "; purity " + (d.purity === null ? "not scored (too few tagged top activations)" : d.purity.toFixed(2)) +
    " over " + d.distinct + " distinct tokens; over all firings " + (d.firing_purity === null ? "not scored" :
    d.firing_purity.toFixed(2) + " (" + esc(d.firing_tag) + ")") + ".</p>";
  const hmax = Math.max(1, ...d.hist), W = 520, H = 120, bw = W / d.hist.length;
  let svg = "<svg width='" + W + "' height='" + (H + 20) + "' xmlns='http://www.w3.org/2000/svg'>";
  d.hist.forEach((n, i) => { const h = H * n / hmax;
    svg += "<rect x='" + (i * bw) + "' y='" + (H - h) + "' width='" + (bw - 1) + "' height='" + h + "' fill='#4a7bd0'><title>" +
      n + " firings, log10 act in [" + M.edges[i].toFixed(2) + ", " + M.edges[i + 1].toFixed(2) + ")</title></rect>"; });
  [0, d.hist.length / 2, d.hist.length].forEach(i => svg += "<text x='" + Math.min(W - 30, i * bw) + "' y='" + (H + 15) +
    "' font-size='11'>1e" + M.edges[i].toFixed(1) + "</text>");
  document.getElementById("hist").innerHTML = svg + "</svg>";
  const tagged = d.tags.reduce((s, t) => s + t[1], 0) || 1;
  document.getElementById("tags").innerHTML = d.tags.length ? d.tags.slice(0, 8).map(t => "<div><code>" + esc(t[0]) +
    "</code> <span class='bar' style='width:" + (200 * t[1] / tagged) + "px'></span> " + t[1] + "</div>").join("") +
    "<p class='muted'>" + d.tagged + " tagged among the top " + M.tag_top + " activations</p>" : "<p class='muted'>no tags</p>";
  table("pro", d.promoted); table("sup", d.suppressed);
  document.getElementById("path").textContent = M.logit_path ? "Promoted/suppressed: " + M.logit_path : "";
  document.getElementById("top").innerHTML = d.top.map(w => ctx(w, d.max)).join("");
  const bands = [[2 / 3, 1.01, "upper third"], [1 / 3, 2 / 3, "middle third"], [0, 1 / 3, "lower third"]];
  document.getElementById("samples").innerHTML = bands.map(b => { const ws = d.samples.filter(w => w.v / d.max >= b[0] && w.v / d.max < b[1]);
    return "<h3>" + b[2] + " of the max (" + ws.length + ")</h3>" + ws.map(w => ctx(w, d.max)).join(""); }).join("");
}
const i = parseInt(location.hash.slice(1), 10);
if (Number.isInteger(i) && i >= 0 && i < M.d_sae) {
  const s = document.createElement("script");
  s.src = "data/latents/" + i + ".js";
  s.onerror = () => document.getElementById("stats").textContent = "Latent " + i + " never fired: no page.";
  document.head.appendChild(s);
} else document.getElementById("stats").textContent = "Open latent.html#N for latent N (0 to " + (M.d_sae - 1) + ").";
window.addEventListener("hashchange", () => location.reload());
</script></body></html>
)HTML";

std::string with_style(std::string page) {
  const std::string key = "%STYLE%";
  page.replace(page.find(key), key.size(), kStyle);
  return page;
}

}  // namespace

std::string FeatureStats::summary_json() const {
  json j = counts_json(*this);
  j["hook"] = hook;
  j["source"] = source;
  j["logit_path"] = logit_path;
  json top = json::array();
  auto v = by_purity(*this);
  for (size_t i = 0; i < v.size() && i < 10; ++i)
    top.push_back({{"latent", v[i]->index}, {"purity", r4(v[i]->purity)}, {"tag", v[i]->tags.front().first},
                   {"distinct_tokens", v[i]->distinct_tokens},
                   {"density", v[i]->density}, {"top_token_ids", top_tokens(*v[i], 5)}});
  j["top_by_purity"] = top;
  return dump(j);
}

std::string FeatureStats::terminal_summary(const Tokenizer* tok, int n) const {
  std::string out = fmt::format(
      "{} of {} latents live; {} scored for purity; {} ({:.1f}% of live) with purity >= {}, of which {} ({:.1f}% of "
      "live) over >= {} distinct tokens; over all firings (activation-weighted) {} ({:.1f}% of live)\n",
      live(), d_sae, scored(), pure(), 100 * pure_fraction(), purity_threshold, pure_multi_token(),
      100 * pure_multi_token_fraction(), min_distinct, pure_firings(), 100 * pure_firings_fraction());
  auto v = by_purity(*this);
  for (size_t i = 0; i < v.size() && static_cast<int>(i) < n; ++i) {
    const LatentStats& l = *v[i];
    std::string toks;
    for (int32_t t : top_tokens(l, 5)) toks += (toks.empty() ? "" : " ") + (tok ? json(show_piece(*tok, t)).dump(-1, ' ', false, json::error_handler_t::replace) : std::to_string(t));
    out += fmt::format(
        "  latent {:>5}  purity {:.2f}  {:<6} ({:>2}/{:<2}, {:>2} distinct tokens)  density {:>6.3f}%  max {:>7.3f}  top {}\n",
        l.index, l.purity, l.tags.front().first, l.tags.front().second, l.tagged, l.distinct_tokens, 100 * l.density,
        l.max_act, toks);
  }
  return out;
}

void check_feature_site_folder(const std::string& dir_in) {
  const fs::path dir(dir_in);
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  if (!fs::is_directory(dir, ec)) throw Error(fmt::format("{} exists and is not a folder; choose another --out", dir_in));
  if (!fs::is_empty(dir, ec) && !fs::exists(dir / "features.json", ec))
    throw Error(fmt::format("{} is not empty and holds no interp features site (no features.json); choose a new or "
                            "empty --out folder",
                            dir_in));
}

void write_feature_site(const FeatureStats& s, const Tokenizer& tok, const std::string& dir_in,
                        const FeatureSiteOptions& o) {
  check_feature_site_folder(dir_in);
  const fs::path dir(dir_in);
  std::error_code ec;
  for (const auto& l : s.latents)
    for (const auto* ws : {&l.top, &l.samples})
      for (const auto& w : *ws)
        for (int32_t t : w.tokens)
          if (t < 0 || t >= tok.vocab_size())
            throw Error(fmt::format("token id {} is outside the tokenizer's {} pieces ({}); pass the tokenizer the "
                                    "activations were made with",
                                    t, tok.vocab_size(), tok.path()));
  const fs::path parent = dir.has_parent_path() ? dir.parent_path() : fs::path(".");
  fs::create_directories(parent, ec);
  const fs::path tmp = parent / fmt::format(".{}.tmp.{}", dir.filename().string(), getpid());
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp / "data" / "latents", ec);
  if (ec) throw Error(fmt::format("{}: cannot create ({})", (tmp / "data").string(), ec.message()));
  try {
    json vocab = json::array();
    for (int32_t i = 0; i < tok.vocab_size(); ++i) vocab.push_back(show_piece(tok, i));
    write(tmp / "data" / "vocab.js", "var INTERP_VOCAB = " + dump(vocab) + ";\n");
    json counts = counts_json(s);
    json meta = {{"title", o.title}, {"hook", s.hook}, {"source", s.source}, {"sae", s.sae_path},
                 {"tokens", s.tokens}, {"d_sae", s.d_sae}, {"edges", s.hist_edges}, {"logit_path", s.logit_path},
                 {"counts", counts}, {"tag_top", s.tag_top}};
    write(tmp / "data" / "meta.js", "var INTERP_META = " + dump(meta) + ";\n");
    json rows = json::array();
    for (const auto& l : s.latents) {
      if (l.firings == 0) continue;
      json pro = json::array();
      for (size_t i = 0; i < l.promoted.size() && i < 3; ++i) pro.push_back(l.promoted[i].first);
      rows.push_back({l.index, l.density, r4(l.max_act), l.purity >= 0 ? json(r4(l.purity)) : json(nullptr),
                      l.tags.empty() ? json(nullptr) : json(l.tags.front().first), top_tokens(l, 5), pro,
                      l.distinct_tokens, l.firing_purity >= 0 ? json(r4(l.firing_purity)) : json(nullptr)});
      json top = json::array(), samples = json::array(), tags = json::array(), promoted = json::array(),
           suppressed = json::array();
      for (const auto& w : l.top) top.push_back(window_json(w));
      for (const auto& w : l.samples) samples.push_back(window_json(w));
      for (const auto& t : l.tags) tags.push_back({t.first, t.second});
      for (const auto& p : l.promoted) promoted.push_back({p.first, r4(p.second)});
      for (const auto& p : l.suppressed) suppressed.push_back({p.first, r4(p.second)});
      json d = {{"index", l.index},   {"firings", l.firings},   {"density", l.density},
                {"max", r4(l.max_act)}, {"mean", r4(l.mean_act)}, {"hist", l.histogram},
                {"top", top},         {"samples", samples},     {"tags", tags},
                {"tagged", l.tagged}, {"purity", l.purity >= 0 ? json(r4(l.purity)) : json(nullptr)},
                {"distinct", l.distinct_tokens},
                {"firing_purity", l.firing_purity >= 0 ? json(r4(l.firing_purity)) : json(nullptr)}, {"firing_tag", l.firing_tag},
                {"promoted", promoted}, {"suppressed", suppressed}};
      write(tmp / "data" / "latents" / fmt::format("{}.js", l.index), "INTERP_LATENT(" + dump(d) + ");\n");
    }
    json index_meta = meta;
    if (o.random_baseline) index_meta["baseline"] = counts_json(*o.random_baseline);
    write(tmp / "data" / "index.js", "var INTERP_INDEX = " + dump(json{{"meta", index_meta}, {"latents", rows}}) + ";\n");
    write(tmp / "index.html", with_style(kIndexHtml));
    write(tmp / "latent.html", with_style(kLatentHtml));
    json summary = json::parse(s.summary_json());
    summary["sae"] = s.sae_path;
    if (o.random_baseline) summary["random_directions"] = counts_json(*o.random_baseline);
    write(tmp / "features.json", summary.dump(2) + "\n");
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  // Swap into place: the old site is removed only once the new one is complete.
  const fs::path old = parent / fmt::format(".{}.old.{}", dir.filename().string(), getpid());
  const bool had = fs::exists(dir, ec);
  if (had) fs::rename(dir, old, ec);
  if (ec) {
    fs::remove_all(tmp, ec);
    throw Error(fmt::format("{}: cannot replace the old site ({})", dir_in, ec.message()));
  }
  fs::rename(tmp, dir, ec);
  if (ec) {
    const std::string why = ec.message();
    if (had) fs::rename(old, dir, ec);
    throw Error(fmt::format("{}: cannot move the new site into place ({})", dir_in, why));
  }
  if (had) fs::remove_all(old, ec);
}

}  // namespace interp
