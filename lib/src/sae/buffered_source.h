// Internal: an ActivationSource that serves batches from chunks of rows its subclass reads (fill()),
// carrying the rows left over to the next batch.
#pragma once

#include <ATen/ATen.h>

#include "interp/sae_train.h"

namespace interp::sae_detail {

class BufferedSource : public ActivationSource {
 public:
  at::Tensor next(int64_t batch) final {
    while (pending_.size(0) < batch) {
      at::Tensor rows = fill();
      pending_ = pending_.size(0) ? at::cat({pending_, rows}) : rows;
    }
    at::Tensor out = pending_.narrow(0, 0, batch);
    pending_ = pending_.narrow(0, batch, pending_.size(0) - batch);
    return out;
  }

 protected:
  virtual at::Tensor fill() = 0;

 private:
  at::Tensor pending_ = at::empty({0});
};

}  // namespace interp::sae_detail
