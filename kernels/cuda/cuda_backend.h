// The CUDA backend: bf16 weights, activations and KV cache with fp32
// arithmetic, on one device and one stream. GEMMs through cuBLASLt (an
// algorithm chosen by heuristic per shape and cached, one persistent
// workspace, the bias in the epilogue); a tensor-core flash attention over
// the paged cache (attention.cu); the other operations are the kernels of
// ops.cu. Greedy rows are sampled on the device; other sampling copies the
// rows back and uses the CPU sampler, so tokens match the CPU exactly for
// the same logits. Steps upload through pinned memory without waiting;
// graphs (CUDA graphs) record a step's work on a fixed step and replay it.
// FP8 weights run FP8 GEMMs: activations quantized per token, per-token x
// per-channel scales in cuBLASLt (or, where it has no such algorithm, an
// unscaled product rescaled by a kernel). Built only when nvcc is found
// (SHIFT_HAVE_CUDA).
#pragma once

#include <memory>

#include "kernels/backend.h"

namespace shift::kernels::cuda {

class CudaBackend;

// The backend on CUDA device `device`: fails with a clear status when there
// is no such device or its context cannot be made. With `fp8_gemm`, FP8
// weights stay FP8 and their GEMMs run in FP8 (sm_89 and later).
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device, bool fp8_gemm = true);

}  // namespace shift::kernels::cuda
