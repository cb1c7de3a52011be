// Internal: the `interp::hook(Tensor x, int id) -> Tensor` operator placed in rewritten graphs, and
// the thread-local runtime it consults. With no runtime installed the op returns x untouched.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/interned_strings.h>

#include <cstdint>

namespace interp::detail {

class HookRuntime {
 public:
  virtual ~HookRuntime() = default;
  virtual at::Tensor call(const at::Tensor& x, int64_t id) = 0;
};

c10::Symbol hook_symbol();  // interp::hook

// Installs `rt` as this thread's runtime for the scope's lifetime (nullptr: none), restoring the
// previous one after, so runs of different models can nest.
class RuntimeScope {
 public:
  explicit RuntimeScope(HookRuntime* rt);
  ~RuntimeScope();
  RuntimeScope(const RuntimeScope&) = delete;
  RuntimeScope& operator=(const RuntimeScope&) = delete;

 private:
  HookRuntime* previous_;
};

}  // namespace interp::detail
