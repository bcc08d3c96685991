// Views of backend memory and the buffers that own it. A Tensor is a 2-D
// row-major view (pointer, shape, row stride, dtype, device) over memory
// someone else owns; a Buffer owns memory a backend allocated and frees it
// through that backend. Model code moves Tensors around and never reads
// through them: only a backend (or a communicator) does, on its device.
#pragma once

#include <cstdint>
#include <functional>

#include "common/dtype.h"

namespace shift::kernels {

enum class Device { kCpu, kCuda };

// "cpu" or "cuda": the spelling of --device.
const char* DeviceName(Device device);

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  int64_t rows = 0, cols = 0;
  int64_t ld = 0;  // elements from one row to the next

  int64_t size() const { return rows * cols; }
  bool empty() const { return size() == 0; }
  bool contiguous() const { return ld == cols || rows <= 1; }
  int64_t bytes() const { return size() * static_cast<int64_t>(DTypeSize(dtype)); }
  // Rows [begin, end) or columns [begin, end) of this view (checked).
  Tensor Rows(int64_t begin, int64_t end) const;
  Tensor Cols(int64_t begin, int64_t end) const;
  // The same contiguous elements as rows × cols (checked).
  Tensor Reshape(int64_t rows, int64_t cols) const;
  // The element pointer, for backends and communicators of this device.
  template <typename T>
  T* As() const {
    return static_cast<T*>(data);
  }
};

// n fp32 values in host memory as a 1 × n tensor (tests, Gloo, host copies).
Tensor HostTensor(float* data, int64_t n);
Tensor HostTensor(const float* data, int64_t n);

// Owns the memory under its tensor(); move-only.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Tensor tensor, std::function<void(void*)> release)
      : tensor_(tensor), release_(std::move(release)) {}
  Buffer(Buffer&& other) noexcept { *this = std::move(other); }
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { Reset(); }

  const Tensor& tensor() const { return tensor_; }
  // A buffer is passed wherever its whole tensor is meant.
  operator const Tensor&() const { return tensor_; }  // NOLINT(google-explicit-constructor)
  // Shorthands for tensor().Rows / .Cols.
  Tensor Rows(int64_t begin, int64_t end) const { return tensor_.Rows(begin, end); }
  Tensor Cols(int64_t begin, int64_t end) const { return tensor_.Cols(begin, end); }

 private:
  void Reset();

  Tensor tensor_;
  std::function<void(void*)> release_;
};

}  // namespace shift::kernels
