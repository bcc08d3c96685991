// Reads Hugging Face safetensors checkpoints (one model.safetensors, or shards
// listed in model.safetensors.index.json) by memory-mapping them, and writes
// them. Every malformed input is an error naming the file and the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "common/file_util.h"

namespace shift {

// A tensor inside a mapped checkpoint file; valid while its Checkpoint lives.
struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const unsigned char* data;  // may be unaligned
  size_t nbytes;
  const std::string* file;  // path of the file holding it

  int64_t NumElements() const;
};

// Told of the tensor bytes a checkpoint's readers use: [begin, end) of
// `tensor`'s data (the weights digest, common/fingerprint.h, hooks here).
// Calls may come from several threads.
class ReadObserver {
 public:
  virtual ~ReadObserver() = default;
  virtual void OnRead(const TensorView& tensor, size_t begin, size_t end) = 0;
};

class Checkpoint {
 public:
  // Opens DIR/model.safetensors.index.json when present, else
  // DIR/model.safetensors.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);
  // Opens one safetensors file.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> OpenFile(const std::string& path);

  // nullptr when absent.
  const TensorView* Find(absl::string_view name) const;
  // The tensor, checked to exist and to have `shape`; errors name the
  // file and the tensor.
  absl::StatusOr<const TensorView*> Get(absl::string_view name,
                                        absl::Span<const int64_t> shape) const;
  // Get, then converts it to fp32 into `out` (NumElements floats).
  absl::Status ReadAsF32(absl::string_view name, absl::Span<const int64_t> shape, float* out) const;

  // Readers that take bytes from a TensorView's data themselves say which
  // (ReadAsF32 says so itself); the observer, if any, hears of it.
  void NoteRead(const TensorView& tensor, size_t begin, size_t end) const {
    if (observer_ != nullptr) observer_->OnRead(tensor, begin, end);
  }
  // Tells `observer` (nullptr: nobody) of every read from now on; it must
  // outlive them.
  void set_observer(ReadObserver* observer) { observer_ = observer; }

  // Tensor names, sorted.
  std::vector<std::string> Names() const;
  // Bytes of all tensor data.
  uint64_t TotalBytes() const;
  const std::vector<std::unique_ptr<MappedFile>>& files() const { return files_; }

 private:
  Checkpoint() = default;
  absl::Status AddFile(const std::string& path);

  std::vector<std::unique_ptr<MappedFile>> files_;
  absl::flat_hash_map<std::string, TensorView> tensors_;
  ReadObserver* observer_ = nullptr;
};

// A tensor to write: its bytes must already be in `dtype`.
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  absl::string_view bytes;
};

// Writes one safetensors file: 8-byte little-endian header length, JSON
// header padded with spaces to a multiple of 8, then the tensors in order.
absl::Status WriteSafetensors(const std::string& path, absl::Span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata = {});

// Writes DIR/model.safetensors.index.json mapping each tensor to its shard.
absl::Status WriteSafetensorsIndex(const std::string& dir,
                                   const std::map<std::string, std::string>& weight_map,
                                   uint64_t total_size);

std::string ShapeToString(absl::Span<const int64_t> shape);

}  // namespace shift
