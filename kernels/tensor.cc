#include "kernels/tensor.h"

#include "common/status.h"

namespace shift::kernels {

const char* DeviceName(Device device) {
  switch (device) {
    case Device::kCpu:
      return "cpu";
    case Device::kCuda:
      return "cuda";
  }
  return "?";
}

Tensor Tensor::Rows(int64_t begin, int64_t end) const {
  SHIFT_CHECK(0 <= begin && begin <= end && end <= rows, "rows [", begin, ", ", end, ") of ", rows);
  Tensor out = *this;
  out.data = static_cast<char*>(data) + begin * ld * static_cast<int64_t>(DTypeSize(dtype));
  out.rows = end - begin;
  return out;
}

Tensor Tensor::Cols(int64_t begin, int64_t end) const {
  SHIFT_CHECK(0 <= begin && begin <= end && end <= cols, "columns [", begin, ", ", end, ") of ",
              cols);
  Tensor out = *this;
  out.data = static_cast<char*>(data) + begin * static_cast<int64_t>(DTypeSize(dtype));
  out.cols = end - begin;
  return out;
}

Tensor Tensor::Reshape(int64_t new_rows, int64_t new_cols) const {
  SHIFT_CHECK(contiguous() && new_rows * new_cols == size(), rows, " x ", cols, " (ld ", ld,
              ") as ", new_rows, " x ", new_cols);
  Tensor out = *this;
  out.rows = new_rows;
  out.cols = new_cols;
  out.ld = new_cols;
  return out;
}

Tensor HostTensor(float* data, int64_t n) {
  return Tensor{data, DType::kF32, Device::kCpu, 1, n, n};
}

Tensor HostTensor(const float* data, int64_t n) { return HostTensor(const_cast<float*>(data), n); }

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    Reset();
    tensor_ = other.tensor_;
    release_ = std::move(other.release_);
    other.tensor_ = Tensor{};
    other.release_ = nullptr;
  }
  return *this;
}

void Buffer::Reset() {
  if (release_ && tensor_.data != nullptr) release_(tensor_.data);
  release_ = nullptr;
  tensor_ = Tensor{};
}

}  // namespace shift::kernels
