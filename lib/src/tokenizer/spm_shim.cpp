// libinterp_spm.so: the only code that touches sentencepiece. Debian's libsentencepiece carries its
// own protobuf (3.14) whose symbols clash with LibTorch's in one process, so interp never links it:
// lib/src/tokenizer/tokenizer.cpp loads this shim with dlopen(RTLD_LOCAL | RTLD_DEEPBIND), which
// keeps the shim's symbol lookups inside its own dependencies. Plain C interface; buffers it
// returns are malloc'ed here and freed with interp_spm_free_buf.
//
// No training here: sentencepiece's trainer logs to std::cerr, and under RTLD_DEEPBIND that binds to
// libstdc++'s own (uninitialised) std::cerr instead of the program's copy: a crash. Training runs
// Debian's spm_train in a subprocess instead (tokenizer.cpp). Encode/decode/load do not log.
#include <sentencepiece_processor.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#define INTERP_SPM_API extern "C" __attribute__((visibility("default")))

namespace {
void set_error(char* err, int errlen, const std::string& msg) {
  if (err && errlen > 0) std::snprintf(err, static_cast<size_t>(errlen), "%s", msg.c_str());
}
sentencepiece::SentencePieceProcessor* proc(void* h) { return static_cast<sentencepiece::SentencePieceProcessor*>(h); }
}  // namespace

INTERP_SPM_API int interp_spm_abi_version() { return 1; }

INTERP_SPM_API void* interp_spm_load(const char* path, char* err, int errlen) {
  auto* p = new sentencepiece::SentencePieceProcessor();
  auto status = p->Load(path);
  if (!status.ok()) {
    set_error(err, errlen, status.ToString());
    delete p;
    return nullptr;
  }
  return p;
}

INTERP_SPM_API void interp_spm_free(void* h) { delete proc(h); }

// what: 0 vocabulary size, 1 bos id, 2 eos id, 3 pad id, 4 unk id
INTERP_SPM_API int interp_spm_info(void* h, int what) {
  switch (what) {
    case 0: return proc(h)->GetPieceSize();
    case 1: return proc(h)->bos_id();
    case 2: return proc(h)->eos_id();
    case 3: return proc(h)->pad_id();
    case 4: return proc(h)->unk_id();
    default: return -1;
  }
}

// Returns the number of pieces; *ids, *begins, *ends (byte offsets into text) are malloc'ed.
INTERP_SPM_API int interp_spm_encode(void* h, const char* text, size_t len, int** ids, unsigned** begins,
                                     unsigned** ends) {
  auto proto = proc(h)->EncodeAsImmutableProto(std::string(text, len));
  int n = static_cast<int>(proto.pieces_size());
  *ids = static_cast<int*>(std::malloc(sizeof(int) * (n ? n : 1)));
  *begins = static_cast<unsigned*>(std::malloc(sizeof(unsigned) * (n ? n : 1)));
  *ends = static_cast<unsigned*>(std::malloc(sizeof(unsigned) * (n ? n : 1)));
  for (int i = 0; i < n; ++i) {
    const auto& piece = proto.pieces(i);
    (*ids)[i] = static_cast<int>(piece.id());
    (*begins)[i] = piece.begin();
    (*ends)[i] = piece.end();
  }
  return n;
}

INTERP_SPM_API int interp_spm_decode(void* h, const int* ids, int n, char** out, char* err, int errlen) {
  std::vector<int> v(ids, ids + n);
  std::string text;
  auto status = proc(h)->Decode(v, &text);
  if (!status.ok()) {
    set_error(err, errlen, status.ToString());
    return -1;
  }
  *out = static_cast<char*>(std::malloc(text.size() + 1));
  std::memcpy(*out, text.c_str(), text.size() + 1);
  return static_cast<int>(text.size());
}

INTERP_SPM_API int interp_spm_piece(void* h, int id, char** out) {
  std::string piece = proc(h)->IdToPiece(id);
  *out = static_cast<char*>(std::malloc(piece.size() + 1));
  std::memcpy(*out, piece.c_str(), piece.size() + 1);
  return static_cast<int>(piece.size());
}

INTERP_SPM_API void interp_spm_free_buf(void* p) { std::free(p); }
