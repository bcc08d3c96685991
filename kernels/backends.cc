#include "kernels/backends.h"

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"

#ifdef SHIFT_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/runtime.h"
#endif

namespace shift::kernels {

absl::StatusOr<Device> ParseDevice(std::string_view name) {
  if (name == "cpu") return Device::kCpu;
  if (name == "cuda") {
    if (BuiltWithCuda()) return Device::kCuda;
    return absl::UnimplementedError(
        "--device=cuda: this build has no CUDA backend (nvcc was not found when it was "
        "configured); use --device=cpu");
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--device=", std::string(name), " is not a device (the choices: cpu, cuda)"));
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(Device device,
                                                       const BackendOptions& options) {
  switch (device) {
    case Device::kCpu:
      return std::unique_ptr<Backend>(std::make_unique<cpu::CpuBackend>(options.threads));
    case Device::kCuda: {
#ifdef SHIFT_HAVE_CUDA
      auto backend = cuda::CreateCudaBackend(options.cuda_device, options.fp8_gemm);
      if (backend.ok()) return backend;
      return absl::Status(
          backend.status().code(),
          absl::StrCat("--device=cuda: ", backend.status().message(), "; use --device=cpu"));
#else
      break;
#endif
    }
  }
  return absl::UnimplementedError(
      absl::StrCat("no ", DeviceName(device), " backend in this build"));
}

bool BuiltWithCuda() {
#ifdef SHIFT_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

int CudaDeviceCount(std::string* why) {
#ifdef SHIFT_HAVE_CUDA
  return cuda::DeviceCount(why);
#else
  if (why) *why = "this build has no CUDA kernels (nvcc was not found at configure time)";
  return 0;
#endif
}

std::vector<std::string> AvailableBackends() {
  std::vector<std::string> out = {"cpu"};
  if (CudaDeviceCount() > 0) out.push_back("cuda");
  return out;
}

}  // namespace shift::kernels
