// The streaming per-latent statistics behind `interp features`: bounded state per latent, updated
// from each batch of latent activations; latents are split across threads (each latent's state is
// touched by one thread only, and its reservoir has its own random stream, so results do not depend
// on the thread count).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "interp/error.h"
#include "interp/features.h"
#include "interp/util.h"

namespace interp {

namespace {

constexpr double kHistLo = -3.0, kHistHi = 3.0;
constexpr int kHistBins = 48;

bool heap_less(const FeatureWindow& a, const FeatureWindow& b) {  // min-heap on value, then later row first out
  return a.value > b.value || (a.value == b.value && a.row < b.row);
}

struct TagEntry {
  float value;
  int64_t row;
  int16_t tag;
  int32_t token;
};
bool tag_less(const TagEntry& a, const TagEntry& b) { return a.value > b.value || (a.value == b.value && a.row < b.row); }

struct Latent {
  int64_t firings = 0;
  double sum = 0;
  float max = 0;
  std::vector<FeatureWindow> top;  // min-heap by heap_less
  std::vector<TagEntry> tag_top;   // min-heap by tag_less
  std::vector<FeatureWindow> reservoir;
  std::vector<int64_t> hist;
  std::vector<double> tag_mass;  // activation summed per coarse tag, over every firing
  int64_t tagged_firings = 0;
  uint64_t rng = 0;
};

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

std::string coarse_tag(const std::string& tag) {
  std::string t = tag;
  if (t.rfind("fw-", 0) == 0 && t.size() > 3) t = t.substr(3);
  for (bool changed = true; changed;) {
    changed = false;
    for (const char* suffix : {"-tl", "-hl", "-nc"}) {
      const size_t n = std::char_traits<char>::length(suffix);
      if (t.size() > n && t.compare(t.size() - n, n, suffix) == 0) {
        t.resize(t.size() - n);
        changed = true;
      }
    }
  }
  return t;
}

struct FeatureCollector::State {
  FeatureOptions o;
  int64_t d_sae = 0, ctx = 0, contexts = 0, tokens = 0;
  std::vector<std::string> coarse_names;  // distinct coarse tags
  std::vector<int16_t> coarse_of;         // fine tag index -> coarse index
  std::vector<Latent> latents;
};

FeatureCollector::FeatureCollector(int64_t d_sae, int64_t ctx, std::vector<std::string> tag_names,
                                   const FeatureOptions& o)
    : s_(std::make_unique<State>()) {
  if (d_sae <= 0 || ctx <= 0) throw Error(fmt::format("features: d_sae {} and ctx {} must be positive", d_sae, ctx));
  if (o.top_k <= 0 || o.samples < 0 || o.before < 0 || o.after < 0 || o.tag_top <= 0 || o.min_tagged <= 0 ||
      o.min_distinct <= 0 ||
      o.batch_contexts <= 0)
    throw Error("features: top_k, tag_top, min_tagged and batch_contexts must be positive; samples and the window >= 0");
  s_->o = o;
  s_->d_sae = d_sae;
  s_->ctx = ctx;
  std::map<std::string, int16_t> index;
  for (const auto& t : tag_names) {
    std::string c = coarse_tag(t);
    auto it = index.find(c);
    if (it == index.end()) {
      it = index.emplace(c, static_cast<int16_t>(s_->coarse_names.size())).first;
      s_->coarse_names.push_back(c);
    }
    s_->coarse_of.push_back(it->second);
  }
  s_->latents.resize(static_cast<size_t>(d_sae));
  for (int64_t j = 0; j < d_sae; ++j) {
    auto& L = s_->latents[static_cast<size_t>(j)];
    L.hist.assign(kHistBins, 0);
    L.tag_mass.assign(s_->coarse_names.size(), 0.0);
    L.rng = o.seed * 0x100000001B3ull + static_cast<uint64_t>(j);
  }
}

FeatureCollector::~FeatureCollector() = default;

int64_t FeatureCollector::tokens_seen() const { return s_->tokens; }

void FeatureCollector::add(const at::Tensor& h_in, const at::Tensor& tokens_in, const at::Tensor& tags_in) {
  State& s = *s_;
  const int64_t ctx = s.ctx, d = s.d_sae;
  if (tokens_in.dim() != 2 || tokens_in.size(1) != ctx)
    throw Error(fmt::format("features: tokens must be [contexts, {}], got [{}]", ctx, fmt::join(tokens_in.sizes(), ", ")));
  const int64_t n_ctx = tokens_in.size(0);
  if (h_in.dim() != 2 || h_in.size(0) != n_ctx * ctx || h_in.size(1) != d)
    throw Error(fmt::format("features: activations must be [{}, {}], got [{}]", n_ctx * ctx, d, fmt::join(h_in.sizes(), ", ")));
  at::Tensor h = h_in.to(at::kCPU, at::kFloat).contiguous();
  at::Tensor tok = tokens_in.to(at::kCPU, at::kInt).contiguous();
  at::Tensor tags = tags_in.defined() ? tags_in.to(at::kCPU, at::kShort).contiguous() : at::Tensor();
  if (tags.defined() && tags.sizes() != tok.sizes())
    throw Error(fmt::format("features: tags [{}] do not match tokens [{}]", fmt::join(tags.sizes(), ", "), fmt::join(tok.sizes(), ", ")));
  const float* H = h.data_ptr<float>();
  const int32_t* T = tok.data_ptr<int32_t>();
  const int16_t* G = tags.defined() ? tags.data_ptr<int16_t>() : nullptr;
  const int64_t base_row = s.contexts * ctx;
  const FeatureOptions& o = s.o;
  const int64_t first_pos = o.skip_bos ? 1 : 0;
  const double bin_w = (kHistHi - kHistLo) / kHistBins;

  auto window = [&](int64_t r, int64_t j, float v) {
    const int64_t c = r / ctx, p = r % ctx;
    const int64_t lo = std::max<int64_t>(0, p - o.before), hi = std::min<int64_t>(ctx - 1, p + o.after);
    FeatureWindow w;
    w.row = base_row + r;
    w.center = static_cast<int32_t>(p - lo);
    w.value = v;
    w.tokens.assign(T + c * ctx + lo, T + c * ctx + hi + 1);
    w.acts.reserve(static_cast<size_t>(hi - lo + 1));
    for (int64_t q = lo; q <= hi; ++q) w.acts.push_back(std::max(0.0f, H[(c * ctx + q) * d + j]));
    return w;
  };
  auto tag_of = [&](int64_t r) -> int16_t {
    if (!G) return -1;
    const int16_t t = G[r];
    return t >= 0 && static_cast<size_t>(t) < s.coarse_of.size() ? s.coarse_of[static_cast<size_t>(t)] : int16_t{-1};
  };

  at::parallel_for(0, d, 64, [&](int64_t j0, int64_t j1) {
    for (int64_t r = 0; r < n_ctx * ctx; ++r) {
      if (r % ctx < first_pos) continue;
      const float* row = H + r * d;
      for (int64_t j = j0; j < j1; ++j) {
        const float v = row[j];
        if (!(v > 0)) continue;
        Latent& L = s.latents[static_cast<size_t>(j)];
        ++L.firings;
        L.sum += v;
        L.max = std::max(L.max, v);
        int bin = static_cast<int>(std::floor((std::log10(static_cast<double>(v)) - kHistLo) / bin_w));
        L.hist[static_cast<size_t>(std::clamp(bin, 0, kHistBins - 1))]++;
        if (const int16_t t = tag_of(r); t >= 0) {
          L.tag_mass[static_cast<size_t>(t)] += v;
          ++L.tagged_firings;
        }
        if (static_cast<int64_t>(L.top.size()) < o.top_k) {
          L.top.push_back(window(r, j, v));
          std::push_heap(L.top.begin(), L.top.end(), heap_less);
        } else if (v > L.top.front().value) {
          std::pop_heap(L.top.begin(), L.top.end(), heap_less);
          L.top.back() = window(r, j, v);
          std::push_heap(L.top.begin(), L.top.end(), heap_less);
        }
        if (static_cast<int64_t>(L.tag_top.size()) < o.tag_top) {
          L.tag_top.push_back({v, base_row + r, tag_of(r), T[r]});
          std::push_heap(L.tag_top.begin(), L.tag_top.end(), tag_less);
        } else if (v > L.tag_top.front().value) {
          std::pop_heap(L.tag_top.begin(), L.tag_top.end(), tag_less);
          L.tag_top.back() = {v, base_row + r, tag_of(r), T[r]};
          std::push_heap(L.tag_top.begin(), L.tag_top.end(), tag_less);
        }
        if (o.samples > 0) {  // reservoir sampling (Algorithm R) over this latent's firings
          if (static_cast<int64_t>(L.reservoir.size()) < o.samples) {
            L.reservoir.push_back(window(r, j, v));
          } else {
            const uint64_t u = splitmix(L.rng) % static_cast<uint64_t>(L.firings);
            if (u < static_cast<uint64_t>(o.samples)) L.reservoir[u] = window(r, j, v);
          }
        }
      }
    }
  });
  s.contexts += n_ctx;
  s.tokens += n_ctx * (ctx - first_pos);
}

FeatureStats FeatureCollector::finish() {
  State& s = *s_;
  FeatureStats out;
  out.tokens = s.tokens;
  out.d_sae = s.d_sae;
  out.ctx = s.ctx;
  out.purity_threshold = s.o.purity_threshold;
  out.tag_top = s.o.tag_top;
  out.min_distinct = s.o.min_distinct;
  for (int b = 0; b <= kHistBins; ++b) out.hist_edges.push_back(kHistLo + (kHistHi - kHistLo) * b / kHistBins);
  out.latents.resize(static_cast<size_t>(s.d_sae));
  auto by_value = [](const FeatureWindow& a, const FeatureWindow& b) {
    return a.value > b.value || (a.value == b.value && a.row < b.row);
  };
  for (int64_t j = 0; j < s.d_sae; ++j) {
    Latent& L = s.latents[static_cast<size_t>(j)];
    LatentStats& st = out.latents[static_cast<size_t>(j)];
    st.index = j;
    st.firings = L.firings;
    st.density = s.tokens ? static_cast<double>(L.firings) / static_cast<double>(s.tokens) : 0.0;
    st.max_act = L.max;
    st.mean_act = L.firings ? L.sum / static_cast<double>(L.firings) : 0.0;
    st.histogram = std::move(L.hist);
    st.top = std::move(L.top);
    std::sort(st.top.begin(), st.top.end(), by_value);
    st.samples = std::move(L.reservoir);
    std::sort(st.samples.begin(), st.samples.end(), by_value);
    std::vector<int32_t> toks;
    for (const auto& e : L.tag_top) toks.push_back(e.token);
    std::sort(toks.begin(), toks.end());
    st.distinct_tokens = std::unique(toks.begin(), toks.end()) - toks.begin();
    std::vector<int64_t> counts(s.coarse_names.size(), 0);
    for (const auto& e : L.tag_top)
      if (e.tag >= 0) {
        ++counts[static_cast<size_t>(e.tag)];
        ++st.tagged;
      }
    for (size_t t = 0; t < counts.size(); ++t)
      if (counts[t]) st.tags.emplace_back(s.coarse_names[t], counts[t]);
    std::stable_sort(st.tags.begin(), st.tags.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    if (st.tagged >= s.o.min_tagged && !st.tags.empty())
      st.purity = static_cast<double>(st.tags.front().second) / static_cast<double>(st.tagged);
    if (L.tagged_firings >= s.o.min_tagged) {
      auto best = std::max_element(L.tag_mass.begin(), L.tag_mass.end());
      double total = 0;
      for (double m : L.tag_mass) total += m;
      if (total > 0) {
        st.firing_purity = *best / total;
        st.firing_tag = s.coarse_names[static_cast<size_t>(best - L.tag_mass.begin())];
      }
    }
    L = Latent{};
  }
  return out;
}

int64_t FeatureStats::live() const {
  return std::count_if(latents.begin(), latents.end(), [](const LatentStats& l) { return l.firings > 0; });
}
int64_t FeatureStats::scored() const {
  return std::count_if(latents.begin(), latents.end(), [](const LatentStats& l) { return l.purity >= 0; });
}
int64_t FeatureStats::pure() const {
  return std::count_if(latents.begin(), latents.end(),
                       [&](const LatentStats& l) { return l.purity >= 0 && l.purity >= purity_threshold; });
}
int64_t FeatureStats::pure_multi_token() const {
  return std::count_if(latents.begin(), latents.end(), [&](const LatentStats& l) {
    return l.purity >= 0 && l.purity >= purity_threshold && l.distinct_tokens >= min_distinct;
  });
}
double FeatureStats::pure_multi_token_fraction() const {
  const int64_t n = live();
  return n ? static_cast<double>(pure_multi_token()) / static_cast<double>(n) : 0.0;
}
int64_t FeatureStats::pure_firings() const {
  return std::count_if(latents.begin(), latents.end(),
                       [&](const LatentStats& l) { return l.firing_purity >= 0 && l.firing_purity >= purity_threshold; });
}
double FeatureStats::pure_firings_fraction() const {
  const int64_t n = live();
  return n ? static_cast<double>(pure_firings()) / static_cast<double>(n) : 0.0;
}
double FeatureStats::pure_fraction() const {
  const int64_t n = live();
  return n ? static_cast<double>(pure()) / static_cast<double>(n) : 0.0;
}

}  // namespace interp
