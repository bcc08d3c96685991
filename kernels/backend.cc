#include "kernels/backend.h"

#ifdef SHIFT_HAVE_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace shift::kernels {

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
