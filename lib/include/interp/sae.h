// interp/sae.h: sparse autoencoders, in the SAELens file layout, with ground-truth checks.
//
// The formalism: h = act((x - b_dec) @ W_enc + b_enc), x_hat = h @ W_dec + b_dec, with
//   W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in] (threshold [d_sae] for JumpReLU).
// Architectures (one file each in lib/src/sae/, one registry by name):
//   standard   ReLU; L1 penalty on h weighted by decoder row norms
//   topk       keep the k largest pre-activations (ReLU'd); AuxK loss on dead latents
//   batchtopk  keep the k*batch largest over the batch; a threshold estimated for inference
//   jumprelu   h = pre * (pre > threshold); thresholds trained with a straight-through estimator
//              (rectangle kernel of width `bandwidth`), L0 penalty
//
//   interp::SAEConfig cfg; cfg.architecture = "topk"; cfg.d_in = 256; cfg.d_sae = 2048; cfg.k = 32;
//   interp::SAE sae(cfg);                       // random init, decoder rows unit norm
//   auto out = sae.forward(x);                  // out.x_hat, out.h, out.loss (mse, sparsity, aux)
//   sae.save("out/sae");                        // cfg.json + sae_weights.safetensors (SAELens layout)
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace interp {

struct SAEConfig {
  std::string architecture = "topk";  // standard, topk, batchtopk, jumprelu, gated, matryoshka
  int64_t d_in = 0, d_sae = 0;
  int64_t k = 32;                     // topk, batchtopk, matryoshka
  // matryoshka: increasing prefix sizes, the last d_sae; empty: d_sae/16, d_sae/8, d_sae/4, d_sae/2, d_sae
  std::vector<int64_t> matryoshka_prefixes;
  double l1_coefficient = 1.0;        // standard, gated: L1 weight; jumprelu: L0 weight
  double bandwidth = 0.001;           // jumprelu: straight-through estimator width
  double threshold_init = 0.001;      // jumprelu
  int64_t aux_k = 512;                // topk/batchtopk: latents in the AuxK loss (0: off)
  double aux_coefficient = 1.0 / 32;  // AuxK loss weight
  std::string hook_name;              // where it reads activations (metadata; used by evaluation)
  std::string dtype = "float32";
  // Activations are scaled by this before encoding and the output unscaled after; 1 after
  // save() folds it into the weights. Set by training to make E|x| = sqrt(d_in).
  double norm_scale = 1.0;
  // SAELens's name. "none"; "expected_average_only_in" (a constant SAELens folds into the weights on
  // save: nothing at run time); or a per-token normalisation at run time (SAELens's formulas):
  //   "constant_norm_rescale": x * sqrt(d_in) / |x| in, the same factor divided out after decoding;
  //   "layer_norm": (x - mean) / (std + 1e-5) in (std unbiased), decoded * std + mean out.
  // Decoding then needs the token's own statistics: decode(h, x) or reconstruct(x).
  std::string normalize_activations = "none";
  uint64_t seed = 0;

  void validate() const;  // throws interp::Error naming the field
  std::vector<int64_t> prefixes() const;  // matryoshka's prefix sizes (the default filled in)
  std::string to_json() const;
  static SAEConfig from_json(const std::string& text, const std::string& where);
};

struct SAEOutput {
  at::Tensor x_hat;           // [B, d_in]
  at::Tensor h;               // [B, d_sae] dense; undefined when the architecture gives active latents:
  at::Tensor active_idx, active_vals;  // [B, k] each (TopK): the latents that fired and their values
  int64_t d_sae = 0;
  at::Tensor dense_h() const; // h, built from the active latents if needed (no gradient)
  at::Tensor fired() const;   // [d_sae] bool: latents active in any row
  // scalars; loss = mse + sparsity_weight * l1_coefficient * sparsity + aux_coefficient * aux + extra:
  // aux is AuxK, extra the architecture's own term, weighted (gated: gate reconstruction;
  // matryoshka: the prefixes' reconstructions)
  at::Tensor mse, sparsity, aux, extra, loss;
  at::Tensor l0;              // scalar: mean active latents per row
};

namespace sae_detail {
struct Scratch;
}

class SAE {
 public:
  explicit SAE(const SAEConfig& cfg);  // random init (seeded), decoder rows unit norm, W_enc = W_dec^T
  const SAEConfig& config() const { return cfg_; }

  at::Tensor encode_pre(const at::Tensor& x) const;  // (normalize_in(x) - b_dec) @ W_enc + b_enc
  at::Tensor encode(const at::Tensor& x) const;      // inference activations h [B, d_sae]
  // h @ W_dec + b_dec, mapped back to the activations' units. An SAE that normalises each token
  // (per_token_norm()) needs x, the activations h was encoded from (or any with the statistics
  // wanted); without it that is an interp::Error, not a number in the wrong units.
  at::Tensor decode(const at::Tensor& h, const at::Tensor& x = {}) const;
  at::Tensor reconstruct(const at::Tensor& x) const;  // decode(encode(x), x)
  // The SAE's input units: x times the training scale, then the per-token normalisation if any;
  // normalize_out(y, x) maps y in those units back with x's statistics.
  at::Tensor normalize_in(const at::Tensor& x) const;
  at::Tensor normalize_out(const at::Tensor& y, const at::Tensor& x) const;
  bool per_token_norm() const;  // normalize_activations is constant_norm_rescale or layer_norm
  // Training forward: losses included. sparsity_weight scales the sparsity term (L1/L0 warm-up);
  // dead_mask [d_sae] (bool) selects latents for the AuxK loss.
  SAEOutput forward(const at::Tensor& x, double sparsity_weight = 1.0, const at::Tensor& dead_mask = {}) const;

  // trainable: W_enc, W_dec, b_enc, b_dec, then the architecture's own (extra_parameters(), by name)
  std::vector<at::Tensor> parameters() const;
  const std::map<std::string, at::Tensor>& extra_parameters() const { return extra_; }  // threshold, r_mag, b_mag
  const at::Tensor& param(const std::string& name) const;  // an extra parameter; throws if this SAE lacks it
  const at::Tensor& W_enc() const { return W_enc_; }  // [d_in, d_sae]; tensors share storage:
  const at::Tensor& W_dec() const { return W_dec_; }  // [d_sae, d_in]  in-place updates (no grad)
  const at::Tensor& b_enc() const { return b_enc_; }  // [d_sae]        change the SAE
  const at::Tensor& b_dec() const { return b_dec_; }  // [d_in]
  const at::Tensor& threshold() const;  // [d_sae], jumprelu only (undefined otherwise)
  void normalize_decoder();                        // unit-norm rows of W_dec (no grad)
  void set_norm_scale(double s) { cfg_.norm_scale = s; }
  // Training settings a cfg.json from another tool may not carry.
  void set_loss_coefficients(double l1_coefficient, int64_t aux_k, double aux_coefficient, double bandwidth);
  void set_inference_threshold(double t) { batch_threshold_ = t; }  // batchtopk
  // Replaces the weights (shapes as above; `extra` holds the architecture's own, each [d_sae]), e.g.
  // read from another tool's file. Throws interp::Error for a shape that does not fit the config.
  void load_weights(const at::Tensor& W_enc, const at::Tensor& b_enc, const at::Tensor& W_dec, const at::Tensor& b_dec,
                    const std::map<std::string, at::Tensor>& extra = {});
  double inference_threshold() const { return batch_threshold_; }

  // SAELens layout: DIR/cfg.json + DIR/sae_weights.safetensors (W_enc, W_dec, b_enc, b_dec[, threshold]).
  // save() folds norm_scale into the weights, so the saved SAE takes raw activations.
  void save(const std::string& dir) const;
  // EleutherAI sparsify layout (TopK only): DIR/cfg.json + DIR/sae.safetensors (encoder.weight
  // [d_sae, d_in], encoder.bias, W_dec [d_sae, d_in], b_dec).
  void save_sparsify(const std::string& dir) const;
  // Reads SAELens, sparsify or dictionary_learning folders (detected; see sae_inspect). A folder holding several SAEs by hook is an
  // error naming them: pass one of its subfolders.
  static SAE load(const std::string& dir);
  void to(const c10::Device& device);

 private:
  SAEConfig cfg_;
  at::Tensor W_enc_, W_dec_, b_enc_, b_dec_;
  std::map<std::string, at::Tensor> extra_;  // the architecture's own parameters
  double batch_threshold_ = 0;  // batchtopk inference threshold (running estimate)
  std::shared_ptr<sae_detail::Scratch> scratch_;  // the training forward's reused GEMM output
};

// What an SAE folder holds, as SAE::load reads it.
struct SAEFolderInfo {
  std::string dir;
  std::string format;              // "saelens", "sparsify" or "dictionary_learning"
  SAEConfig config;                // as loaded (d_in, d_sae, architecture, k, hook_name, ...)
  std::string weights_dtype;       // of the stored weights ("F32", "BF16", ...); loaded as float32
  std::vector<std::string> notes;  // what loading changes (a folded bias, a converted dtype)
};
// The SAEs under `dir`: dir itself if it holds one, else each subfolder that does, sorted (a SAELens
// release or a sparsify run holds one folder per hook). Throws interp::Error if there are none.
std::vector<SAEFolderInfo> sae_inspect(const std::string& dir);

// The architecture registry: activation function and sparsity penalty by name.
struct SAEArchitecture {
  std::string name;
  bool uses_k = false;        // k is a setting (topk, batchtopk, matryoshka)
  bool unit_decoder = true;   // decoder rows renormalised after each step (standard: its L1 is norm-weighted)
  bool batch_threshold = false;  // inference keeps pre > a threshold estimated in training (batchtopk)
  std::string saelens_b_enc = "b_enc";  // the encoder bias's name in SAELens files (gated: b_gate)
  // The architecture's own parameters beyond W_enc, W_dec, b_enc, b_dec: name -> initial value [d_sae].
  // Saved and loaded under these names; unchanged by the activation scale folded in on save.
  std::function<std::map<std::string, at::Tensor>(const SAEConfig&)> extra_parameters;
  // Optional loss term of its own, weighted already, added to the loss (x in normalised units,
  // h dense or undefined when `active` is used).
  std::function<at::Tensor(const SAE&, const at::Tensor& x, const at::Tensor& pre, const at::Tensor& h)> extra_loss;
  // Optional, after each optimiser step, without gradient: keep parameters in range (thresholds >= 0).
  std::function<void(SAE&)> after_step;
  // pre [B, d_sae] -> h [B, d_sae]; `training` selects the training-time rule (batchtopk).
  std::function<at::Tensor(const SAE&, const at::Tensor& pre, bool training)> activate;
  // Optional sparsity term (before its weight): L1 of norm-weighted h, L0; none when unset.
  std::function<at::Tensor(const SAE&, const at::Tensor& pre, const at::Tensor& h)> sparsity;
  bool uses_aux_k = false;
  // Optional: the active latents as (indices [B, k], their pre-activations [B, k]) when every row
  // has a fixed number, or rows padded to the largest count (pads: index 0, value -inf; batchtopk);
  // their values are then ReLU(pre-activation). The pre-activations are
  // xw + bias, bias [d_sae] added to every row; bias is undefined when xw already holds it. The
  // training forward decodes only those rows of W_dec and, on the CPU, computes xw without gradient
  // and without the bias (the selection adds it as it reads: no extra pass over [B, d_sae]); the
  // chosen pre-activations alone carry the gradient, through a sparse backward
  // (lib/src/sae/sparse_encode.cpp). That is where TopK's speed comes from. `sparsity` and
  // `extra_loss`, when set, are then given the full pre-activations, built for them. xw may be a
  // buffer the next forward reuses: return new tensors, not views of it.
  std::function<std::pair<at::Tensor, at::Tensor>(const SAE&, const at::Tensor& xw, const at::Tensor& bias)> active;
};
const SAEArchitecture& sae_architecture(const std::string& name);  // throws with the known names
std::vector<std::string> sae_architectures();

// ---------------------------------------------------------------------------------------------
// Ground truth (Sharkey et al. 2022): n unit-norm features in d dimensions, each active with its own
// probability, magnitudes uniform in [0, 1].

struct SyntheticConfig {
  int64_t n_features = 256, d = 128;
  std::string frequencies = "uniform";  // "uniform" or "geometric" (p_i proportional to decay^i)
  double decay = 0.99;
  double mean_active = 5;               // features active per sample, on average
  double correlation = 0;               // > 0: features come in correlated pairs (i, i+1)
  uint64_t seed = 0;
};

class SyntheticData {
 public:
  explicit SyntheticData(const SyntheticConfig& cfg);
  at::Tensor features() const { return features_; }  // [n_features, d], unit rows
  at::Tensor probabilities() const { return p_; }    // [n_features]
  at::Tensor sample(int64_t n);                      // [n, d], deterministic sequence by seed

 private:
  SyntheticConfig cfg_;
  at::Tensor features_, p_;
  at::Generator gen_;
};

struct Recovery {
  double mmcs = 0;          // mean over true features of the max cosine with any decoder row
  int64_t recovered = 0;    // true features with max cosine > threshold
  int64_t n_features = 0;
};
Recovery feature_recovery(const at::Tensor& true_features, const at::Tensor& W_dec, double threshold = 0.9);

}  // namespace interp
