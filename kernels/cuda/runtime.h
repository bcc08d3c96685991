// Host-side entry points of the CUDA kernels, callable from plain C++: device
// discovery and each kernel behind an absl::Status. Built only when nvcc is
// found (SHIFT_HAVE_CUDA).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace shift::kernels::cuda {

// OK, or INTERNAL naming `what` and the runtime's error; clears a launch
// error so it does not stick to later calls.
absl::Status CudaStatus(int err, const char* what);

// Usable CUDA devices; 0 (and the runtime's reason in `why`) when there is
// no driver or no GPU.
int DeviceCount(std::string* why = nullptr);

// Converts n bf16 values to fp32 on device 0: copies `src` to the GPU, runs
// the kernel, copies the result to `dst`. Exact, like the CPU conversion.
absl::Status Bf16ToF32(const uint16_t* src, size_t n, float* dst);

}  // namespace shift::kernels::cuda
