// A safetensors file of arbitrary bytes: Checkpoint::OpenFile gives a clear
// error or tensors that lie inside the file, which then read as fp32.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // An in-memory file: a regular file as far as the loader can tell.
  const int fd = memfd_create("safetensors_fuzz", MFD_CLOEXEC);
  if (fd < 0) shift::fuzz::Fail("memfd_create failed");
  size_t written = 0;
  while (written < size) {
    const ssize_t n = write(fd, data + written, size - written);
    if (n <= 0) shift::fuzz::Fail("write failed");
    written += static_cast<size_t>(n);
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  auto checkpoint = shift::Checkpoint::OpenFile(path);
  if (checkpoint.ok()) {
    for (const std::string& name : (*checkpoint)->Names()) {
      const shift::TensorView* t = (*checkpoint)->Find(name);
      if (t == nullptr) shift::fuzz::Fail("a listed tensor is not found");
      if (t->NumElements() > (int64_t{1} << 20)) continue;  // valid, but too big to convert here
      std::vector<float> out(static_cast<size_t>(t->NumElements()));
      if (!(*checkpoint)->ReadAsF32(name, t->shape, out.data()).ok()) {
        shift::fuzz::Fail("a tensor the loader accepted cannot be read");
      }
    }
  } else if (checkpoint.status().message().empty()) {
    shift::fuzz::Fail("an error without a message");
  }
  close(fd);
  return 0;
}
