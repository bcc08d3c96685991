// Whole-file reads and writes, and a read-only memory mapping, with errors
// that name the path. Only regular files are read or mapped.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace shift {

// Reads a regular file (a FIFO, a device or a directory is refused, never
// waited on) of at most `max_bytes`.
inline constexpr size_t kMaxReadFileBytes = size_t{1} << 30;
absl::StatusOr<std::string> ReadFileToString(const std::string& path,
                                             size_t max_bytes = kMaxReadFileBytes);
absl::Status WriteStringToFile(const std::string& path, absl::string_view data);

// A directory's base name, trailing slashes ignored ("/models/llama/" gives
// "llama"): the served model's default name.
std::string DirectoryBaseName(std::string path);

// A file mapped read-only for the object's lifetime.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const unsigned char* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const unsigned char* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const unsigned char* data_;
  size_t size_;
};

}  // namespace shift
