#include "interp/sae.h"
#include "sae/json_fields.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <limits>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "interp/error.h"
#include "interp/hooks.h"
#include "sae/sparse_encode.h"
#include "interp/safetensors.h"
#include "io/atomic_file.h"

namespace interp {
namespace fs = std::filesystem;
using json = nlohmann::json;

void SAEConfig::validate() const {
  auto bad = [](const std::string& field, const std::string& why) {
    return Error(fmt::format("SAE config: {} {}", field, why));
  };
  if (d_in < 1) throw bad("d_in", fmt::format("must be positive (got {})", d_in));
  if (d_sae < 1) throw bad("d_sae", fmt::format("must be positive (got {})", d_sae));
  const SAEArchitecture& arch = sae_architecture(architecture);
  if (arch.uses_k && (k < 1 || k > d_sae))
    throw bad("k", fmt::format("must be in 1..d_sae ({}) for {} (got {})", d_sae, architecture, k));
  if (!matryoshka_prefixes.empty()) {
    if (architecture != "matryoshka") throw bad("matryoshka_prefixes", fmt::format("apply to matryoshka, not {}", architecture));
    int64_t last = 0;
    for (int64_t m : matryoshka_prefixes) {
      if (m <= last)
        throw bad("matryoshka_prefixes", fmt::format("must increase from above 0 (got [{}])", fmt::join(matryoshka_prefixes, ", ")));
      last = m;
    }
    if (last != d_sae)
      throw bad("matryoshka_prefixes", fmt::format("must end at d_sae ({}) (got [{}])", d_sae, fmt::join(matryoshka_prefixes, ", ")));
  }
  if (!(l1_coefficient >= 0) || !std::isfinite(l1_coefficient)) throw bad("l1_coefficient", "must be a number >= 0");
  if (!(aux_coefficient >= 0) || !std::isfinite(aux_coefficient)) throw bad("aux_coefficient", "must be a number >= 0");
  if (!std::isfinite(threshold_init)) throw bad("threshold_init", "must be a number");
  if (architecture == "jumprelu" && !(bandwidth > 0)) throw bad("bandwidth", "must be > 0");
  if (aux_k < 0) throw bad("aux_k", "must be >= 0");
  if (!(norm_scale > 0)) throw bad("norm_scale", "must be > 0");
  if (dtype != "float32") throw bad("dtype", fmt::format("'{}' is not supported (float32)", dtype));
  if (normalize_activations != "none" && normalize_activations != "expected_average_only_in" &&
      normalize_activations != "constant_norm_rescale" && normalize_activations != "layer_norm")
    throw bad("normalize_activations",
              fmt::format("'{}' is not one SAELens writes (none, expected_average_only_in, constant_norm_rescale, "
                          "layer_norm)",
                          normalize_activations));
}

std::vector<int64_t> SAEConfig::prefixes() const {
  if (!matryoshka_prefixes.empty()) return matryoshka_prefixes;
  std::vector<int64_t> p;
  for (int64_t div : {16, 8, 4, 2})
    if (d_sae / div > 0 && (p.empty() || d_sae / div > p.back())) p.push_back(d_sae / div);
  p.push_back(d_sae);
  return p;
}

std::string SAEConfig::to_json() const {
  // SAELens reads architecture, d_in, d_sae, dtype, hook_name, normalize_activations, ...; the
  // fields it does not know are kept for interp.
  json j = {{"architecture", architecture},
            {"d_in", d_in},
            {"d_sae", d_sae},
            {"dtype", dtype},
            {"device", "cpu"},
            {"hook_name", hook_name},
            {"hook_layer", -1},
            {"apply_b_dec_to_input", true},
            {"normalize_activations", normalize_activations},
            {"k", k},
            {"l1_coefficient", l1_coefficient},
            {"bandwidth", bandwidth},
            {"threshold_init", threshold_init},
            {"aux_k", aux_k},
            {"aux_coefficient", aux_coefficient},
            {"seed", seed},
            {"interp_norm_scale", norm_scale},
            // further fields SAELens's SAEConfig.from_dict expects
            {"activation_fn_str", architecture == "topk" ? "topk" : "relu"},
            {"activation_fn_kwargs", sae_architecture(architecture).uses_k ? json{{"k", k}} : json::object()},
            {"finetuning_scaling_factor", false},
            {"model_name", ""},
            {"hook_head_index", nullptr},
            {"context_size", 128},
            {"prepend_bos", true},
            {"dataset_path", ""},
            {"dataset_trust_remote_code", false},
            {"sae_lens_training_version", nullptr},
            {"neuronpedia_id", nullptr},
            {"model_from_pretrained_kwargs", json::object()},
            {"seqpos_slice", json::array({nullptr})}};
  if (int layer = point_layer(hook_name); layer >= 0) j["hook_layer"] = layer;
  if (architecture == "matryoshka") j["matryoshka_prefixes"] = prefixes();
  return j.dump(2) + "\n";
}

SAEConfig SAEConfig::from_json(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON ({})", where, e.what()));
  }
  SAEConfig c;
  // A size must be an integer: 16.5 would otherwise be read as 16.
  auto integer = [&](const json& v, const char* field) { return sae_detail::json_integer(v, where, field); };
  try {
    if (!j.is_object()) throw Error(fmt::format("{}: not a JSON object of SAE settings", where));
    c.architecture = j.value("architecture", "standard");
    c.d_in = integer(j.at("d_in"), "d_in");
    c.d_sae = integer(j.at("d_sae"), "d_sae");
    // SAELens's activation function: relu (standard and the others), topk; anything else (tanh-relu,
    // ...) computes other latents than interp would, so it is refused rather than read as relu.
    const std::string act = j.contains("activation_fn_str") && j["activation_fn_str"].is_string()
                                ? j["activation_fn_str"].get<std::string>()
                                : j.value("activation_fn", std::string("relu"));
    if (act != "relu" && act != "topk")
      throw Error(fmt::format("{}: activation function '{}' is not one interp reads (relu, topk)", where, act));
    if (c.architecture == "standard" && act == "topk") c.architecture = "topk";
    bool has_k = false;
    if (j.contains("k") && !j["k"].is_null()) {
      c.k = integer(j["k"], "k");
      has_k = true;
    } else if (j.contains("activation_fn_kwargs") && j["activation_fn_kwargs"].is_object() &&
               j["activation_fn_kwargs"].contains("k")) {
      c.k = integer(j["activation_fn_kwargs"]["k"], "activation_fn_kwargs.k");  // SAELens keeps TopK's k here
      has_k = true;
    }
    if (sae_architecture(c.architecture).uses_k && !has_k)
      throw Error(fmt::format("{}: a {} SAE needs k (active latents per row), at the top level or in "
                              "activation_fn_kwargs; none is given",
                              where, c.architecture));
    c.l1_coefficient = j.value("l1_coefficient", c.l1_coefficient);
    c.bandwidth = j.value("bandwidth", c.bandwidth);
    c.threshold_init = j.value("threshold_init", c.threshold_init);
    c.aux_k = j.value("aux_k", c.aux_k);
    c.aux_coefficient = j.value("aux_coefficient", c.aux_coefficient);
    c.hook_name = j.value("hook_name", "");
    c.dtype = j.value("dtype", "float32");
    if (c.dtype == "torch.float32") c.dtype = "float32";
    c.normalize_activations = j.value("normalize_activations", "none");
    if (j.contains("normalize_activations") && j["normalize_activations"].is_null()) c.normalize_activations = "none";
    c.seed = j.value("seed", uint64_t{0});
    c.norm_scale = j.value("interp_norm_scale", 1.0);
    if (j.contains("matryoshka_prefixes")) c.matryoshka_prefixes = j["matryoshka_prefixes"].get<std::vector<int64_t>>();
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: {} (an SAELens cfg.json needs d_in and d_sae)", where, e.what()));
  }
  c.validate();
  return c;
}

SAE::SAE(const SAEConfig& cfg) : cfg_(cfg), scratch_(std::make_shared<sae_detail::Scratch>()) {
  cfg_.validate();
  at::Generator gen = at::detail::createCPUGenerator(cfg_.seed);
  // Decoder rows: random unit vectors; encoder: the decoder's transpose (Gao et al. 2024).
  W_dec_ = at::randn({cfg_.d_sae, cfg_.d_in}, gen, at::kFloat);
  W_dec_ = W_dec_ / W_dec_.norm(2, {1}, true);
  W_enc_ = W_dec_.t().clone().contiguous();
  b_enc_ = at::zeros({cfg_.d_sae}, at::kFloat);
  b_dec_ = at::zeros({cfg_.d_in}, at::kFloat);
  if (const auto& init = sae_architecture(cfg_.architecture).extra_parameters) extra_ = init(cfg_);
  for (auto* p : {&W_enc_, &W_dec_, &b_enc_, &b_dec_}) p->set_requires_grad(true);
  for (auto& [name, t] : extra_) t.set_requires_grad(true);
}

std::vector<at::Tensor> SAE::parameters() const {
  std::vector<at::Tensor> p = {W_enc_, W_dec_, b_enc_, b_dec_};
  for (const auto& [name, t] : extra_) p.push_back(t);
  return p;
}

const at::Tensor& SAE::param(const std::string& name) const {
  auto it = extra_.find(name);
  if (it == extra_.end()) throw Error(fmt::format("a {} SAE has no parameter '{}'", cfg_.architecture, name));
  return it->second;
}

const at::Tensor& SAE::threshold() const {
  static const at::Tensor none;
  auto it = extra_.find("threshold");
  return it == extra_.end() ? none : it->second;
}

void SAE::set_loss_coefficients(double l1_coefficient, int64_t aux_k, double aux_coefficient, double bandwidth) {
  SAEConfig c = cfg_;
  c.l1_coefficient = l1_coefficient;
  c.aux_k = aux_k;
  c.aux_coefficient = aux_coefficient;
  c.bandwidth = bandwidth;
  c.validate();
  cfg_ = c;
}

void SAE::normalize_decoder() {
  at::NoGradGuard g;
  W_dec_.div_(W_dec_.norm(2, {1}, true).clamp_min(1e-8));
}

namespace {
// (x - b_dec) @ W_enc + b_enc, as x @ W_enc + (b_enc - b_dec @ W_enc): the same function, but autograd
// then gets b_dec's gradient from a vector-matrix product instead of a [B, d_sae] x [d_sae, d_in] one.
at::Tensor encoder_bias(const at::Tensor& W_enc, const at::Tensor& b_enc, const at::Tensor& b_dec) {
  return b_enc - at::matmul(b_dec, W_enc);
}
at::Tensor pre_activations(const at::Tensor& x, const at::Tensor& W_enc, const at::Tensor& b_enc, const at::Tensor& b_dec) {
  return at::addmm(encoder_bias(W_enc, b_enc, b_dec), x, W_enc);
}
}  // namespace

at::Tensor SAEOutput::dense_h() const {
  if (h.defined()) return h;
  // scatter_add: padded rows (batchtopk) repeat index 0 with value 0
  return at::zeros({active_idx.size(0), d_sae}, active_vals.options()).scatter_add(-1, active_idx, active_vals.detach());
}

at::Tensor SAEOutput::fired() const {
  if (h.defined()) return (h.detach() > 0).any(0);
  at::Tensor f = at::zeros({d_sae}, active_vals.options().dtype(at::kBool));
  return f.index_fill_(0, active_idx.masked_select(active_vals.detach() > 0), true);
}

bool SAE::per_token_norm() const {
  return cfg_.normalize_activations == "constant_norm_rescale" || cfg_.normalize_activations == "layer_norm";
}

namespace {
// SAELens's run-time normalisations, per token (last dimension): x -> (x - shift) * scale in,
// y -> y / scale + shift out.
struct TokenNorm {
  at::Tensor scale, shift;  // [..., 1]; shift undefined for constant_norm_rescale
};
TokenNorm token_norm(const std::string& kind, const at::Tensor& x) {
  if (kind == "constant_norm_rescale") return {std::sqrt(static_cast<double>(x.size(-1))) / x.norm(2, {-1}, true), {}};
  at::Tensor mu = x.mean({-1}, true);
  at::Tensor sd = (x - mu).std({-1}, /*unbiased=*/true, /*keepdim=*/true);
  return {1.0 / (sd + 1e-5), mu};
}
}  // namespace

at::Tensor SAE::normalize_in(const at::Tensor& x) const {
  at::Tensor xs = x;
  if (per_token_norm()) {
    TokenNorm n = token_norm(cfg_.normalize_activations, x);
    xs = n.shift.defined() ? (x - n.shift) * n.scale : x * n.scale;
  }
  return cfg_.norm_scale == 1.0 ? xs : xs * cfg_.norm_scale;
}

at::Tensor SAE::normalize_out(const at::Tensor& y, const at::Tensor& x) const {
  at::Tensor ys = cfg_.norm_scale == 1.0 ? y : y / cfg_.norm_scale;
  if (!per_token_norm()) return ys;
  if (!x.defined())
    throw Error(fmt::format("SAE: this SAE normalises each token ({}), so decoding needs the activations the latents "
                            "came from: call decode(h, x) or reconstruct(x)",
                            cfg_.normalize_activations));
  if (x.sizes() != ys.sizes())
    throw Error(fmt::format("SAE: decoding with the statistics of x: x has shape [{}] but the decoded rows have [{}]",
                            fmt::join(x.sizes(), ", "), fmt::join(ys.sizes(), ", ")));
  // SAELens's out: layer_norm y * std + mean (std without its 1e-5), constant_norm_rescale y / coeff
  if (cfg_.normalize_activations == "layer_norm") {
    at::Tensor mu = x.mean({-1}, true);
    return ys * (x - mu).std({-1}, /*unbiased=*/true, /*keepdim=*/true) + mu;
  }
  return ys / token_norm(cfg_.normalize_activations, x).scale;
}

at::Tensor SAE::encode_pre(const at::Tensor& x) const {
  return pre_activations(normalize_in(x), W_enc_, b_enc_, b_dec_);
}

at::Tensor SAE::encode(const at::Tensor& x) const {
  return sae_architecture(cfg_.architecture).activate(*this, encode_pre(x), false);
}

at::Tensor SAE::decode(const at::Tensor& h, const at::Tensor& x) const {
  return normalize_out(at::addmm(b_dec_, h, W_dec_), x);
}

at::Tensor SAE::reconstruct(const at::Tensor& x) const { return decode(encode(x), x); }

namespace {

// sum_j vals[b, j] * W[idx[b, j]] for every row b: rows [B, k] of W gathered and weighted.
at::Tensor decode_rows(const at::Tensor& W, const at::Tensor& idx, const at::Tensor& vals) {
  if (W.device().is_cpu() && W.scalar_type() == at::kFloat && vals.scalar_type() == at::kFloat)
    return sae_detail::sparse_decode(W, idx, vals);
  const int64_t B = idx.size(0), k = idx.size(1);
  at::Tensor offsets = at::arange(0, B * k, k, idx.options());
  return std::get<0>(at::embedding_bag(W, idx.reshape(-1), offsets, false, /*mode=sum*/ 0, false, vals.reshape(-1)));
}

}  // namespace

SAEOutput SAE::forward(const at::Tensor& x_raw, double sparsity_weight, const at::Tensor& dead_mask) const {
  const SAEArchitecture& arch = sae_architecture(cfg_.architecture);
  at::Tensor x = normalize_in(x_raw);  // the SAE's units
  // With a fixed number of active latents per row (TopK) on the CPU, the pre-activations are
  // computed without gradient and only the chosen ones get it back, with a sparse backward
  // (sparse_encode.cpp): no dense [B, d_sae] gradient, no second GEMM.
  const bool sparse = arch.active && x.device().is_cpu() && x.scalar_type() == at::kFloat && !x.requires_grad();
  at::Tensor bias = encoder_bias(W_enc_, b_enc_, b_dec_);  // (x - b_dec) W_enc + b_enc = x W_enc + bias
  // On the sparse path the GEMM leaves the bias out (addmm would first copy it into all B x d_sae
  // outputs, then read them back): the selection adds it as it reads. `pre` is then built only if
  // the architecture's sparsity or extra loss asks for it.
  at::Tensor xw, pre;
  sae_detail::ScratchLease lease(sparse ? scratch_.get() : nullptr);
  if (sparse) {
    at::NoGradGuard g;
    xw = lease.get(x.size(0), cfg_.d_sae, x);
    at::mm_out(xw, x, W_enc_.detach());
  } else {
    pre = at::addmm(bias, x, W_enc_);
  }
  auto full_pre = [&]() -> const at::Tensor& {
    if (!pre.defined()) {
      at::NoGradGuard g;
      pre = xw + bias.detach();
    }
    return pre;
  };
  auto chosen = [&](const at::Tensor& idx, const at::Tensor& vals) {  // ReLU'd, with gradient
    return at::relu(sparse ? sae_detail::sparse_pre_activations(x, W_enc_, bias, idx, vals) : vals);
  };
  SAEOutput out;
  out.d_sae = cfg_.d_sae;
  at::Tensor y;
  if (arch.active) {  // fixed number of active latents per row: decode only those rows, no dense h
    at::Tensor raw;
    std::tie(out.active_idx, raw) = sparse ? arch.active(*this, xw, bias.detach()) : arch.active(*this, pre, at::Tensor());
    out.active_vals = chosen(out.active_idx, raw);
    y = decode_rows(W_dec_, out.active_idx, out.active_vals) + b_dec_;
    out.l0 = (out.active_vals.detach() > 0).sum(-1).to(at::kFloat).mean();
  } else {
    out.h = arch.activate(*this, pre, true);
    y = at::addmm(b_dec_, out.h, W_dec_);
    out.l0 = (out.h.detach() != 0).sum(-1).to(at::kFloat).mean();
  }
  out.mse = (y - x).pow(2).sum(-1).mean();
  out.sparsity = arch.sparsity ? arch.sparsity(*this, full_pre(), out.h) : at::zeros({}, x.options());
  out.aux = at::zeros({}, x.options());
  if (arch.uses_aux_k && cfg_.aux_k > 0 && dead_mask.defined() && dead_mask.any().item<bool>()) {
    // AuxK (Gao et al. 2024): the dead latents' top-aux_k reconstruct the residual.
    int64_t n_dead = dead_mask.sum().item<int64_t>();
    int64_t kk = std::min(cfg_.aux_k, n_dead);
    const at::Tensor alive = dead_mask.logical_not();
    const float minus_inf = -std::numeric_limits<float>::infinity();
    at::Tensor residual = (x - y).detach();
    at::Tensor e_hat;
    if (!sparse) {
      auto [vals, idx] = sae_detail::row_topk(pre.masked_fill(alive.unsqueeze(0), minus_inf), kk);
      e_hat = decode_rows(W_dec_, idx, chosen(idx, vals));
    } else if (kk * 16 <= cfg_.d_sae) {  // the live latents' bias is -inf: only dead ones are chosen
      auto [vals, idx] = sae_detail::row_topk(xw, kk, bias.detach().masked_fill(alive, minus_inf));
      e_hat = decode_rows(W_dec_, idx, chosen(idx, vals));
    } else {  // more than 1/16 of the latents per row: dense products beat the sparse kernels
      at::Tensor pre_g = at::addmm(bias, x, W_enc_);
      auto [vals, idx] = pre_g.masked_fill(alive.unsqueeze(0), minus_inf).topk(kk, -1);
      e_hat = at::mm(at::zeros_like(pre_g).scatter(-1, idx, at::relu(vals)), W_dec_);
    }
    at::Tensor denom = (residual - residual.mean(0, true)).pow(2).sum(-1).mean().clamp_min(1e-12);
    out.aux = (e_hat - residual).pow(2).sum(-1).mean() / denom;
  }
  out.loss = out.mse + sparsity_weight * cfg_.l1_coefficient * out.sparsity + cfg_.aux_coefficient * out.aux;
  out.extra = arch.extra_loss ? arch.extra_loss(*this, x, full_pre(), out.h) : at::zeros({}, x.options());
  if (arch.extra_loss) out.loss = out.loss + out.extra;
  out.x_hat = normalize_out(y, x_raw);
  return out;
}

void SAE::to(const c10::Device& device) {
  for (auto* p : {&W_enc_, &W_dec_, &b_enc_, &b_dec_}) *p = p->detach().to(device).set_requires_grad(true);
  for (auto& [name, t] : extra_) t = t.detach().to(device).set_requires_grad(true);
}

void SAE::save(const std::string& dir) const {
  at::NoGradGuard g;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(fmt::format("{}: cannot create ({})", dir, ec.message()));
  // Fold the activation scale s into the weights: h(x) = act(((s x) - b) W_e + c) equals
  // act((x - b/s)(s W_e) + c), and x_hat = (h W_d + b)/s = h (W_d/s) + b/s.
  const double s = cfg_.norm_scale;
  const SAEArchitecture& arch = sae_architecture(cfg_.architecture);
  std::map<std::string, at::Tensor> t = {{"W_enc", (W_enc_ * s).cpu()},
                                         {"W_dec", (W_dec_ / s).cpu()},
                                         {arch.saelens_b_enc, b_enc_.cpu()},
                                         {"b_dec", (b_dec_ / s).cpu()}};
  SAEConfig folded = cfg_;
  folded.norm_scale = 1.0;
  for (const auto& [name, v] : extra_) t[name] = v.detach().cpu();
  if (arch.batch_threshold) t["threshold"] = at::full({cfg_.d_sae}, batch_threshold_, at::kFloat);
  safetensors_save((fs::path(dir) / "sae_weights.safetensors").string(), t,
                   {{"format", "pt"}, {"interp_batchtopk_threshold", std::to_string(batch_threshold_)}});
  std::string text = folded.to_json();
  AtomicFile f((fs::path(dir) / "cfg.json").string());
  f.write(text.data(), text.size());
  f.commit();
}

}  // namespace interp
