// The CUDA backend: bf16 weights, activations and KV cache with fp32
// arithmetic, on one device and one stream. GEMMs through cuBLASLt (an
// algorithm chosen by heuristic per shape and cached, one persistent
// workspace, the bias in the epilogue); the other operations are the
// straightforward kernels of ops.cu. Correct first: speed (flash attention,
// CUDA graphs, FP8) is later work. Sampling copies the sampled rows' logits
// to the host and uses the CPU sampler, so tokens match the CPU exactly for
// the same logits. Built only when nvcc is found (SHIFT_HAVE_CUDA).
#pragma once

#include <memory>

#include "kernels/backend.h"

namespace shift::kernels::cuda {

class CudaBackend;

// The backend on CUDA device `device`: fails with a clear status when there
// is no such device or its context cannot be made.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device);

}  // namespace shift::kernels::cuda
