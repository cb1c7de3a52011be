#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "interp/error.h"
#include "interp/util.h"
#include "interp/safetensors.h"
#include "interp/sae_train.h"
#include "sae/buffered_source.h"

namespace interp {
namespace {

class SyntheticSource final : public ActivationSource {
 public:
  explicit SyntheticSource(SyntheticData& d) : d_(d) {}
  at::Tensor next(int64_t batch) override { return d_.sample(batch); }
  int64_t d_in() const override { return d_.features().size(1); }
  std::string describe() const override {
    return fmt::format("synthetic ({} features in d={})", d_.features().size(0), d_.features().size(1));
  }

 private:
  SyntheticData& d_;
};

// Rows arrive in chunks from fill(); next() hands them out `batch` at a time.
using sae_detail::BufferedSource;

class StoreSource final : public BufferedSource {
 public:
  StoreSource(const ActivationStore& store, std::string hook, uint64_t seed, int64_t buffer)
      : store_(store), hook_(std::move(hook)) {
    o_.batch_size = 1 << 14;
    o_.shuffle_buffer = buffer;
    o_.seed = seed;
    o_.epochs = 1 << 30;  // cycle
    loader_ = std::make_unique<ActivationLoader>(store_, hook_, o_);
    d_in_ = store_.hook(hook_).shape.back();
  }
  int64_t d_in() const override { return d_in_; }
  std::string describe() const override { return fmt::format("{} ({})", store_.dir(), hook_); }

 private:
  at::Tensor fill() override {
    auto b = loader_->next();
    if (!b) throw Error(fmt::format("{}: the store ran out of rows", store_.dir()));
    return b->acts;
  }

  const ActivationStore& store_;
  std::string hook_;
  LoaderOptions o_;
  std::unique_ptr<ActivationLoader> loader_;
  int64_t d_in_ = 0;
};

class LiveSource final : public BufferedSource {
 public:
  LiveSource(const HookedModel& model, const PackedContexts& contexts, const std::string& hook, int64_t per_forward)
      : model_(model), contexts_(contexts), point_(model.hook_point(hook)), per_forward_(per_forward) {
    if (point_.shape.size() != 3 || point_.shape[1] != HookPoint::kPos)
      throw Error(fmt::format("hook '{}' has shape {}; a live source needs per-token rows [batch, pos, d]", point_.name,
                              point_.shape_str()));
    if (point_.layer >= 0 && point_.layer < model.info().n_layers) run_.stop_at_layer = point_.layer + 1;  // skip the rest
  }
  int64_t d_in() const override { return point_.shape.back(); }
  std::string describe() const override { return fmt::format("{} ({}, live)", model_.path(), point_.name); }

 private:
  at::Tensor fill() override {
    int64_t n = std::min(per_forward_, contexts_.size() - next_context_);
    auto [logits, cache] = model_.run_with_cache(contexts_.batch(next_context_, n),
                                                 names_filter(std::vector<std::string>{point_.name}), run_);
    next_context_ = (next_context_ + n) % contexts_.size();
    return cache[point_.name].reshape({-1, point_.shape.back()}).to(at::kCPU, at::kFloat);
  }

  const HookedModel& model_;
  const PackedContexts& contexts_;
  const HookPoint& point_;
  int64_t per_forward_, next_context_ = 0;
  RunOptions run_;
};

struct Adam {
  double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  int64_t t = 0;
  std::vector<at::Tensor> m, v;
  void step(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads, double lr) {
    at::NoGradGuard g;
    if (m.empty())
      for (const auto& p : params) {
        m.push_back(at::zeros_like(p));
        v.push_back(at::zeros_like(p));
      }
    ++t;
    const double bc1 = 1 - std::pow(b1, static_cast<double>(t)), bc2 = 1 - std::pow(b2, static_cast<double>(t));
    for (size_t i = 0; i < params.size(); ++i) {
      m[i].mul_(b1).add_(grads[i], 1 - b1);
      v[i].mul_(b2).addcmul_(grads[i], grads[i], 1 - b2);
      at::Tensor denom = (v[i] / bc2).sqrt_().add_(eps);
      params[i].detach().addcdiv_(m[i], denom, -lr / bc1);
    }
  }
};

void save_checkpoint(const std::string& path, const SAE& sae, const Adam& adam, const at::Tensor& since_fired,
                     int64_t step) {
  std::map<std::string, at::Tensor> t = {{"W_enc", sae.W_enc()}, {"W_dec", sae.W_dec()}, {"b_enc", sae.b_enc()},
                                         {"b_dec", sae.b_dec()}, {"since_fired", since_fired}};
  for (const auto& [name, v] : sae.extra_parameters()) t[name] = v;
  for (size_t i = 0; i < adam.m.size(); ++i) {
    t[fmt::format("adam.m.{}", i)] = adam.m[i];
    t[fmt::format("adam.v.{}", i)] = adam.v[i];
  }
  safetensors_save(path, t,
                   {{"format", "interp.sae.checkpoint.v1"},
                    {"step", std::to_string(step)},
                    {"adam_t", std::to_string(adam.t)},
                    {"norm_scale", fmt::format("{:.17g}", sae.config().norm_scale)},
                    {"batch_threshold", fmt::format("{:.17g}", sae.inference_threshold())},
                    {"config", sae.config().to_json()}});
}

// Restores the state saved at `step`; returns that step.
int64_t load_checkpoint(const std::string& path, SAE& sae, Adam& adam, at::Tensor& since_fired) {
  SafetensorsFile f = safetensors_load(path);
  auto meta = [&](const char* k) {
    auto it = f.metadata.find(k);
    if (it == f.metadata.end()) throw Error(fmt::format("{}: not an SAE checkpoint (no '{}')", path, k));
    return it->second;
  };
  if (meta("format") != "interp.sae.checkpoint.v1") throw Error(fmt::format("{}: not an SAE checkpoint", path));
  SAEConfig saved = SAEConfig::from_json(meta("config"), path);
  const SAEConfig& now = sae.config();
  if (saved.architecture != now.architecture || saved.d_in != now.d_in || saved.d_sae != now.d_sae || saved.k != now.k)
    throw Error(fmt::format("{}: the checkpoint is of a {} SAE {}x{} (k {}), not this {} {}x{} (k {}); use another output "
                            "folder or drop --resume",
                            path, saved.architecture, saved.d_in, saved.d_sae, saved.k, now.architecture, now.d_in,
                            now.d_sae, now.k));
  at::NoGradGuard g;
  auto take = [&](const std::string& name, const at::Tensor& into) {
    auto it = f.tensors.find(name);
    if (it == f.tensors.end() || it->second.sizes() != into.sizes())
      throw Error(fmt::format("{}: '{}' missing or of another shape", path, name));
    into.detach().copy_(it->second);
  };
  take("W_enc", sae.W_enc());
  take("W_dec", sae.W_dec());
  take("b_enc", sae.b_enc());
  take("b_dec", sae.b_dec());
  for (const auto& [name, v] : sae.extra_parameters()) take(name, v);
  take("since_fired", since_fired);
  std::vector<at::Tensor> params = sae.parameters();
  adam.m.clear();
  adam.v.clear();
  for (size_t i = 0; i < params.size(); ++i) {
    adam.m.push_back(at::zeros_like(params[i]));
    adam.v.push_back(at::zeros_like(params[i]));
    take(fmt::format("adam.m.{}", i), adam.m.back());
    take(fmt::format("adam.v.{}", i), adam.v.back());
  }
  try {
    adam.t = std::stoll(meta("adam_t"));
    sae.set_norm_scale(std::stod(meta("norm_scale")));
    sae.set_inference_threshold(std::stod(meta("batch_threshold")));
    return std::stoll(meta("step"));
  } catch (const std::logic_error&) {  // std::invalid_argument, std::out_of_range
    throw Error(fmt::format("{}: the checkpoint's metadata (adam_t, norm_scale, batch_threshold, step) is not numbers; "
                            "the file is damaged: delete it to start over",
                            path));
  }
}

bool resample_step(const TrainOptions& o, int64_t step) {
  return o.resample_every > 0 && (step + 1) % o.resample_every == 0;
}

// Re-initialises the dead latents from inputs the SAE reconstructs worst (Bricken et al. 2023).
// Returns how many. Deterministic: the inputs are drawn with a generator seeded by (seed, step).
int64_t resample(SAE& sae, Adam& adam, at::Tensor& since_fired, int64_t dead_window, const at::Tensor& x_raw,
                 int64_t step, uint64_t seed) {
  at::NoGradGuard g;
  at::Tensor dead_idx = (since_fired > dead_window).nonzero().flatten();
  const int64_t n = dead_idx.numel();
  if (n == 0) return 0;
  const auto device = sae.W_enc().device();
  at::Tensor x = x_raw.to(device);
  SAEOutput out = sae.forward(x);
  at::Tensor p = (out.x_hat - x).pow(2).sum(-1).pow(2).to(at::kCPU, at::kDouble);
  if (!(p.sum().item<double>() > 0)) p = at::ones_like(p);
  at::Generator gen = at::detail::createCPUGenerator(seed * 1000003ULL + static_cast<uint64_t>(step));
  at::Tensor pick = at::multinomial(p, n, /*replacement=*/true, gen).to(device);
  at::Tensor dirs = x.index_select(0, pick) * sae.config().norm_scale - sae.b_dec();
  dirs = dirs / dirs.norm(2, {1}, true).clamp_min(1e-8);
  at::Tensor alive = (since_fired <= dead_window).to(device);
  double enc_norm = alive.any().item<bool>() ? sae.W_enc().norm(2, {0}).masked_select(alive).mean().item<double>() : 1.0;
  at::Tensor di = dead_idx.to(device);
  sae.W_dec().detach().index_copy_(0, di, dirs);
  sae.W_enc().detach().index_copy_(1, di, (dirs * (0.2 * enc_norm)).t().contiguous());
  sae.b_enc().detach().index_fill_(0, di, 0);
  for (auto* st : {&adam.m, &adam.v}) {  // parameters: W_enc, W_dec, b_enc, b_dec[, threshold]
    if (st->empty()) continue;
    (*st)[0].index_fill_(1, di, 0);
    (*st)[1].index_fill_(0, di, 0);
    (*st)[2].index_fill_(0, di, 0);
  }
  since_fired.index_fill_(0, dead_idx, 0);
  return n;
}

}  // namespace

std::unique_ptr<ActivationSource> synthetic_source(SyntheticData& data) {
  return std::make_unique<SyntheticSource>(data);
}

std::unique_ptr<ActivationSource> store_source(const ActivationStore& store, const std::string& hook, uint64_t seed,
                                               int64_t shuffle_buffer) {
  return std::make_unique<StoreSource>(store, hook, seed, shuffle_buffer);
}

std::unique_ptr<ActivationSource> live_source(const HookedModel& model, const PackedContexts& contexts,
                                              const std::string& hook, int64_t contexts_per_forward) {
  return std::make_unique<LiveSource>(model, contexts, hook, contexts_per_forward);
}

at::Tensor geometric_median(const at::Tensor& x, int iterations) {
  at::NoGradGuard g;
  at::Tensor y = x.mean(0);
  for (int i = 0; i < iterations; ++i) {
    at::Tensor w = 1.0 / (x - y).norm(2, {1}).clamp_min(1e-8);
    at::Tensor next = (w.unsqueeze(1) * x).sum(0) / w.sum();
    double moved = (next - y).norm().item<double>();
    y = next;
    if (moved < 1e-7 * (1 + y.norm().item<double>())) break;
  }
  return y;
}

void TrainOptions::validate() const {
  auto at_least = [](const char* name, int64_t v, int64_t min) {
    if (v < min) throw Error(fmt::format("train: {} must be at least {} (got {})", name, min, v));
  };
  at_least("steps", steps, 1);
  at_least("batch", batch, 1);
  if (!std::isfinite(lr) || !(lr > 0))
    throw Error(fmt::format("train: the learning rate must be a positive number (got {})", lr));
  at_least("lr_warmup_steps", lr_warmup_steps, 0);
  at_least("l1_warmup_steps", l1_warmup_steps, 0);
  if (!(lr_decay_fraction >= 0 && lr_decay_fraction <= 1))
    throw Error(fmt::format("train: lr_decay_fraction must be in [0, 1] (got {})", lr_decay_fraction));
  if (b_dec_init != "geometric_median" && b_dec_init != "mean" && b_dec_init != "zeros")
    throw Error(fmt::format("train: b_dec_init '{}' is not geometric_median, mean or zeros", b_dec_init));
  at_least("init_samples", init_samples, 1);
  at_least("dead_window", dead_window, 1);
  at_least("resample_every", resample_every, 0);
  at_least("log_every", log_every, 0);
  at_least("checkpoint_every", checkpoint_every, 0);
  if ((checkpoint_every > 0 || resume) && checkpoint_path.empty())
    throw Error("train: checkpoints (checkpoint_every, resume) need a checkpoint_path");
}

TrainResult train_sae(SAE& sae, ActivationSource& source, const TrainOptions& o) {
  o.validate();
  const SAEConfig& cfg = sae.config();
  if (source.d_in() != cfg.d_in)
    throw Error(fmt::format("the source gives {}-dimensional activations but the SAE's d_in is {}", source.d_in(), cfg.d_in));
  const auto start = std::chrono::steady_clock::now();
  const SAEArchitecture& arch = sae_architecture(cfg.architecture);

  std::vector<at::Tensor> params = sae.parameters();
  Adam adam;
  at::Tensor since_fired = at::zeros({cfg.d_sae}, at::kLong);  // tokens since each latent last fired
  TrainResult result;
  const int64_t init_rows = std::max<int64_t>(o.batch, o.init_samples);
  int64_t first_step = 0;
  std::error_code ec;
  if (o.resume && !o.checkpoint_path.empty() && std::filesystem::exists(o.checkpoint_path, ec)) {
    first_step = load_checkpoint(o.checkpoint_path, sae, adam, since_fired);
    if (first_step > o.steps)
      throw Error(fmt::format("{}: the checkpoint is at step {}, past the {} steps asked for", o.checkpoint_path,
                              first_step, o.steps));
    // Replay the source to where the checkpoint left it: the same draws, in the same sizes.
    (void)source.next(init_rows);
    for (int64_t i = 0; i < first_step; ++i) {
      (void)source.next(o.batch);
      if (resample_step(o, i)) (void)source.next(o.batch);  // the batch resampling drew
    }
    result.resumed_from = first_step;
  } else {
    // Initialisation from a sample: normalisation scale and b_dec.
    at::NoGradGuard g;
    at::Tensor x0 = source.next(init_rows).to(sae.W_enc().device());
    double scale = 1.0;
    if (o.normalize_activations) {
      double mean_norm = x0.norm(2, {1}).mean().item<double>();
      if (mean_norm > 0) scale = std::sqrt(static_cast<double>(cfg.d_in)) / mean_norm;
    }
    sae.set_norm_scale(scale);
    at::Tensor xs = x0 * scale;
    if (o.b_dec_init == "geometric_median") sae.b_dec().detach().copy_(geometric_median(xs));
    else if (o.b_dec_init == "mean") sae.b_dec().detach().copy_(xs.mean(0));
    // (b_dec_init "zeros": b_dec stays 0; validate() refused any other name)
  }

  double acc_mse = 0, acc_sp = 0, acc_aux = 0, acc_extra = 0, acc_l0 = 0;
  int64_t acc_n = 0;
  const int64_t decay_start = static_cast<int64_t>(static_cast<double>(o.steps) * (1.0 - o.lr_decay_fraction));
  for (int64_t step = first_step; step < o.steps; ++step) {
    double lr = o.lr;
    if (o.lr_warmup_steps > 0 && step < o.lr_warmup_steps)
      lr *= static_cast<double>(step + 1) / static_cast<double>(o.lr_warmup_steps);
    if (step >= decay_start && o.lr_decay_fraction > 0)
      lr *= static_cast<double>(o.steps - step) / static_cast<double>(o.steps - decay_start);
    const double sparsity_weight =
        o.l1_warmup_steps > 0 ? std::min(1.0, static_cast<double>(step + 1) / static_cast<double>(o.l1_warmup_steps)) : 1.0;

    at::Tensor x = source.next(o.batch).to(sae.W_enc().device());
    at::Tensor dead = (since_fired > o.dead_window).to(sae.W_enc().device());
    SAEOutput out = sae.forward(x, sparsity_weight, dead);
    double loss = out.loss.item<double>();
    if (!std::isfinite(loss))
      throw Error(fmt::format("SAE training: the loss is {} at step {} (mse {}, sparsity {}); lower the learning rate "
                              "({}) or check the activations; the SAE keeps the weights of step {}{}",
                              loss, step, out.mse.item<double>(), out.sparsity.item<double>(), o.lr, step - 1,
                              o.checkpoint_path.empty() ? "" : fmt::format(", and {} its last checkpoint", o.checkpoint_path)));
    auto grads = torch::autograd::grad({out.loss}, params);
    adam.step(params, grads, lr);
    {
      at::NoGradGuard g;
      if (arch.unit_decoder) sae.normalize_decoder();
      if (arch.after_step) arch.after_step(sae);
      at::Tensor fired = out.fired().cpu();
      since_fired.add_(o.batch).masked_fill_(fired, 0);
      if (arch.batch_threshold) {  // inference threshold: running mean of the smallest kept value
        at::Tensor hv = out.h.defined() ? out.h.detach() : out.active_vals.detach();
        at::Tensor pos = hv.masked_select(hv > 0);
        if (pos.numel()) {
          double m = pos.min().item<double>();
          double t = sae.inference_threshold();
          sae.set_inference_threshold(step == 0 ? m : 0.99 * t + 0.01 * m);
        }
      }
    }
    if (resample_step(o, step))
      result.resampled += resample(sae, adam, since_fired, o.dead_window, source.next(o.batch), step, cfg.seed);
    if (o.checkpoint_every > 0 && !o.checkpoint_path.empty() && (step + 1) % o.checkpoint_every == 0)
      save_checkpoint(o.checkpoint_path, sae, adam, since_fired, step + 1);
    if (stop_requested() && step + 1 < o.steps) {  // a safe point: the step is whole
      if (o.checkpoint_path.empty())
        throw Error(fmt::format("SAE training stopped at step {} of {} (asked to stop); no checkpoint path was given, "
                                "so there is nothing to resume from",
                                step + 1, o.steps));
      save_checkpoint(o.checkpoint_path, sae, adam, since_fired, step + 1);
      throw Error(fmt::format("SAE training stopped at step {} of {} (asked to stop); {} holds that state: run the same "
                              "command again with --resume to continue",
                              step + 1, o.steps, o.checkpoint_path));
    }
    acc_mse += out.mse.item<double>();
    acc_sp += out.sparsity.item<double>();
    acc_aux += out.aux.item<double>();
    acc_extra += out.extra.item<double>();
    acc_l0 += out.l0.item<double>();
    ++acc_n;
    const bool last = step + 1 == o.steps;
    if ((o.log_every > 0 && (step + 1) % o.log_every == 0) || last) {
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      TrainProgress p;
      p.step = step + 1;
      p.steps = o.steps;
      p.mse = acc_mse / static_cast<double>(acc_n);
      p.sparsity = acc_sp / static_cast<double>(acc_n);
      p.aux = acc_aux / static_cast<double>(acc_n);
      p.extra = acc_extra / static_cast<double>(acc_n);
      p.l0 = acc_l0 / static_cast<double>(acc_n);
      p.dead_fraction = (since_fired > o.dead_window).to(at::kFloat).mean().item<double>();
      p.lr = lr;
      p.tokens_per_s = static_cast<double>((step + 1 - first_step) * o.batch) / s;
      p.eta_s = static_cast<double>(o.steps - step - 1) * s / static_cast<double>(step + 1 - first_step);
      result.mse = p.mse;
      result.l0 = p.l0;
      result.dead_fraction = p.dead_fraction;
      if (o.progress) o.progress(p);
      acc_mse = acc_sp = acc_aux = acc_extra = acc_l0 = 0;
      acc_n = 0;
    }
  }
  result.steps = o.steps;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.tokens_per_s = static_cast<double>((o.steps - first_step) * o.batch) / result.seconds;
  return result;
}

}  // namespace interp
