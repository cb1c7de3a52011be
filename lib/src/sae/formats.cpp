// SAE files in the layouts of other tools: SAELens (interp's own), EleutherAI sparsify and
// dictionary_learning (ae.pt state dicts, read with LibTorch's unpickler: no Python). One
// reader detects the layout; both map onto interp's formalism
//   h = act((x - b_dec) @ W_enc + b_enc), x_hat = h @ W_dec + b_dec.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include <torch/csrc/jit/serialization/pickle.h>

#include <map>

#include "interp/error.h"
#include "interp/safetensors.h"
#include "interp/sae.h"
#include "sae/json_fields.h"
#include "interp/util.h"
#include "io/atomic_file.h"

namespace interp {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw Error(fmt::format("{}: cannot read", p.string()));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// "saelens", "sparsify", "dictionary_learning" or "" (no SAE here).
std::string layout_of(const fs::path& dir) {
  std::error_code ec;
  if (fs::is_regular_file(dir / "ae.pt", ec)) return "dictionary_learning";
  if (!fs::is_regular_file(dir / "cfg.json", ec)) return "";
  const bool saelens = fs::is_regular_file(dir / "sae_weights.safetensors", ec);
  const bool sparsify = fs::is_regular_file(dir / "sae.safetensors", ec);
  if (saelens && sparsify) {  // both weight files (a folder written twice): cfg.json decides
    json j = json::parse(read_text(dir / "cfg.json"), nullptr, false);
    return j.is_object() && !j.contains("d_sae") && (j.contains("num_latents") || j.contains("expansion_factor"))
               ? "sparsify"
               : "saelens";
  }
  return saelens ? "saelens" : sparsify ? "sparsify" : "";
}

// A tensor of the file, checked for shape, as float32.
at::Tensor take(const SafetensorsFile& f, const std::string& file, const std::string& name, std::vector<int64_t> shape,
                const std::string& implied_by) {
  auto it = f.tensors.find(name);
  if (it == f.tensors.end()) throw Error(fmt::format("{} lacks '{}'", file, name));
  if (it->second.sizes().vec() != shape)
    throw Error(fmt::format("{}: '{}' has shape [{}] but {} implies [{}]", file, name, fmt::join(it->second.sizes(), ", "),
                            implied_by, fmt::join(shape, ", ")));
  at::Tensor t = it->second.to(at::kFloat).contiguous();
  if (!at::isfinite(t).all().item<bool>())
    throw Error(fmt::format("{}: '{}' holds {} NaN or infinite values; the SAE's weights are damaged (re-export them)",
                            file, name, (~at::isfinite(t)).sum().item<int64_t>()));
  return t;
}

std::string dtype_of(const SafetensorsFile& f, const std::string& name) {
  auto it = f.tensors.find(name);
  if (it == f.tensors.end()) return "?";
  switch (it->second.scalar_type()) {
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kDouble: return "F64";
    default: return c10::toString(it->second.scalar_type());
  }
}

// sparsify's cfg.json -> interp's config (TopK; the folder name is the hook point).
SAEConfig sparsify_config(const fs::path& dir) {
  const std::string where = (dir / "cfg.json").string();
  json j;
  try {
    j = json::parse(read_text(dir / "cfg.json"));
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON ({})", where, e.what()));
  }
  SAEConfig c;
  try {
    const std::string act = j.value("activation", "topk");
    if (act != "topk")
      throw Error(fmt::format("{}: activation '{}' is not supported (sparsify's topk is)", where, act));
    if (j.value("transcode", false))
      throw Error(fmt::format("{}: a transcoder (transcode: true) maps one point to another; interp reads SAEs", where));
    if (j.value("skip_connection", false))
      throw Error(fmt::format("{}: skip_connection (W_skip) is not supported", where));
    c.architecture = "topk";
    auto integer = [&](const char* field, bool required) -> int64_t {
      if (!j.contains(field) || j.at(field).is_null()) {
        if (required) throw Error(fmt::format("{}: '{}' is missing", where, field));
        return 0;
      }
      return sae_detail::json_integer(j.at(field), where, field);
    };
    c.d_in = integer("d_in", true);
    const int64_t n = integer("num_latents", false), factor = integer("expansion_factor", false);
    if (n <= 0 && c.d_in > 0 && factor > std::numeric_limits<int64_t>::max() / c.d_in)
      throw Error(fmt::format("{}: d_in {} x expansion_factor {} is too large", where, c.d_in, factor));
    c.d_sae = n > 0 ? n : c.d_in * factor;
    c.k = integer("k", true);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: {} (a sparsify cfg.json has d_in, k and num_latents or expansion_factor)", where,
                            e.what()));
  }
  c.hook_name = dir.filename().string();
  c.validate();
  return c;
}

SAEConfig saelens_config(const fs::path& dir, bool* apply_b_dec_to_input) {
  const std::string text = read_text(dir / "cfg.json");
  SAEConfig c = SAEConfig::from_json(text, (dir / "cfg.json").string());
  c.norm_scale = 1.0;
  json j = json::parse(text, nullptr, false);
  *apply_b_dec_to_input = !j.is_object() || !j.contains("apply_b_dec_to_input") ||
                          !j["apply_b_dec_to_input"].is_boolean() || j["apply_b_dec_to_input"].get<bool>();
  return c;
}

// ---- dictionary_learning: ae.pt (a state dict saved with torch.save) + config.json ---------------

struct DictionaryLearning {
  std::string dict_class;  // AutoEncoder, AutoEncoderNew, AutoEncoderTopK, BatchTopKSAE, JumpReluAutoEncoder
  std::map<std::string, at::Tensor> state;
  std::string hook;        // the trainer's submodule_name, if any
  std::string weights_dtype;
};

// The pickle inside torch.save's archive (data.pkl), walked opcode by opcode before LibTorch's
// unpickler sees it: that unpickler sizes its memo table from the ids in BINPUT/LONG_BINPUT
// (found by tests/fuzz/fuzz_ae_pt: one id asked for 26 GB) and trusts string lengths. Here every
// argument must lie inside the pickle, memo ids must be put in order and got only once put, and
// only the opcodes of protocol 2-4 that a state dict uses are accepted.
void check_pickle(const char* p, uint64_t n, const std::string& file) {
  auto bad = [&](const std::string& why) {
    return Error(fmt::format("{}: not a state dict saved with torch.save (its pickle is damaged: {})", file, why));
  };
  auto le = [&](uint64_t at, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[at + i])) << (8 * i);
    return v;
  };
  uint64_t at = 0, memo = 0;
  auto need = [&](uint64_t bytes) {
    if (bytes > n - at) throw bad("an argument runs past the end");
  };
  auto put = [&](uint64_t id) {
    if (id > memo) throw bad(fmt::format("memo id {} out of order", id));
    if (id == memo) ++memo;
  };
  auto get = [&](uint64_t id) {
    if (id >= memo) throw bad(fmt::format("memo id {} read before it is written", id));
  };
  while (at < n) {
    const uint8_t op = static_cast<uint8_t>(p[at++]);
    switch (op) {
      case '.': return;  // STOP
      case 0x80: need(1), at += 1; break;  // PROTO
      case 0x95: need(8), at += 8; break;  // FRAME
      case ')': case ']': case '}': case '(': case 'N': case 0x88: case 0x89: case 't': case 0x85: case 0x86:
      case 0x87: case 'a': case 'e': case 's': case 'u': case 'R': case 'b': case 'Q': case 0x81: case 'd':
      case 'l': case '0': case '2': case 0x93: case 0x8f: case 0x90: case 0x91:
        break;  // no argument
      case 0x94: put(memo); break;  // MEMOIZE
      case 'q': need(1), put(le(at, 1)), at += 1; break;  // BINPUT
      case 'r': need(4), put(le(at, 4)), at += 4; break;  // LONG_BINPUT
      case 'h': need(1), get(le(at, 1)), at += 1; break;  // BINGET
      case 'j': need(4), get(le(at, 4)), at += 4; break;  // LONG_BINGET
      case 'K': need(1), at += 1; break;  // BININT1
      case 'M': need(2), at += 2; break;  // BININT2
      case 'J': need(4), at += 4; break;  // BININT
      case 'G': need(8), at += 8; break;  // BINFLOAT
      case 0x8a: need(1), at += 1 + static_cast<uint8_t>(p[at]), need(0); break;  // LONG1
      case 'U': case 'C': case 0x8c: need(1), at += 1, need(le(at - 1, 1)), at += le(at - 1, 1); break;
      case 'X': case 'T': case 'B': {  // BINUNICODE, BINSTRING, BINBYTES
        need(4);
        const uint64_t len = le(at, 4);
        at += 4, need(len), at += len;
        break;
      }
      case 0x8d: case 0x8e: {  // BINUNICODE8, BINBYTES8
        need(8);
        const uint64_t len = le(at, 8);
        at += 8, need(len), at += len;
        break;
      }
      case 'c': {  // GLOBAL: module\nname\n
        for (int line = 0; line < 2; ++line) {
          const void* nl = std::memchr(p + at, '\n', n - at);
          if (!nl) throw bad("GLOBAL without its newline");
          at = static_cast<uint64_t>(static_cast<const char*>(nl) - p) + 1;
        }
        break;
      }
      default:
        throw bad(fmt::format("opcode 0x{:02x} at byte {} is not one a state dict uses", op, at - 1));
    }
    if (at > n) throw bad("an argument runs past the end");
  }
  throw bad("no STOP opcode");
}

// torch.save writes a zip archive. LibTorch 1.13's zip reader (miniz) reads freed memory on some
// damaged archives (found by tests/fuzz/fuzz_ae_pt: a truncated file), so the container is checked
// here first: the end-of-central-directory record (zip64 included), every central-directory entry,
// and every entry's local header and data, all inside the file and in order. Throws interp::Error.
void check_zip(const std::vector<char>& b, const std::string& file) {
  const uint64_t n = b.size();
  auto u16 = [&](uint64_t at) -> uint64_t {
    return static_cast<uint8_t>(b[at]) | (static_cast<uint64_t>(static_cast<uint8_t>(b[at + 1])) << 8);
  };
  auto u32 = [&](uint64_t at) -> uint64_t { return u16(at) | (u16(at + 2) << 16); };
  auto u64 = [&](uint64_t at) -> uint64_t { return u32(at) | (u32(at + 4) << 32); };
  auto bad = [&](const std::string& why) {
    return Error(fmt::format("{}: not a state dict saved with torch.save (damaged zip archive: {})", file, why));
  };
  if (n < 22) throw bad("too short");
  uint64_t eocd = n;  // the record is the last thing in the file, after at most 65535 bytes of comment
  for (uint64_t at = n - 22 + 1; at-- > 0 && n - 22 - at <= 65535;)
    if (u32(at) == 0x06054b50 && at + 22 + u16(at + 20) == n) {
      eocd = at;
      break;
    }
  if (eocd == n) throw bad("no end-of-central-directory record (truncated?)");
  uint64_t entries = u16(eocd + 10), cd_size = u32(eocd + 12), cd_offset = u32(eocd + 16), cd_end_limit = eocd;
  if (u16(eocd + 4) != 0 || u16(eocd + 6) != 0 || u16(eocd + 8) != entries) throw bad("multi-disk archive");
  if (eocd >= 20 && u32(eocd - 20) == 0x07064b50) {  // zip64 locator, then the zip64 record it points to
    const uint64_t rec = u64(eocd - 20 + 8);
    if (rec > eocd - 20 || eocd - 20 - rec < 56 || u32(rec) != 0x06064b50) throw bad("bad zip64 record");
    entries = u64(rec + 32), cd_size = u64(rec + 40), cd_offset = u64(rec + 48), cd_end_limit = rec;
  }
  if (cd_offset > cd_end_limit || cd_size > cd_end_limit - cd_offset) throw bad("central directory outside the file");
  uint64_t at = cd_offset, count = 0;
  const uint64_t cd_end = cd_offset + cd_size;
  while (at < cd_end) {
    if (cd_end - at < 46 || u32(at) != 0x02014b50) throw bad("bad central-directory entry");
    const uint64_t name_len = u16(at + 28), extra_len = u16(at + 30), comment_len = u16(at + 32);
    if (46 + name_len + extra_len + comment_len > cd_end - at) throw bad("central-directory entry runs past its end");
    uint64_t csize = u32(at + 20), usize = u32(at + 24), local = u32(at + 42);
    if (u16(at + 10) != 0 && u16(at + 10) != 8) throw bad("unknown compression method");
    for (uint64_t e = at + 46 + name_len; e + 4 <= at + 46 + name_len + extra_len;) {  // zip64 sizes and offset
      const uint64_t id = u16(e), len = u16(e + 2);
      if (e + 4 + len > at + 46 + name_len + extra_len) throw bad("bad extra field");
      if (id == 0x0001) {
        uint64_t f = e + 4;
        auto take = [&](uint64_t& v) {
          if (v != 0xFFFFFFFF) return;
          if (f + 8 > e + 4 + len) throw bad("short zip64 field");
          v = u64(f);
          f += 8;
        };
        take(usize), take(csize), take(local);
      }
      e += 4 + len;
    }
    if (local > cd_offset || cd_offset - local < 30 || u32(local) != 0x04034b50) throw bad("bad local header");
    const uint64_t data = local + 30 + u16(local + 26) + u16(local + 28);
    if (data > cd_offset || csize > cd_offset - data) throw bad("an entry's data runs past the central directory");
    const std::string name(b.data() + at + 46, name_len);
    if (name.size() >= 8 && name.compare(name.size() - 8, 8, "data.pkl") == 0) {
      if (u16(at + 10) != 0) throw bad("data.pkl is compressed (torch.save stores it)");
      check_pickle(b.data() + data, csize, file);
    }
    at += 46 + name_len + extra_len + comment_len;
    ++count;
  }
  if (count != entries) throw bad(fmt::format("{} entries listed, {} found", entries, count));
}

DictionaryLearning read_dictionary_learning(const fs::path& dir) {
  const std::string file = (dir / "ae.pt").string();
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot read", file));
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  check_zip(bytes, file);
  c10::IValue v;
  try {
    v = torch::jit::pickle_load(bytes);
  } catch (const c10::Error& e) {
    throw Error(fmt::format("{}: not a state dict saved with torch.save ({})", file,
                            error_summary(e.what_without_backtrace())));
  } catch (const std::exception& e) {  // the unpickler also throws std::runtime_error (fuzz_ae_pt found one)
    throw Error(fmt::format("{}: not a state dict saved with torch.save ({})", file, error_summary(e.what())));
  }
  if (!v.isGenericDict()) throw Error(fmt::format("{}: holds {}, not a state dict", file, v.tagKind()));
  DictionaryLearning d;
  for (const auto& e : v.toGenericDict()) {
    if (!e.key().isString() || !e.value().isTensor())
      throw Error(fmt::format("{}: a state dict maps names to tensors; found {} -> {}", file, e.key().tagKind(),
                              e.value().tagKind()));
    const at::Tensor& t = e.value().toTensor();
    // A damaged file can name sizes and strides its storage does not hold: check before any use.
    int64_t last = t.storage_offset();
    bool ok = (last >= 0 && t.storage().data() != nullptr) || t.numel() == 0;
    for (int64_t i = 0; ok && i < t.dim(); ++i) {
      ok = t.size(i) >= 0 && t.stride(i) >= 0;
      if (t.size(i) > 0) last += (t.size(i) - 1) * t.stride(i);
    }
    if (!ok || (t.numel() > 0 && (last + 1) * static_cast<int64_t>(t.element_size()) > static_cast<int64_t>(t.storage().nbytes())))
      throw Error(fmt::format("{}: tensor '{}' does not fit its storage (a damaged or truncated file)", file,
                              e.key().toStringRef()));
    d.state[e.key().toStringRef()] = t;
  }
  json cfg;
  if (fs::exists(dir / "config.json")) {
    try {
      cfg = json::parse(read_text(dir / "config.json"));
    } catch (const json::exception& e) {
      throw Error(fmt::format("{}: not valid JSON ({})", (dir / "config.json").string(), e.what()));
    }
  }
  const json trainer = cfg.is_object() && cfg.contains("trainer") && cfg["trainer"].is_object() ? cfg["trainer"] : json::object();
  if (trainer.contains("dict_class") && !trainer["dict_class"].is_string())
    throw Error(fmt::format("{}: trainer.dict_class must be the class's name, a string (got {})",
                            (dir / "config.json").string(), trainer["dict_class"].dump()));
  d.dict_class = trainer.value("dict_class", "");
  if (trainer.contains("submodule_name") && trainer["submodule_name"].is_string()) d.hook = trainer["submodule_name"];
  if (d.dict_class.empty()) {  // no config: tell the class by its parameters
    auto has = [&](const char* k) { return d.state.count(k) > 0; };
    d.dict_class = has("r_mag")            ? "GatedAutoEncoder"
                   : has("W_enc")          ? "JumpReluAutoEncoder"
                   : has("k")              ? "AutoEncoderTopK"
                   : has("decoder.bias")   ? "AutoEncoderNew"
                                           : "AutoEncoder";
  }
  for (const char* name : {"encoder.weight", "W_enc"})
    if (d.state.count(name)) d.weights_dtype = c10::toString(d.state[name].scalar_type());
  return d;
}

// dictionary_learning's classes in interp's formalism (see docs/sae.md): the config, and the weights.
SAE dictionary_learning_sae(const fs::path& dir, const DictionaryLearning& d, SAEConfig* cfg_out) {
  const std::string file = (dir / "ae.pt").string();
  auto get = [&](const char* name) {
    auto it = d.state.find(name);
    if (it == d.state.end()) throw Error(fmt::format("{}: {} lacks '{}'", file, d.dict_class, name));
    return it->second.to(at::kFloat).contiguous();
  };
  SAEConfig cfg;
  cfg.hook_name = d.hook;
  at::Tensor W_enc, b_enc, W_dec, b_dec;
  std::map<std::string, at::Tensor> extra;
  double batch_threshold = 0;
  const std::string& c = d.dict_class;
  if (c == "AutoEncoder" || c == "AutoEncoderNew") {
    cfg.architecture = "standard";
    W_enc = get("encoder.weight").t();
    b_enc = get("encoder.bias");
    W_dec = get("decoder.weight").t();
    if (c == "AutoEncoder") {
      b_dec = get("bias");
    } else {  // relu(encoder(x)), decoder(f) with its bias: b_dec is the decoder's bias, folded into b_enc
      b_dec = get("decoder.bias");
      b_enc = b_enc + at::matmul(b_dec, W_enc);
    }
  } else if (c == "AutoEncoderTopK" || c == "BatchTopKSAE") {
    cfg.architecture = c == "AutoEncoderTopK" ? "topk" : "batchtopk";
    W_enc = get("encoder.weight").t();
    b_enc = get("encoder.bias");
    W_dec = get("decoder.weight").t();
    b_dec = get("b_dec");
    cfg.k = get("k").item<int64_t>();
    if (c == "BatchTopKSAE") batch_threshold = get("threshold").item<double>();
  } else if (c == "JumpReluAutoEncoder") {
    // f = relu(pre * (pre > t)) * |W_dec rows|, x_hat = (f / |W_dec rows|) W_dec + b_dec, and the encoder
    // reads x (apply_b_dec_to_input False): scale latent i by n_i = |W_dec row i| throughout.
    cfg.architecture = "jumprelu";
    W_dec = get("W_dec");
    at::Tensor n = W_dec.norm(2, 1);
    W_enc = get("W_enc") * n;
    b_dec = get("b_dec");
    b_enc = get("b_enc") * n + at::matmul(b_dec, W_enc);
    extra["threshold"] = get("threshold") * n;
    W_dec = W_dec / n.unsqueeze(1);
  } else if (c == "GatedAutoEncoder") {
    // x_enc = encoder(x - decoder_bias); f = 1[x_enc + gate_bias > 0] * relu(exp(r_mag) x_enc + mag_bias),
    // scaled by the decoder column norms n as dictionary_learning's encode does: scale the encoder, both
    // biases and the latents by n (n > 0 keeps the gate's sign), the decoder by 1/n.
    cfg.architecture = "gated";
    W_dec = get("decoder.weight").t();
    at::Tensor n = W_dec.norm(2, 1) + 1e-8;
    W_enc = get("encoder.weight").t() * n;
    b_enc = get("gate_bias") * n;
    b_dec = get("decoder_bias");
    extra["r_mag"] = get("r_mag");
    extra["b_mag"] = get("mag_bias") * n;
    W_dec = W_dec / n.unsqueeze(1);
  } else {
    throw Error(fmt::format("{}: {} is not an architecture interp has yet (it reads AutoEncoder, AutoEncoderNew, "
                            "AutoEncoderTopK, BatchTopKSAE, JumpReluAutoEncoder and GatedAutoEncoder)",
                            file, c));
  }
  cfg.d_in = W_enc.size(0);
  cfg.d_sae = W_enc.size(1);
  if (W_dec.sizes() != at::IntArrayRef{cfg.d_sae, cfg.d_in} || b_enc.sizes() != at::IntArrayRef{cfg.d_sae} ||
      b_dec.sizes() != at::IntArrayRef{cfg.d_in})
    throw Error(fmt::format("{}: the shapes of {}'s parameters do not agree (encoder [{}], decoder [{}])", file, c,
                            fmt::join(W_enc.sizes(), ", "), fmt::join(W_dec.sizes(), ", ")));
  cfg.validate();
  if (cfg_out) *cfg_out = cfg;
  SAE sae(cfg);
  sae.load_weights(W_enc, b_enc, W_dec, b_dec, extra);
  if (cfg.architecture == "batchtopk") sae.set_inference_threshold(batch_threshold);
  return sae;
}

std::vector<fs::path> sae_subfolders(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory() && !layout_of(e.path()).empty()) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

[[noreturn]] void no_sae_here(const fs::path& dir) {
  auto subs = sae_subfolders(dir);
  if (!subs.empty()) {
    std::vector<std::string> names;
    for (const auto& s : subs) names.push_back(s.filename().string());
    throw Error(fmt::format("{} holds {} SAEs, one per folder: {}; pass one of them (e.g. {})", dir.string(), subs.size(),
                            fmt::join(names, ", "), (dir / names[0]).string()));
  }
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw Error(fmt::format("{}: no such SAE folder", dir.string()));
  throw Error(fmt::format("{}: no SAE here: an SAE folder holds cfg.json with sae_weights.safetensors (SAELens) or "
                          "with sae.safetensors (sparsify)",
                          dir.string()));
}

}  // namespace

SAE SAE::load(const std::string& dir_in) {
  const fs::path dir(dir_in);
  const std::string layout = layout_of(dir);
  if (layout.empty()) no_sae_here(dir);
  if (layout == "dictionary_learning") return dictionary_learning_sae(dir, read_dictionary_learning(dir), nullptr);
  if (layout == "sparsify") {
    SAEConfig cfg = sparsify_config(dir);
    const std::string file = (dir / "sae.safetensors").string();
    SafetensorsFile f = safetensors_load(file);
    const std::string by = "cfg.json";
    // The weights first: their shapes bound the sizes a cfg.json may claim (constructing the SAE
    // allocates d_in x d_sae; a damaged cfg.json could ask for terabytes).
    at::Tensor W_enc = take(f, file, "encoder.weight", {cfg.d_sae, cfg.d_in}, by).t().contiguous();
    at::Tensor b_enc = take(f, file, "encoder.bias", {cfg.d_sae}, by);
    at::Tensor W_dec = take(f, file, "W_dec", {cfg.d_sae, cfg.d_in}, by);
    at::Tensor b_dec = take(f, file, "b_dec", {cfg.d_in}, by);
    SAE sae(cfg);
    sae.W_enc_ = W_enc.set_requires_grad(true);
    sae.b_enc_ = b_enc.set_requires_grad(true);
    sae.W_dec_ = W_dec.set_requires_grad(true);
    sae.b_dec_ = b_dec.set_requires_grad(true);
    return sae;
  }
  bool apply_b_dec = true;
  SAEConfig cfg = saelens_config(dir, &apply_b_dec);
  const std::string file = (dir / "sae_weights.safetensors").string();
  SafetensorsFile f = safetensors_load(file);
  const std::string by = "cfg.json";
  const SAEArchitecture& arch = sae_architecture(cfg.architecture);
  // The weights first (see sparsify above: the file's shapes bound what cfg.json may claim).
  at::Tensor W_enc = take(f, file, "W_enc", {cfg.d_in, cfg.d_sae}, by);
  at::Tensor W_dec = take(f, file, "W_dec", {cfg.d_sae, cfg.d_in}, by);
  at::Tensor b_enc = take(f, file, arch.saelens_b_enc, {cfg.d_sae}, by);
  at::Tensor b_dec = take(f, file, "b_dec", {cfg.d_in}, by);
  SAE sae(cfg);
  sae.W_enc_ = W_enc, sae.W_dec_ = W_dec, sae.b_enc_ = b_enc, sae.b_dec_ = b_dec;
  // apply_b_dec_to_input = false: h = act(x W_enc + b_enc) = act((x - b_dec) W_enc + (b_enc + b_dec W_enc))
  if (!apply_b_dec) sae.b_enc_ = (sae.b_enc_ + at::matmul(sae.b_dec_, sae.W_enc_)).contiguous();
  for (auto* p : {&sae.W_enc_, &sae.W_dec_, &sae.b_enc_, &sae.b_dec_}) p->set_requires_grad(true);
  for (auto& [name, t] : sae.extra_) t = take(f, file, name, {cfg.d_sae}, by).set_requires_grad(true);
  if (arch.batch_threshold && f.tensors.count("threshold"))
    sae.batch_threshold_ = f.tensors.at("threshold")[0].item<double>();
  return sae;
}

void SAE::load_weights(const at::Tensor& W_enc, const at::Tensor& b_enc, const at::Tensor& W_dec,
                       const at::Tensor& b_dec, const std::map<std::string, at::Tensor>& extra) {
  auto fit = [&](const at::Tensor& t, std::vector<int64_t> shape, const char* name) {
    if (!t.defined() || t.sizes().vec() != shape)
      throw Error(fmt::format("SAE weights: '{}' must be [{}] for this config", name, fmt::join(shape, ", ")));
    at::Tensor v = t.detach().to(at::kFloat).contiguous().clone();
    if (!at::isfinite(v).all().item<bool>())
      throw Error(fmt::format("SAE weights: '{}' holds NaN or infinite values; the weights are damaged", name));
    return v.set_requires_grad(true);
  };
  W_enc_ = fit(W_enc, {cfg_.d_in, cfg_.d_sae}, "W_enc");
  b_enc_ = fit(b_enc, {cfg_.d_sae}, "b_enc");
  W_dec_ = fit(W_dec, {cfg_.d_sae, cfg_.d_in}, "W_dec");
  b_dec_ = fit(b_dec, {cfg_.d_in}, "b_dec");
  for (const auto& [name, t] : extra)
    if (!extra_.count(name)) throw Error(fmt::format("SAE weights: a {} SAE has no parameter '{}'", cfg_.architecture, name));
  for (auto& [name, t] : extra_) {
    auto it = extra.find(name);
    t = fit(it == extra.end() ? at::Tensor() : it->second, {cfg_.d_sae}, name.c_str());
  }
}

void SAE::save_sparsify(const std::string& dir) const {
  if (cfg_.architecture != "topk")
    throw Error(fmt::format("the sparsify layout holds TopK SAEs; this one is {} (save it in SAELens's layout)",
                            cfg_.architecture));
  if (per_token_norm())
    throw Error(fmt::format("the sparsify layout has no per-token normalisation; this SAE uses {} (save it in "
                            "SAELens's layout)",
                            cfg_.normalize_activations));
  at::NoGradGuard g;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(fmt::format("{}: cannot create ({})", dir, ec.message()));
  const double s = cfg_.norm_scale;  // folded in, as save() does
  std::map<std::string, at::Tensor> t = {{"encoder.weight", (W_enc_ * s).t().contiguous().cpu()},
                                         {"encoder.bias", b_enc_.cpu()},
                                         {"W_dec", (W_dec_ / s).cpu()},
                                         {"b_dec", (b_dec_ / s).cpu()}};
  safetensors_save((fs::path(dir) / "sae.safetensors").string(), t, {{"format", "pt"}});
  json j = {{"activation", "topk"},     {"expansion_factor", cfg_.d_sae / std::max<int64_t>(1, cfg_.d_in)},
            {"normalize_decoder", true}, {"num_latents", cfg_.d_sae},
            {"k", cfg_.k},               {"multi_topk", false},
            {"skip_connection", false},  {"transcode", false},
            {"d_in", cfg_.d_in}};
  const std::string text = j.dump(2) + "\n";
  AtomicFile f((fs::path(dir) / "cfg.json").string());
  f.write(text.data(), text.size());
  f.commit();
}

std::vector<SAEFolderInfo> sae_inspect(const std::string& dir_in) {
  const fs::path dir(dir_in);
  std::vector<fs::path> dirs;
  if (!layout_of(dir).empty()) dirs.push_back(dir);
  else dirs = sae_subfolders(dir);
  if (dirs.empty()) no_sae_here(dir);
  std::vector<SAEFolderInfo> out;
  for (const auto& d : dirs) {
    SAEFolderInfo info;
    info.dir = d.string();
    info.format = layout_of(d);
    if (info.format == "dictionary_learning") {
      DictionaryLearning dl = read_dictionary_learning(d);
      dictionary_learning_sae(d, dl, &info.config);
      info.weights_dtype = dl.weights_dtype == "Float" ? "F32" : dl.weights_dtype;
      info.notes.push_back(fmt::format("{} (ae.pt, a torch.save state dict) read as {}", dl.dict_class,
                                       info.config.architecture));
      if (dl.dict_class == "JumpReluAutoEncoder")
        info.notes.push_back("latents scaled by the decoder row norms as dictionary_learning's are; the encoder's "
                             "input without b_dec folded into b_enc");
      if (dl.dict_class == "GatedAutoEncoder")
        info.notes.push_back("latents scaled by the decoder column norms as dictionary_learning's are (encoder, "
                             "gate_bias and mag_bias by n, decoder by 1/n); gate_bias read as b_enc");
    } else if (info.format == "sparsify") {
      info.config = sparsify_config(d);
      SafetensorsFile f = safetensors_load((d / "sae.safetensors").string());
      info.weights_dtype = dtype_of(f, "encoder.weight");
      info.notes.push_back("encoder.weight [d_sae, d_in] read as W_enc [d_in, d_sae]; the folder name is the hook");
    } else {
      bool apply_b_dec = true;
      info.config = saelens_config(d, &apply_b_dec);
      SafetensorsFile f = safetensors_load((d / "sae_weights.safetensors").string());
      info.weights_dtype = dtype_of(f, "W_enc");
      if (!apply_b_dec) info.notes.push_back("apply_b_dec_to_input = false: b_dec @ W_enc folded into b_enc");
    }
    if (info.weights_dtype != "F32") info.notes.push_back(info.weights_dtype + " weights converted to float32");
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace interp
