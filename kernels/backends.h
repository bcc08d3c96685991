#pragma once

// Backend selection: --device names a device, and this file, the only one
// that knows every backend, makes a backend on it. The interface
// (backend.h) knows none of them.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace shift::kernels {

struct BackendOptions {
  // Host threads for the CPU backend's kernels; results do not depend on it.
  int threads = 1;
  // The CUDA device of the CUDA backend.
  int cuda_device = 0;
  // FP8 weights: GEMMs in FP8 on GPUs that have them (sm_89 and later; a
  // GPU without is refused), or, when false, in bf16 on the dequantized
  // weights.
  bool fp8_gemm = true;
};

// The device --device names ("cpu", or "cuda" in a build with the CUDA
// backend), and a backend on it.
absl::StatusOr<Device> ParseDevice(std::string_view name);
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(Device device,
                                                       const BackendOptions& options);

// Whether this binary was built with the CUDA kernels.
bool BuiltWithCuda();

// Number of usable CUDA devices; 0 without CUDA, a driver or a GPU, and then
// `why` (when given) says which.
int CudaDeviceCount(std::string* why = nullptr);

// The devices CreateBackend can make a backend for on this machine.
std::vector<std::string> AvailableBackends();

}  // namespace shift::kernels
