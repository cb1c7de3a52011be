// Ground truth (Sharkey et al. 2022): n random unit-norm features in d dimensions; feature i is
// active with probability p_i (uniform, or decaying as decay^i), scaled so `mean_active` are active
// on average; active magnitudes uniform in [0, 1]. With correlation c > 0, feature 2j+1 copies the
// activity of feature 2j with probability c.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include "interp/error.h"
#include "interp/sae.h"

namespace interp {

SyntheticData::SyntheticData(const SyntheticConfig& cfg) : cfg_(cfg), gen_(at::detail::createCPUGenerator(cfg.seed)) {
  if (cfg.n_features < 1 || cfg.d < 1) throw Error("synthetic: n_features and d must be positive");
  if (cfg.frequencies != "uniform" && cfg.frequencies != "geometric")
    throw Error(fmt::format("synthetic: frequencies '{}' is not uniform or geometric", cfg.frequencies));
  if (!(cfg.mean_active > 0) || cfg.mean_active > cfg.n_features)
    throw Error(fmt::format("synthetic: mean_active {} must be in (0, n_features]", cfg.mean_active));
  features_ = at::randn({cfg.n_features, cfg.d}, gen_, at::kFloat);
  features_ = features_ / features_.norm(2, {1}, true);
  at::Tensor w = cfg.frequencies == "uniform"
                     ? at::ones({cfg.n_features}, at::kFloat)
                     : at::pow(at::full({cfg.n_features}, cfg.decay, at::kDouble), at::arange(cfg.n_features, at::kDouble))
                           .to(at::kFloat);
  p_ = (w * (cfg.mean_active / w.sum().item<double>())).clamp_max(1.0);
}

at::Tensor SyntheticData::sample(int64_t n) {
  at::Tensor u = at::rand({n, cfg_.n_features}, gen_, at::kFloat);
  at::Tensor active = u < p_;
  if (cfg_.correlation > 0) {
    int64_t pairs = cfg_.n_features / 2;
    at::Tensor copy = at::rand({n, pairs}, gen_, at::kFloat) < cfg_.correlation;
    at::Tensor even = active.slice(1, 0, 2 * pairs, 2), odd = active.slice(1, 1, 2 * pairs, 2);
    odd.copy_(at::where(copy, even, odd));
  }
  at::Tensor mags = at::rand({n, cfg_.n_features}, gen_, at::kFloat) * active;
  return at::mm(mags, features_);
}

Recovery feature_recovery(const at::Tensor& true_features, const at::Tensor& W_dec, double threshold) {
  at::NoGradGuard g;
  at::Tensor f = true_features / true_features.norm(2, {1}, true);
  at::Tensor w = W_dec.detach().to(at::kCPU, at::kFloat);
  w = w / w.norm(2, {1}, true).clamp_min(1e-12);
  at::Tensor best = std::get<0>(at::mm(f, w.t()).max(1));  // [n_features]
  Recovery r;
  r.n_features = f.size(0);
  r.mmcs = best.mean().item<double>();
  r.recovered = (best > threshold).sum().item<int64_t>();
  return r;
}

}  // namespace interp
