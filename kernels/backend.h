// The compute backends this build can use. CPU (fp32, deterministic) is
// always there and is the reference every other backend is checked against;
// CUDA is there when the build found nvcc and the machine has a GPU.
#pragma once

#include <string>
#include <vector>

namespace shift::kernels {

// Whether this binary was built with the CUDA kernels.
bool BuiltWithCuda();

// Number of usable CUDA devices; 0 without CUDA, a driver or a GPU, and then
// `why` (when given) says which.
int CudaDeviceCount(std::string* why = nullptr);

// "cpu", then "cuda" when CudaDeviceCount() > 0.
std::vector<std::string> AvailableBackends();

}  // namespace shift::kernels
