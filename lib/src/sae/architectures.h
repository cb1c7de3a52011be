// Internal: one factory per SAE architecture (one file each); registry.cpp lists them by name.
#pragma once

#include "interp/sae.h"

namespace interp::sae_detail {

SAEArchitecture standard();
SAEArchitecture topk();
SAEArchitecture batchtopk();
SAEArchitecture jumprelu();
SAEArchitecture gated();
SAEArchitecture matryoshka();

}  // namespace interp::sae_detail
