#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <mutex>
#include <set>
#include <nlohmann/json.hpp>
#include <thread>

#include <sys/resource.h>

#include "interp/dist.h"
#include "interp/error.h"
#include "interp/hooks.h"
#include "interp/store.h"
#include "interp/util.h"
#include "io/atomic_file.h"
#include "store/manifest.h"

namespace interp {
namespace fs = std::filesystem;
namespace {

using json = nlohmann::json;

at::ScalarType parse_dtype(const std::string& d) {
  if (d == "f32") return at::kFloat;
  if (d == "f16") return at::kHalf;
  if (d == "bf16") return at::kBFloat16;
  throw Error(fmt::format("dtype '{}' is not one of f32, f16, bf16", d));
}

using Buffers = std::map<std::string, at::Tensor>;  // tensor name -> [contexts_per_shard, ...]

// Preallocated shard buffers, reused: batches are copied in (so the forward's own tensors are
// freed at once and no fresh memory is faulted in per batch) and written out from them. The
// number of buffer sets bounds memory and makes the model wait when the disk falls behind.
class BufferPool {
 public:
  BufferPool(const std::map<std::string, std::pair<std::vector<int64_t>, at::ScalarType>>& layout, int64_t contexts,
             int sets) {
    for (int i = 0; i < sets; ++i) {
      Buffers b;
      for (const auto& [name, spec] : layout) {
        std::vector<int64_t> shape = spec.first;
        shape.insert(shape.begin(), contexts);
        b[name] = at::empty(shape, at::TensorOptions().dtype(spec.second));
      }
      free_.push_back(std::move(b));
    }
  }
  Buffers acquire() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !free_.empty(); });
    Buffers b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  void release(Buffers b) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(std::move(b));
    cv_.notify_one();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Buffers> free_;
};

// A finished shard on its way to the writer thread.
struct ShardJob {
  int64_t index = 0, first_context = 0, contexts = 0;
  Buffers buffers;  // the first `contexts` rows are filled
};

// Test hooks: INTERP_FAULT=kill-after-shard:N kills the process with SIGKILL right after shard N's
// file is in place but before the manifest records it (the worst moment to die);
// INTERP_FAULT=fail-shard:N makes writing shard N fail as a full disk would.
int64_t fault_at(const std::string& key) {
  const char* f = std::getenv("INTERP_FAULT");
  if (!f) return -1;
  std::string s = f;
  return s.rfind(key, 0) == 0 ? std::stoll(s.substr(key.size())) : -1;
}

class Writer {
 public:
  Writer(std::string dir, std::string manifest_name, json manifest, BufferPool& pool)
      : dir_(std::move(dir)),
        manifest_name_(std::move(manifest_name)),
        manifest_(std::move(manifest)),
        pool_(pool),
        kill_after_(fault_at("kill-after-shard:")),
        fail_at_(fault_at("fail-shard:")) {
    thread_ = std::thread([this] { loop(); });
  }
  ~Writer() {  // on an exception in the producer: let queued shards finish, never throw
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      ready_.notify_one();
    }
    thread_.join();
  }

  void push(ShardJob job) {
    std::unique_lock<std::mutex> lock(mu_);
    if (error_) std::rethrow_exception(error_);
    jobs_.push_back(std::move(job));
    ready_.notify_one();
  }

  // Waits for every queued shard; rethrows a writer failure. Returns the final manifest.
  json finish() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      ready_.notify_one();
    }
    thread_.join();
    if (error_) std::rethrow_exception(error_);
    return manifest_;
  }

  int64_t written() const { return written_.load(); }
  double cpu_seconds() const { return cpu_seconds_; }  // the writer thread's CPU time (after finish())

 private:
  void loop() {
    for (;;) {
      ShardJob job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        ready_.wait(lock, [&] { return !jobs_.empty() || done_; });
        if (jobs_.empty()) {
          rusage u{};
          getrusage(RUSAGE_THREAD, &u);
          cpu_seconds_ = static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
                         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
          return;
        }
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      try {
        write(job);
      } catch (...) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          error_ = std::current_exception();
        }
        pool_.release(std::move(job.buffers));  // unblock the producer; it sees error_ at its next push
        return;
      }
    }
  }

  void write(ShardJob& job) {
    std::map<std::string, at::Tensor> tensors;
    for (auto& [name, buf] : job.buffers) {
      tensors[name] = buf.narrow(0, 0, job.contexts);  // contiguous: leading rows of a contiguous buffer
    }
    if (job.index == fail_at_) throw Error(fmt::format("{}: writing shard {} failed (injected fault)", dir_, job.index));
    std::string file = store_detail::shard_file(job.index);
    std::string path = (fs::path(dir_) / file).string();
    uint64_t hash = safetensors_save(path, tensors,
                                     {{"format", "interp.store.shard.v1"},
                                      {"first_context", std::to_string(job.first_context)},
                                      {"contexts", std::to_string(job.contexts)}});
    if (job.index == kill_after_) std::raise(SIGKILL);
    manifest_["shards"].push_back({{"file", file},
                                   {"first_context", job.first_context},
                                   {"contexts", job.contexts},
                                   {"bytes", static_cast<int64_t>(fs::file_size(path))},
                                   {"xxh64", hex64(hash)}});
    store_detail::write_manifest(dir_, manifest_, manifest_name_);
    tensors.clear();
    pool_.release(std::move(job.buffers));
    written_.fetch_add(1);
  }

  std::string dir_, manifest_name_;
  json manifest_;
  BufferPool& pool_;
  int64_t kill_after_, fail_at_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<ShardJob> jobs_;
  bool done_ = false;
  std::exception_ptr error_;
  std::atomic<int64_t> written_{0};
  double cpu_seconds_ = 0;
  std::thread thread_;
};

}  // namespace

namespace {
CaptureResult capture_into(const HookedModel& model, const PackedContexts& data, const std::string& dir,
                           const CaptureOptions& o);

// Rank 0 of a sharded capture, its own shards done: waits for every rank's manifest to say
// complete (a rank whose manifest has not changed for stall_s is reported as dead), checks they
// are of this capture and cover shards 0..n_shards-1 once, writes manifest.json (complete) and
// removes the rank manifests. Returns the merged manifest.
json merge_rank_manifests(const std::string& dir, const json& mine, int world, int64_t n_shards, double stall_s) {
  std::vector<json> parts(world);
  parts[0] = mine;
  std::vector<fs::file_time_type> seen(world);
  std::vector<std::chrono::steady_clock::time_point> changed(world, std::chrono::steady_clock::now());
  for (;;) {
    bool all = true;
    for (int r = 1; r < world; ++r) {
      if (!parts[r].is_null() && parts[r]["complete"].get<bool>()) continue;
      const fs::path p = fs::path(dir) / store_detail::rank_manifest_file(r, world);
      std::error_code ec;
      const auto t = fs::last_write_time(p, ec);
      if (!ec && t != seen[r]) {
        seen[r] = t;
        changed[r] = std::chrono::steady_clock::now();
        parts[r] = store_detail::read_rank_manifest(dir, r, world);
        if (parts[r]["complete"].get<bool>()) continue;
      }
      all = false;
      const double idle = std::chrono::duration<double>(std::chrono::steady_clock::now() - changed[r]).count();
      if (idle > stall_s)
        throw Error(fmt::format("{}: rank {} of {} has written nothing for {:.0f} s and is not done; it has probably "
                                "stopped or died. Stop every rank, then start them all again with --resume",
                                dir, r, world, idle));
    }
    if (all) break;
    if (stop_requested())
      throw Error(fmt::format("capture stopped while rank 0 waited for the other ranks (asked to stop); run the same "
                              "command again with --resume on every rank to finish"));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  json merged = mine;
  merged.erase("rank");
  merged.erase("world_size");
  std::map<int64_t, json> shards;
  const int64_t per_shard = mine["contexts_per_shard"].get<int64_t>();
  for (int r = 0; r < world; ++r) {
    if (parts[r]["identity"] != mine["identity"])
      throw Error(fmt::format("{}: rank {} captured something else (its identity differs from rank 0's: model, corpus, "
                              "hooks, ctx or dtype); give every rank the same command",
                              dir, r));
    for (const auto& sh : parts[r]["shards"]) shards[sh["first_context"].get<int64_t>() / per_shard] = sh;
  }
  if (static_cast<int64_t>(shards.size()) != n_shards)
    throw Error(fmt::format("{}: the ranks wrote {} of the {} shards", dir, shards.size(), n_shards));
  merged["shards"] = json::array();
  for (auto& [i, sh] : shards) merged["shards"].push_back(sh);
  merged["complete"] = true;
  store_detail::write_manifest(dir, merged);
  for (int r = 0; r < world; ++r) {
    std::error_code ec;
    fs::remove(fs::path(dir) / store_detail::rank_manifest_file(r, world), ec);
  }
  return merged;
}
}  // namespace

// A folder this call created is removed again if the capture fails before its first shard is
// committed: a failed first attempt leaves nothing that blocks a plain rerun. Once a shard is in,
// the folder stays for --resume.
CaptureResult capture(const HookedModel& model, const PackedContexts& data, const std::string& dir,
                      const CaptureOptions& o) {
  std::error_code ec;
  const bool existed = fs::exists(dir, ec);
  try {
    return capture_into(model, data, dir, o);
  } catch (...) {
    // (sharded: other ranks may be writing into the folder; it stays)
    if (!existed && !o.group && fs::is_directory(dir, ec)) {
      bool has_shard = false;
      for (const auto& e : fs::directory_iterator(dir, ec))
        if (e.path().filename().string().rfind("shard-", 0) == 0 &&
            e.path().filename().string().find(".tmp.") == std::string::npos)
          has_shard = true;
      if (!has_shard) fs::remove_all(dir, ec);
    }
    throw;
  }
}

namespace {

CaptureResult capture_into(const HookedModel& model, const PackedContexts& data, const std::string& dir,
                           const CaptureOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  const int64_t ctx = data.ctx();
  const at::ScalarType dtype = parse_dtype(o.dtype);
  if (o.hooks.empty()) throw Error("capture: no hook points given; `interp hooks MODEL` lists them");
  if (o.batch < 1) throw Error(fmt::format("capture: batch {} must be at least 1", o.batch));
  if (o.n_tokens < 1) throw Error(fmt::format("capture: token count {} must be at least 1", o.n_tokens));
  if (model.info().n_ctx > 0 && ctx > model.info().n_ctx)
    throw Error(fmt::format("capture: contexts of {} tokens, but {} has a context of {}; lower --ctx", ctx, model.path(),
                            model.info().n_ctx));

  // Hooks: under the names asked for (a module path stays a module path; a point asked for twice
  // under two names is stored once, under the first), per-context shapes ([batch, pos, ...] -> [ctx, ...]).
  std::vector<std::string> hooks;
  std::vector<int64_t> seen_points;
  json hook_list = json::array();
  int64_t bytes_per_context = 0;
  int deepest = -1;
  bool all_in_blocks = true;
  for (const auto& requested : o.hooks) {
    const HookPoint& p = model.hook_point(requested);
    if (std::find(seen_points.begin(), seen_points.end(), p.order) != seen_points.end()) continue;
    seen_points.push_back(p.order);
    if (p.shape.empty() || p.shape[0] != HookPoint::kBatch)
      throw Error(fmt::format("hook '{}' has shape {}, not [batch, ...]; it cannot be stored per context", p.name,
                              p.shape_str()));
    std::vector<int64_t> shape;
    int64_t numel = 1;
    for (size_t d = 1; d < p.shape.size(); ++d) {
      int64_t v = p.shape[d] == HookPoint::kPos ? ctx : p.shape[d];
      if (v < 0) throw Error(fmt::format("hook '{}' has shape {} with a size that varies; cannot store it", p.name, p.shape_str()));
      shape.push_back(v);
      numel *= v;
    }
    bytes_per_context += numel * static_cast<int64_t>(c10::elementSize(dtype));
    hooks.push_back(requested);
    hook_list.push_back({{"name", requested}, {"shape", shape}});
    if (p.layer >= 0 && p.layer < model.info().n_layers) deepest = std::max(deepest, p.layer);
    else all_in_blocks = false;
  }

  const int64_t total_contexts = (o.n_tokens + ctx - 1) / ctx;
  if (total_contexts > data.size())
    throw Error(fmt::format("capture: {} tokens need {} contexts of {}, but the corpus packs into only {} ({} tokens); "
                            "lower --tokens or add data",
                            o.n_tokens, total_contexts, ctx, data.size(), data.size() * ctx));
  int64_t per_shard = o.contexts_per_shard;
  if (per_shard <= 0) per_shard = std::max<int64_t>(1, (int64_t{64} << 20) / std::max<int64_t>(1, bytes_per_context));
  per_shard = std::max(o.batch, per_shard / o.batch * o.batch);  // whole batches

  json identity = {{"model_xxh64", hex64(xxh64_file(model.path()))},
                   {"tokenizer_xxh64", o.tokenizer_hash},
                   {"corpus_xxh64", o.corpus_hash},
                   {"ctx", ctx},
                   {"bos", o.pack.bos},
                   {"eos_between_docs", o.pack.eos_between_docs},
                   {"shuffle", o.pack.shuffle},
                   {"seed", o.pack.seed},
                   {"hooks", hooks},
                   {"dtype", o.dtype},
                   {"contexts_per_shard", per_shard}};
  json manifest = {{"format", store_detail::kFormat},
                   {"identity", identity},
                   {"model", model.path()},
                   {"tokenizer", o.tokenizer_path},
                   {"corpus", o.corpus},
                   {"ctx", ctx},
                   {"dtype", o.dtype},
                   {"hooks", hook_list},
                   {"contexts_per_shard", per_shard},
                   {"tokens_per_shard", per_shard * ctx},
                   {"target_contexts", total_contexts},
                   {"shards", json::array()},
                   {"complete", false}};
  if (data.has_tags()) manifest["tag_names"] = data.tag_names();

  // Sharded (--dist): this rank's shards are those with index % world == rank; its progress goes
  // to its own manifest, merged into manifest.json at the end.
  const int world = o.group ? o.group->size() : 1, rank = o.group ? o.group->rank() : 0;
  const int64_t n_shards = (total_contexts + per_shard - 1) / per_shard;
  const std::string mname = world == 1 ? "manifest.json" : store_detail::rank_manifest_file(rank, world);

  // The folder: new, or this same capture to resume; anything else is refused.
  CaptureResult result;
  std::set<int64_t> kept;  // sharded: grid cells already written (resume)
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(fmt::format("{}: cannot create the store folder ({})", dir, ec.message()));
  auto check_identity = [&](const json& old, const std::string& what) {
    std::vector<std::string> differs;
    for (const auto& [k, v] : identity.items())
      if (!old["identity"].contains(k) || old["identity"][k] != v) differs.push_back(k);
    if (!differs.empty())
      throw Error(fmt::format("{} holds a different capture ({} differ{}); choose another --out folder or delete it",
                              dir, fmt::join(differs, ", "), what == "manifest.json" ? "" : ", in " + what));
  };
  bool rank_files = false;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(store_detail::kRankManifestPrefix, 0) == 0) rank_files = true;
  const fs::path store_manifest = fs::path(dir) / "manifest.json";
  if (fs::exists(store_manifest)) {
    json old = store_detail::read_manifest(dir);
    check_identity(old, "manifest.json");
    if (!o.resume)
      throw Error(fmt::format("{} already holds this capture ({} of its shards); pass --resume to continue or extend "
                              "it, or choose another --out folder",
                              dir, old["shards"].size()));
    if (world > 1 && !old["complete"].get<bool>())
      throw Error(fmt::format("{} holds an unfinished capture of one process; resume it without --dist, or capture "
                              "into a new folder",
                              dir));
    if (world > 1 && old.value("target_contexts", json(0)) != json(total_contexts))
      throw Error(fmt::format("{} holds this capture with {} contexts, not {}; a sharded capture does not extend a "
                              "store: extend it without --dist, or capture into a new folder",
                              dir, old.value("target_contexts", json(0)).dump(), total_contexts));
    if (world > 1) {  // complete already: nothing to do
      result.resumed_shards = result.shards = static_cast<int64_t>(old["shards"].size());
      result.tokens = total_contexts * ctx;
      return result;
    }
    manifest["shards"] = old["shards"];
  } else if (world == 1 && rank_files) {
    throw Error(fmt::format("{} holds an unfinished sharded capture (capture --dist); start every rank again with "
                            "--resume and the same number of ranks, or choose another --out folder",
                            dir));
  } else if (world > 1 && fs::exists(fs::path(dir) / mname)) {
    json old = store_detail::read_rank_manifest(dir, rank, world);
    check_identity(old, mname);
    if (old["target_contexts"] != json(total_contexts))
      throw Error(fmt::format("{}: this sharded capture was started for {} contexts, not {}; resume it with the same "
                              "--tokens",
                              dir, old["target_contexts"].dump(), total_contexts));
    if (!o.resume)
      throw Error(fmt::format("{} already holds this rank's part of the capture ({}); pass --resume to continue it, or "
                              "choose another --out folder",
                              dir, mname));
    manifest["shards"] = old["shards"];
  } else {
    for (const auto& e : fs::directory_iterator(dir)) {
      std::string name = e.path().filename().string();
      if (name.find(".tmp.") == std::string::npos && name.rfind("shard-", 0) != 0 &&
          !(world > 1 && name.rfind(store_detail::kRankManifestPrefix, 0) == 0))
        throw Error(fmt::format("{} is not empty and holds no interp store (found '{}'); choose an empty or new "
                                "--out folder",
                                dir, name));
    }
  }
  for (const auto& sh : manifest["shards"]) {  // kept shards (resume) must be intact
    store_detail::check_shard(dir, sh);
    kept.insert(sh["first_context"].get<int64_t>() / per_shard);  // (the grid's cells, when sharded)
  }
  result.resumed_shards = static_cast<int64_t>(manifest["shards"].size());
  // Leftovers of a killed run: every temporary when alone; a rank removes only its own (the others'
  // may be in flight).
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    const size_t tmp = name.find(".tmp.");
    if (tmp == std::string::npos) continue;
    const std::string base = name.substr(0, tmp);
    bool ours = world == 1 || base == mname;
    if (!ours && base.rfind("shard-", 0) == 0)
      for (int64_t i = rank; i < n_shards && !ours; i += world) ours = base == store_detail::shard_file(i);
    if (ours) fs::remove(e.path(), ec);
  }
  // The plan: (index, first context, contexts) of each shard to write. Alone: on from what the
  // store holds (an extended capture continues after its last shard). Sharded: this rank's cells
  // of the fixed grid of per_shard contexts.
  struct Planned {
    int64_t index, first, contexts;
  };
  std::vector<Planned> plan;
  int64_t my_contexts = 0, done_contexts = 0;
  if (world == 1) {
    for (const auto& sh : manifest["shards"]) done_contexts += sh["contexts"].get<int64_t>();
    if (done_contexts > total_contexts)
      throw Error(fmt::format("{} already holds {} contexts, more than the {} asked for", dir, done_contexts,
                              total_contexts));
    my_contexts = total_contexts;
    int64_t index = static_cast<int64_t>(manifest["shards"].size());
    for (int64_t first = done_contexts; first < total_contexts; first += per_shard)
      plan.push_back({index++, first, std::min(per_shard, total_contexts - first)});
  } else {
    for (int64_t i = rank; i < n_shards; i += world) {
      const int64_t c = std::min(per_shard, total_contexts - i * per_shard);
      my_contexts += c;
      if (kept.count(i)) done_contexts += c;
      else plan.push_back({i, i * per_shard, c});
    }
  }
  manifest["complete"] = done_contexts == my_contexts;
  if (world > 1) {
    manifest["rank"] = rank;
    manifest["world_size"] = world;
  }
  store_detail::write_manifest(dir, manifest, mname);

  RunOptions run;
  if (all_in_blocks && deepest >= 0) run.stop_at_layer = deepest + 1;  // nothing needed above the deepest hook
  NamesFilter filter = names_filter(hooks);
  std::map<std::string, std::pair<std::vector<int64_t>, at::ScalarType>> layout;
  // Buffers hold the stored dtype: copying a batch in is also its conversion (one pass over memory).
  for (const auto& h : hook_list) layout[h["name"]] = {h["shape"].get<std::vector<int64_t>>(), dtype};
  layout["tokens"] = {{ctx}, at::kInt};
  if (data.has_tags()) layout["tags"] = {{ctx}, at::kShort};
  // queue finished shards wait for the writer while one is being written and one filled
  BufferPool pool(layout, per_shard, std::max(1, o.queue) + 1);
  Writer writer(dir, mname, manifest, pool);
  const int64_t resumed_tokens = done_contexts * ctx;
  for (const Planned& next : plan) {
    ShardJob job;
    job.index = next.index;
    job.first_context = next.first;
    job.contexts = next.contexts;
    auto t_wait = std::chrono::steady_clock::now();
    job.buffers = pool.acquire();  // waits while the writer is `queue` shards behind
    result.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_wait).count();
    for (int64_t b = 0; b < job.contexts; b += o.batch) {
      int64_t n = std::min(o.batch, job.contexts - b);
      at::Tensor tokens = data.batch(job.first_context + b, n);
      auto t0 = std::chrono::steady_clock::now();
      auto [out, cache] = model.run_with_cache(tokens, filter, run);
      result.forward_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      for (const auto& h : hooks) job.buffers[h].narrow(0, b, n).copy_(cache[h]);  // device -> host here
      job.buffers["tokens"].narrow(0, b, n).copy_(tokens);
      if (data.has_tags()) job.buffers["tags"].narrow(0, b, n).copy_(data.tags(job.first_context + b, n));
      if (o.progress) {
        CaptureProgress p;
        p.tokens_done = (done_contexts + b + n) * ctx;
        p.tokens_total = my_contexts * ctx;
        p.shards_written = result.resumed_shards + writer.written();
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        p.tokens_per_s = s > 0 ? static_cast<double>(p.tokens_done - resumed_tokens) / s : 0;
        p.eta_s = p.tokens_per_s > 0 ? static_cast<double>(p.tokens_total - p.tokens_done) / p.tokens_per_s : 0;
        o.progress(p);
      }
    }
    done_contexts += job.contexts;
    writer.push(std::move(job));
    if (stop_requested() && done_contexts < my_contexts) {  // a safe point: the shard is handed to the writer
      json partial = writer.finish();  // every shard pushed is written and in the manifest
      partial["complete"] = false;
      store_detail::write_manifest(dir, partial, mname);
      throw Error(fmt::format("capture stopped after {} of {} contexts (asked to stop); {} holds the {} shards written: "
                              "run the same command again with --resume to continue",
                              done_contexts, my_contexts, dir, partial["shards"].size()));
    }
  }
  auto t0 = std::chrono::steady_clock::now();
  json final_manifest = writer.finish();
  result.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  result.writer_cpu_seconds = writer.cpu_seconds();
  final_manifest["complete"] = true;
  store_detail::write_manifest(dir, final_manifest, mname);
  result.shards = static_cast<int64_t>(final_manifest["shards"].size());
  result.tokens = my_contexts * ctx;
  if (world > 1 && rank == 0) {
    const auto m0 = std::chrono::steady_clock::now();
    json merged = merge_rank_manifests(dir, final_manifest, world, n_shards, o.stall_timeout_s);
    result.merge_wait_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - m0).count();
    result.shards = static_cast<int64_t>(merged["shards"].size());
    result.tokens = total_contexts * ctx;
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace

}  // namespace interp
