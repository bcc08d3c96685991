// Host-side entry points of the CUDA kernels, callable from plain C++: device
// discovery and each kernel behind an absl::Status. Built only when nvcc is
// found (SHIFT_HAVE_CUDA).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/status/status.h"

namespace shift::kernels::cuda {

// A library loaded at run time rather than linked (cuBLASLt, NCCL): the
// first of its names dlopen finds, and its entry points by name.
class RuntimeLibrary {
 public:
  explicit RuntimeLibrary(std::initializer_list<const char*> names);
  // Whether one of the names loaded; if not, dlerror()'s reason.
  bool loaded() const { return handle_ != nullptr; }
  const std::string& why() const { return why_; }
  // *fn = the entry point `name` (null when the library lacks it).
  template <typename F>
  void Get(F** fn, const char* name) {
    *fn = reinterpret_cast<F*>(Symbol(name));
    complete_ = complete_ && *fn != nullptr;
  }
  // Whether every Get found its entry point.
  bool complete() const { return complete_; }

 private:
  void* Symbol(const char* name) const;

  void* handle_ = nullptr;
  std::string why_;
  bool complete_ = true;
};

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
