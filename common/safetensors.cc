#include "common/safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace shift {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100 << 20;  // the format's own limit

absl::Status FileError(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

absl::Status TensorError(const std::string& path, absl::string_view tensor,
                         absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": tensor \"", tensor, "\" ", what));
}

// Parses one header entry into `view` (data pointer relative to `base`).
absl::Status ParseEntry(const std::string& path, const std::string& name, const json& entry,
                        const unsigned char* base, uint64_t data_size, TensorView* view) {
  if (!entry.is_object()) return TensorError(path, name, "header entry is not an object");
  auto dtype_it = entry.find("dtype");
  auto shape_it = entry.find("shape");
  auto offsets_it = entry.find("data_offsets");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return TensorError(path, name, "has no string \"dtype\"");
  }
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return TensorError(path, name, "has no array \"shape\"");
  }
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    return TensorError(path, name, "has no \"data_offsets\" pair of non-negative integers");
  }
  const std::string dtype_name = dtype_it->get<std::string>();
  auto dtype = DTypeFromName(dtype_name);
  if (!dtype) {
    return TensorError(path, name,
                       absl::StrCat("has unsupported dtype ", dtype_name, " (F32, BF16, F16)"));
  }
  view->name = name;
  view->dtype = *dtype;
  uint64_t elements = 1;
  for (const json& dim : *shape_it) {
    if (!dim.is_number_unsigned()) {
      return TensorError(path, name, "has a shape entry that is not a non-negative integer");
    }
    uint64_t d = dim.get<uint64_t>();
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        (d != 0 && elements > std::numeric_limits<uint64_t>::max() / 16 / d)) {
      return TensorError(path, name, "has a shape whose size overflows");
    }
    elements *= d;
    view->shape.push_back(static_cast<int64_t>(d));
  }
  uint64_t begin = (*offsets_it)[0].get<uint64_t>();
  uint64_t end = (*offsets_it)[1].get<uint64_t>();
  if (end < begin) {
    return TensorError(
        path, name,
        absl::StrCat("has data_offsets [", begin, ", ", end, "] that end before they begin"));
  }
  if (end > data_size) {
    return TensorError(
        path, name,
        absl::StrCat("has data_offsets [", begin, ", ", end, "] out of range of the data section (",
                     data_size, " bytes); the file may be truncated"));
  }
  uint64_t expected = elements * DTypeSize(*dtype);
  if (end - begin != expected) {
    return TensorError(
        path, name,
        absl::StrCat("holds ", end - begin, " bytes but shape ", ShapeToString(view->shape), " of ",
                     dtype_name, " needs ", expected));
  }
  view->data = base + begin;
  view->nbytes = end - begin;
  return absl::OkStatus();
}

}  // namespace

int64_t TensorView::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeToString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status Checkpoint::AddFile(const std::string& path) {
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  const unsigned char* bytes = file->data();
  const uint64_t size = file->size();
  if (size < 8) {
    return FileError(path, absl::StrCat("is ", size,
                                        " bytes, too short for a safetensors "
                                        "header length (8 bytes); truncated?"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > kMaxHeaderBytes) {
    return FileError(path, absl::StrCat("declares a header of ", header_len,
                                        " bytes, over the 100 MiB limit: not a safetensors file"));
  }
  if (8 + header_len > size) {
    return FileError(path, absl::StrCat("declares a header of ", header_len,
                                        " bytes but the file "
                                        "has only ",
                                        size - 8, " after the length; truncated?"));
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  json header = json::parse(header_begin, header_begin + header_len, nullptr,
                            /*allow_exceptions=*/false);
  if (header.is_discarded()) return FileError(path, "header is not valid JSON");
  if (!header.is_object()) return FileError(path, "header is not a JSON object");

  const unsigned char* data = bytes + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  std::vector<TensorView> views;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    TensorView view;
    SHIFT_RETURN_IF_ERROR(ParseEntry(path, it.key(), it.value(), data, data_size, &view));
    views.push_back(std::move(view));
  }
  // Tensors may not share bytes.
  std::vector<const TensorView*> by_offset;
  for (const TensorView& v : views) {
    if (v.nbytes > 0) by_offset.push_back(&v);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorView* a, const TensorView* b) { return a->data < b->data; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorView* prev = by_offset[i - 1];
    if (by_offset[i]->data < prev->data + prev->nbytes) {
      return TensorError(path, by_offset[i]->name,
                         absl::StrCat("overlaps tensor \"", prev->name, "\""));
    }
  }
  files_.push_back(std::move(file));
  for (TensorView& v : views) {
    v.file = &files_.back()->path();
    std::string name = v.name;
    if (!tensors_.emplace(name, std::move(v)).second) {
      return TensorError(path, name, "appears in more than one checkpoint file");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::OpenFile(const std::string& path) {
  std::unique_ptr<Checkpoint> checkpoint(new Checkpoint());
  SHIFT_RETURN_IF_ERROR(checkpoint->AddFile(path));
  return checkpoint;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  const std::string index_path = dir + "/model.safetensors.index.json";
  struct stat st;
  if (::stat(index_path.c_str(), &st) != 0) return OpenFile(dir + "/model.safetensors");

  SHIFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(index_path, size_t{64} << 20));
  json index = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object()) {
    return FileError(index_path, "is not a JSON object");
  }
  auto map_it = index.find("weight_map");
  if (map_it == index.end() || !map_it->is_object()) {
    return FileError(index_path, "has no \"weight_map\" object");
  }
  std::map<std::string, std::vector<std::string>> by_shard;
  for (auto it = map_it->begin(); it != map_it->end(); ++it) {
    if (!it.value().is_string()) {
      return TensorError(index_path, it.key(), "maps to something that is not a file name");
    }
    std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "..") {
      return TensorError(index_path, it.key(),
                         absl::StrCat("maps to \"", shard, "\", not a file in the directory"));
    }
    by_shard[shard].push_back(it.key());
  }
  std::unique_ptr<Checkpoint> checkpoint(new Checkpoint());
  for (const auto& [shard, names] : by_shard) {
    const std::string path = dir + "/" + shard;
    absl::Status status = checkpoint->AddFile(path);
    if (!status.ok()) {
      return absl::Status(status.code(),
                          absl::StrCat(status.message(), " (shard named in ", index_path, ")"));
    }
    for (const std::string& name : names) {
      const TensorView* view = checkpoint->Find(name);
      if (view == nullptr || *view->file != path) {
        return TensorError(
            path, name, absl::StrCat("is named in ", index_path, " but missing from this shard"));
      }
    }
  }
  return checkpoint;
}

const TensorView* Checkpoint::Find(absl::string_view name) const {
  auto it = tensors_.find(std::string(name));
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::StatusOr<const TensorView*> Checkpoint::Get(absl::string_view name,
                                                  absl::Span<const int64_t> shape) const {
  const TensorView* view = Find(name);
  if (view == nullptr) {
    std::string where = files_.size() == 1 ? files_[0]->path() : "checkpoint";
    if (files_.size() > 1)
      where = absl::StrCat(files_.size(), "-shard checkpoint of ", files_[0]->path());
    return absl::NotFoundError(absl::StrCat(
        where, ": tensor \"", name, "\" is missing (expected shape ", ShapeToString(shape), ")"));
  }
  if (!std::equal(view->shape.begin(), view->shape.end(), shape.begin(), shape.end())) {
    return TensorError(*view->file, name,
                       absl::StrCat("has shape ", ShapeToString(view->shape), ", expected ",
                                    ShapeToString(shape)));
  }
  return view;
}

absl::Status Checkpoint::ReadAsF32(absl::string_view name, absl::Span<const int64_t> shape,
                                   float* out) const {
  SHIFT_ASSIGN_OR_RETURN(const TensorView* view, Get(name, shape));
  NoteRead(*view, 0, view->nbytes);
  ConvertToF32(view->dtype, view->data, static_cast<size_t>(view->NumElements()), out);
  return absl::OkStatus();
}

std::vector<std::string> Checkpoint::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, view] : tensors_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

uint64_t Checkpoint::TotalBytes() const {
  uint64_t total = 0;
  for (const auto& [name, view] : tensors_) total += view.nbytes;
  return total;
}

absl::Status WriteSafetensors(const std::string& path, absl::Span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    uint64_t elements = 1;
    for (int64_t d : t.shape) elements *= static_cast<uint64_t>(d);
    if (elements * DTypeSize(t.dtype) != t.bytes.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "writing ", path, ": tensor \"", t.name, "\" has ", t.bytes.size(), " bytes for shape ",
          ShapeToString(t.shape), " of ", std::string(DTypeName(t.dtype))));
    }
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string header_text = header.dump(-1, ' ', false, json::error_handler_t::replace);
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + header_text.size() + offset);
  uint64_t len = header_text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((len >> (8 * i)) & 0xFF));
  out += header_text;
  for (const TensorToWrite& t : tensors) out.append(t.bytes.data(), t.bytes.size());
  return WriteStringToFile(path, out);
}

absl::Status WriteSafetensorsIndex(const std::string& dir,
                                   const std::map<std::string, std::string>& weight_map,
                                   uint64_t total_size) {
  json index = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  return WriteStringToFile(dir + "/model.safetensors.index.json", index.dump(2) + "\n");
}

}  // namespace shift
