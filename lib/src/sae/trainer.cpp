#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

#include "interp/dist.h"
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

bool resample_step(const TrainOptions& o, int64_t step) {
  return o.resample_every > 0 && (step + 1) % o.resample_every == 0;
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

// ---- Trainer ---------------------------------------------------------------------------------

struct Trainer::Impl {
  Impl(SAE& s, ActivationSource& src, const TrainOptions& opt)
      : sae(s), source(src), o(opt), cfg(s.config()), arch(sae_architecture(s.config().architecture)) {
    o.validate();
    if (source.d_in() != cfg.d_in)
      throw Error(fmt::format("the source gives {}-dimensional activations but the SAE's d_in is {}", source.d_in(),
                              cfg.d_in));
    device = sae.W_enc().device();
    params = sae.parameters();
    since_fired = at::zeros({cfg.d_sae}, at::TensorOptions().dtype(at::kLong).device(device));
    threshold = at::full({}, sae.inference_threshold(), at::TensorOptions().dtype(at::kDouble).device(device));
    acc = at::zeros({5}, at::TensorOptions().dtype(at::kFloat).device(device));
    decay_start = static_cast<int64_t>(static_cast<double>(o.steps) * (1.0 - o.lr_decay_fraction));
    if (o.group) {
      rank = o.group->rank();
      world = o.group->size();
      if (o.batch % world != 0)
        throw Error(fmt::format("train: the batch ({}) must split evenly over the {} ranks", o.batch, world));
    }
  }

  SAE& sae;
  ActivationSource& source;
  TrainOptions o;
  const SAEConfig& cfg;
  const SAEArchitecture& arch;
  c10::Device device = at::kCPU;
  std::vector<at::Tensor> params;
  Adam adam;
  at::Tensor since_fired;  // [d_sae] int64: tokens since each latent last fired
  at::Tensor threshold;    // batchtopk's inference threshold (double), kept on the device
  at::Tensor acc;          // sums since the last log: mse, sparsity, aux, extra, l0
  int64_t acc_n = 0, step = 0, first_step = 0, decay_start = 0;
  int rank = 0, world = 1;  // with a process group
  double last_lr = 0;
  TrainResult result;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();

  int64_t init_rows() const { return std::max<int64_t>(o.batch, o.init_samples); }

  double lr_at(int64_t s) const {
    double lr = o.lr;
    if (o.lr_warmup_steps > 0 && s < o.lr_warmup_steps)
      lr *= static_cast<double>(s + 1) / static_cast<double>(o.lr_warmup_steps);
    if (s >= decay_start && o.lr_decay_fraction > 0)
      lr *= static_cast<double>(o.steps - s) / static_cast<double>(o.steps - decay_start);
    return lr;
  }

  void init() {
    at::NoGradGuard g;
    at::Tensor x0 = source.next(init_rows()).to(device);
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
    step = first_step = 0;
    sync_from_rank0();
  }

  // Every rank starts from rank 0's weights and scale (they draw the same stream, so this only
  // guards against sources that differ between machines).
  void sync_from_rank0() {
    if (world == 1) return;
    at::NoGradGuard g;
    std::vector<at::Tensor> t;
    for (const auto& p : params) t.push_back(p.detach());
    t.push_back(at::full({1}, sae.config().norm_scale, at::TensorOptions().dtype(at::kDouble).device(device)));
    o.group->broadcast(t, 0);
    sae.set_norm_scale(t.back().item<double>());
  }

  std::map<std::string, at::Tensor> state() const {
    std::map<std::string, at::Tensor> t = {{"W_enc", sae.W_enc()}, {"W_dec", sae.W_dec()}, {"b_enc", sae.b_enc()},
                                           {"b_dec", sae.b_dec()}, {"since_fired", since_fired}};
    for (const auto& [name, v] : sae.extra_parameters()) t[name] = v;
    for (size_t i = 0; i < adam.m.size(); ++i) {
      t[fmt::format("adam.m.{}", i)] = adam.m[i];
      t[fmt::format("adam.v.{}", i)] = adam.v[i];
    }
    for (auto& [name, v] : t) v = v.detach().cpu();
    return t;
  }

  std::map<std::string, std::string> state_metadata() const {
    return {{"format", "interp.sae.checkpoint.v1"},
            {"step", std::to_string(step)},
            {"adam_t", std::to_string(adam.t)},
            {"norm_scale", fmt::format("{:.17g}", sae.config().norm_scale)},
            {"batch_threshold", fmt::format("{:.17g}", threshold.item<double>())},
            {"config", sae.config().to_json()}};
  }

  void save(const std::string& path) const {
    if (rank == 0) safetensors_save(path, state(), state_metadata());  // rank 0 writes for the group
  }

  int64_t load(const std::string& path) {
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
      throw Error(fmt::format("{}: the checkpoint is of a {} SAE {}x{} (k {}), not this {} {}x{} (k {}); use another "
                              "output folder or drop --resume",
                              path, saved.architecture, saved.d_in, saved.d_sae, saved.k, now.architecture, now.d_in,
                              now.d_sae, now.k));
    int64_t saved_step = 0, adam_t = 0;
    double norm_scale = 1, batch_threshold = 0;
    try {
      adam_t = std::stoll(meta("adam_t"));
      norm_scale = std::stod(meta("norm_scale"));
      batch_threshold = std::stod(meta("batch_threshold"));
      saved_step = std::stoll(meta("step"));
    } catch (const std::logic_error&) {  // std::invalid_argument, std::out_of_range
      throw Error(fmt::format("{}: the checkpoint's metadata (adam_t, norm_scale, batch_threshold, step) is not "
                              "numbers; the file is damaged: delete it to start over",
                              path));
    }
    if (saved_step > o.steps)
      throw Error(fmt::format("{}: the checkpoint is at step {}, past the {} steps asked for", path, saved_step, o.steps));
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
    adam.m.clear();
    adam.v.clear();
    for (size_t i = 0; i < params.size(); ++i) {
      adam.m.push_back(at::zeros_like(params[i]));
      adam.v.push_back(at::zeros_like(params[i]));
      take(fmt::format("adam.m.{}", i), adam.m.back());
      take(fmt::format("adam.v.{}", i), adam.v.back());
    }
    adam.t = adam_t;
    sae.set_norm_scale(norm_scale);
    sae.set_inference_threshold(batch_threshold);
    threshold.fill_(batch_threshold);
    // Replay the source to where the checkpoint left it: the same draws, in the same sizes.
    (void)source.next(init_rows());
    for (int64_t i = 0; i < saved_step; ++i) {
      (void)source.next(o.batch);
      if (resample_step(o, i)) (void)source.next(o.batch);  // the batch resampling drew
    }
    step = first_step = result.resumed_from = saved_step;
    return saved_step;
  }

  // Re-initialises the dead latents from inputs the SAE reconstructs worst (Bricken et al. 2023).
  // Returns how many. Deterministic: the inputs are drawn with a generator seeded by (seed, step).
  int64_t resample(const at::Tensor& x_raw) {
    at::NoGradGuard g;
    at::Tensor dead_idx = (since_fired > o.dead_window).nonzero().flatten();
    const int64_t n = dead_idx.numel();
    if (n == 0) return 0;
    at::Tensor x = x_raw.to(device);
    SAEOutput out = sae.forward(x);
    at::Tensor p = (out.x_hat - x).pow(2).sum(-1).pow(2).to(at::kCPU, at::kDouble);
    if (!(p.sum().item<double>() > 0)) p = at::ones_like(p);
    at::Generator gen = at::detail::createCPUGenerator(cfg.seed * 1000003ULL + static_cast<uint64_t>(step));
    at::Tensor pick = at::multinomial(p, n, /*replacement=*/true, gen).to(device);
    at::Tensor dirs = x.index_select(0, pick) * sae.config().norm_scale - sae.b_dec();
    dirs = dirs / dirs.norm(2, {1}, true).clamp_min(1e-8);
    at::Tensor alive = since_fired <= o.dead_window;
    double enc_norm =
        alive.any().item<bool>() ? sae.W_enc().norm(2, {0}).masked_select(alive).mean().item<double>() : 1.0;
    sae.W_dec().detach().index_copy_(0, dead_idx, dirs);
    sae.W_enc().detach().index_copy_(1, dead_idx, (dirs * (0.2 * enc_norm)).t().contiguous());
    sae.b_enc().detach().index_fill_(0, dead_idx, 0);
    for (auto* st : {&adam.m, &adam.v}) {  // parameters: W_enc, W_dec, b_enc, b_dec[, threshold]
      if (st->empty()) continue;
      (*st)[0].index_fill_(1, dead_idx, 0);
      (*st)[1].index_fill_(0, dead_idx, 0);
      (*st)[2].index_fill_(0, dead_idx, 0);
    }
    since_fired.index_fill_(0, dead_idx, 0);
    return n;
  }

  void take_step() {
    if (step >= o.steps) throw Error(fmt::format("train: all {} steps are done", o.steps));
    const double lr = last_lr = lr_at(step);
    const double sparsity_weight =
        o.l1_warmup_steps > 0 ? std::min(1.0, static_cast<double>(step + 1) / static_cast<double>(o.l1_warmup_steps))
                              : 1.0;
    at::Tensor x = source.next(o.batch);
    if (world > 1) x = x.narrow(0, rank * (o.batch / world), o.batch / world);  // this rank's slice
    x = x.to(device);
    SAEOutput out = sae.forward(x, sparsity_weight, since_fired > o.dead_window);
    at::Tensor fired = out.fired();
    bool stop = stop_requested();
    double loss = 0;
    std::vector<at::Tensor> grads;
    if (world == 1) {
      loss = out.loss.item<double>();  // the one read-back per step
      if (std::isfinite(loss)) grads = torch::autograd::grad({out.loss}, params);
    } else {
      grads = torch::autograd::grad({out.loss}, params);
      loss = reduce_step(grads, out.loss, fired, stop);
    }
    if (!std::isfinite(loss))
      throw Error(fmt::format("SAE training: the loss is {} at step {} (mse {}, sparsity {}); lower the learning rate "
                              "({}) or check the activations; the SAE keeps the weights of step {}{}",
                              loss, step, out.mse.item<double>(), out.sparsity.item<double>(), o.lr, step - 1,
                              o.checkpoint_path.empty() ? ""
                                                        : fmt::format(", and {} its last checkpoint", o.checkpoint_path)));
    adam.step(params, grads, lr);
    {
      at::NoGradGuard g;
      if (arch.unit_decoder) sae.normalize_decoder();
      if (arch.after_step) arch.after_step(sae);
      since_fired.add_(o.batch).masked_fill_(fired, 0);
      if (arch.batch_threshold) {  // inference threshold: running mean of the smallest kept value
        at::Tensor hv = out.h.defined() ? out.h.detach() : out.active_vals.detach();
        at::Tensor m = hv.masked_fill(hv <= 0, std::numeric_limits<float>::infinity()).min().to(at::kDouble);
        if (world > 1) {
          std::vector<at::Tensor> t = {m.reshape({1})};
          o.group->all_reduce(t, ProcessGroup::Op::Min);
          m = t[0].reshape({});
        }
        at::Tensor next = step == 0 ? m : threshold * 0.99 + m * 0.01;
        threshold = at::where(at::isinf(m), threshold, next);  // no positive value: unchanged
      }
      acc.add_(at::stack({out.mse.detach(), out.sparsity.detach(), out.aux.detach(), out.extra.detach(),
                          out.l0.detach()}));
      ++acc_n;
    }
    if (resample_step(o, step)) result.resampled += resample(source.next(o.batch));
    ++step;
    if (world == 1) stop = stop_requested();  // alone, a request that came during the step counts now
    if (o.checkpoint_every > 0 && !o.checkpoint_path.empty() && step % o.checkpoint_every == 0) save(o.checkpoint_path);
    if (stop && step < o.steps) {  // a safe point: the step is whole (in a group: every rank's)
      if (o.checkpoint_path.empty())
        throw Error(fmt::format("SAE training stopped at step {} of {} (asked to stop); no checkpoint path was given, "
                                "so there is nothing to resume from",
                                step, o.steps));
      save(o.checkpoint_path);
      if (world > 1) o.group->barrier();  // the checkpoint is written before any rank exits
      throw Error(fmt::format("SAE training stopped at step {} of {} (asked to stop); {} holds that state: run the same "
                              "command again with --resume to continue",
                              step, o.steps, o.checkpoint_path));
    }
    if ((o.log_every > 0 && step % o.log_every == 0) || step == o.steps) log();
  }

  // One all-reduce per step: the gradients, the loss, which latents fired and whether any rank was
  // asked to stop. Afterwards every rank holds the group's mean gradient and loss (each rank's
  // loss is a mean over its slice; the slices are equal), the union of the fired latents, and the
  // same decision to stop. Returns the group's loss.
  double reduce_step(std::vector<at::Tensor>& grads, const at::Tensor& loss, at::Tensor& fired, bool& stop) {
    at::NoGradGuard g;
    std::vector<at::Tensor> parts;
    for (const auto& gr : grads) parts.push_back(gr.reshape(-1));
    parts.push_back(loss.detach().reshape(1).to(at::kFloat));
    parts.push_back(fired.to(at::kFloat));
    parts.push_back(at::full({1}, stop ? 1.0f : 0.0f, fired.options().dtype(at::kFloat)));
    std::vector<at::Tensor> buf = {at::cat(parts)};
    o.group->all_reduce(buf, ProcessGroup::Op::Sum);
    const at::Tensor& b = buf[0];
    int64_t offset = 0;
    for (auto& gr : grads) {
      gr = b.narrow(0, offset, gr.numel()).view(gr.sizes()) / static_cast<float>(world);
      offset += gr.numel();
    }
    at::Tensor tail = b.narrow(0, offset, b.numel() - offset);  // loss, fired[d_sae], stop
    fired = tail.narrow(0, 1, fired.numel()) > 0;
    at::Tensor host = at::stack({tail[0], tail[tail.numel() - 1]}).to(at::kCPU, at::kDouble);
    stop = host.data_ptr<double>()[1] > 0;
    return host.data_ptr<double>()[0] / world;
  }

  void log() {
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (world > 1) {  // every rank logs at the same steps: the group's means
      std::vector<at::Tensor> t = {acc};
      o.group->all_reduce(t, ProcessGroup::Op::Sum);
      acc = t[0] / static_cast<float>(world);
    }
    at::Tensor means = (acc / static_cast<float>(std::max<int64_t>(acc_n, 1))).to(at::kCPU, at::kDouble);
    const double* m = means.data_ptr<double>();
    TrainProgress p;
    p.step = step;
    p.steps = o.steps;
    p.mse = m[0];
    p.sparsity = m[1];
    p.aux = m[2];
    p.extra = m[3];
    p.l0 = m[4];
    p.dead_fraction = (since_fired > o.dead_window).to(at::kFloat).mean().item<double>();
    p.lr = last_lr;
    p.tokens_per_s = static_cast<double>((step - first_step) * o.batch) / s;
    p.eta_s = static_cast<double>(o.steps - step) * s / static_cast<double>(step - first_step);
    result.mse = p.mse;
    result.l0 = p.l0;
    result.dead_fraction = p.dead_fraction;
    acc.zero_();
    acc_n = 0;
    if (o.progress) o.progress(p);
  }

  TrainResult finish() {
    sae.set_inference_threshold(threshold.item<double>());
    result.steps = step;
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    result.tokens_per_s = static_cast<double>((step - first_step) * o.batch) / result.seconds;
    if (o.group) {
      result.bytes_reduced = o.group->bytes_reduced();
      result.seconds_communicating = o.group->seconds_communicating();
    }
    return result;
  }
};

Trainer::Trainer(SAE& sae, ActivationSource& source, const TrainOptions& options)
    : impl_(std::make_unique<Impl>(sae, source, options)) {}
Trainer::~Trainer() = default;

void Trainer::start() {
  std::error_code ec;
  const TrainOptions& o = impl_->o;
  if (o.resume && !o.checkpoint_path.empty() && std::filesystem::exists(o.checkpoint_path, ec)) load(o.checkpoint_path);
  else init();
}
void Trainer::init() { impl_->init(); }
void Trainer::step() { impl_->take_step(); }
bool Trainer::done() const { return impl_->step >= impl_->o.steps; }
int64_t Trainer::steps_done() const { return impl_->step; }
std::map<std::string, at::Tensor> Trainer::state() const { return impl_->state(); }
std::map<std::string, std::string> Trainer::state_metadata() const { return impl_->state_metadata(); }
void Trainer::save(const std::string& path) const { impl_->save(path); }
int64_t Trainer::load(const std::string& path) { return impl_->load(path); }
TrainResult Trainer::finish() { return impl_->finish(); }

TrainResult train_sae(SAE& sae, ActivationSource& source, const TrainOptions& options) {
  Trainer t(sae, source, options);
  t.start();
  while (!t.done()) t.step();
  return t.finish();
}

}  // namespace interp
