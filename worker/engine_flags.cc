#include "worker/engine_flags.h"

#include <cstdint>

#include "absl/flags/flag.h"

ABSL_FLAG(bool, enforce_eager, false,
          "With --device=cuda: run every step as it comes; otherwise decode steps of a single "
          "rank are padded to a batch bucket and replayed from a CUDA graph recorded per bucket");
ABSL_FLAG(int64_t, cuda_graph_max_batch, 256,
          "The largest decode batch replayed from a CUDA graph (larger ones run eagerly)");
ABSL_FLAG(bool, fp8_gemm, true,
          "With --device=cuda and an FP8 checkpoint: FP8 GEMMs (activations quantized per token; "
          "GPUs of compute capability 8.9 and later), or with false bf16 GEMMs on the "
          "dequantized weights");

namespace shift {

void ApplyEngineFlags(EngineOptions* options) {
  options->enforce_eager = absl::GetFlag(FLAGS_enforce_eager);
  options->max_graph_batch = absl::GetFlag(FLAGS_cuda_graph_max_batch);
  options->fp8_gemm = absl::GetFlag(FLAGS_fp8_gemm);
}

}  // namespace shift
