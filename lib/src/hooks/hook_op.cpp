// The op and its runtime live in one translation unit: HookedModel references RuntimeScope, so the
// linker always keeps this object file, and with it the TORCH_LIBRARY registration (a static
// library would otherwise drop a registration nothing references).
#include "hooks/hook_op.h"

#include <torch/library.h>

namespace interp::detail {
namespace {

thread_local HookRuntime* t_runtime = nullptr;

at::Tensor hook_kernel(const at::Tensor& x, int64_t id) {
  HookRuntime* rt = t_runtime;
  return rt ? rt->call(x, id) : x;
}

}  // namespace

c10::Symbol hook_symbol() {
  static const c10::Symbol sym = c10::Symbol::fromQualString("interp::hook");
  return sym;
}

RuntimeScope::RuntimeScope(HookRuntime* rt) : previous_(t_runtime) { t_runtime = rt; }
RuntimeScope::~RuntimeScope() { t_runtime = previous_; }

}  // namespace interp::detail

// CompositeImplicitAutograd (the default for a kernel given to def): autograd sees through the op,
// so gradients flow through hook points, and a replacing hook's own ops are differentiated.
// CONSERVATIVE alias analysis keeps JIT passes from removing or reordering the op.
TORCH_LIBRARY(interp, m) {
  m.def(torch::schema("interp::hook(Tensor x, int id) -> Tensor", c10::AliasAnalysisKind::CONSERVATIVE),
        &interp::detail::hook_kernel);
}
