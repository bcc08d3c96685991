#include "common/fingerprint.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/dtype.h"
#include "common/file_util.h"
#include "common/model_config.h"
#include "common/model_schema.h"
#include "common/status.h"

namespace shift {
namespace {

constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ull;

uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
uint64_t Load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
uint64_t Round(uint64_t acc, uint64_t word) { return Rotl(acc + word * kP2, 31) * kP1; }
uint64_t Avalanche(uint64_t h) {
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  return h ^ (h >> 32);
}

// Folds `value` into `h` (order matters).
uint64_t Combine(uint64_t h, uint64_t value) { return Avalanche(Round(h, value) + kP4); }
uint64_t CombineString(uint64_t h, const std::string& s) {
  return Combine(h, HashBytes(reinterpret_cast<const unsigned char*>(s.data()), s.size(), 0));
}

// Runs work(i) for i in [0, n) on up to `threads` threads.
template <typename Work>
void ParallelFor(size_t n, int threads, const Work& work) {
  threads = std::max(1, std::min<int>(threads, static_cast<int>(n)));
  std::atomic<size_t> next{0};
  auto run = [&] {
    for (size_t i; (i = next.fetch_add(1)) < n;) work(i);
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(run);
  run();
  for (std::thread& t : pool) t.join();
}

}  // namespace

uint64_t HashBytes(const unsigned char* data, size_t n, uint64_t seed) {
  uint64_t a = seed + kP1 + kP2, b = seed + kP2, c = seed, d = seed - kP1;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a = Round(a, Load64(data + i));
    b = Round(b, Load64(data + i + 8));
    c = Round(c, Load64(data + i + 16));
    d = Round(d, Load64(data + i + 24));
  }
  uint64_t h = Rotl(a, 1) + Rotl(b, 7) + Rotl(c, 12) + Rotl(d, 18) + n;
  for (; i + 8 <= n; i += 8) h = Rotl(h ^ Round(0, Load64(data + i)), 27) * kP1 + kP4;
  for (; i < n; ++i) h = Rotl(h ^ (data[i] * kP3), 11) * kP1;
  return Avalanche(h);
}

uint64_t PieceCount(uint64_t nbytes, uint64_t piece_bytes) {
  return std::max<uint64_t>(1, (nbytes + piece_bytes - 1) / piece_bytes);
}

absl::StatusOr<uint64_t> ConfigDigestOf(const std::string& dir) {
  SHIFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(dir + "/config.json"));
  return ConfigDigest(text);
}

uint64_t ConfigDigest(absl::string_view config_json) {
  return HashBytes(reinterpret_cast<const unsigned char*>(config_json.data()), config_json.size(),
                   0);
}

uint64_t HeadersDigest(const Checkpoint& checkpoint) {
  uint64_t h = 0;
  for (const std::string& name : checkpoint.Names()) {
    const TensorView* t = checkpoint.Find(name);
    h = CombineString(h, name);
    h = CombineString(h, std::string(DTypeName(t->dtype)));
    h = Combine(h, t->shape.size());
    for (int64_t dim : t->shape) h = Combine(h, static_cast<uint64_t>(dim));
  }
  return h;
}

std::string DigestHex(uint64_t digest) { return absl::StrFormat("%016x", digest); }

absl::StatusOr<uint64_t> ParseDigest(absl::string_view hex) {
  uint64_t value = 0;
  bool ok = hex.size() == 16;
  for (char c : hex) {
    const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (digit < 0) ok = false;
    value = value << 4 | static_cast<uint64_t>(std::max(digit, 0));
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a weights digest is 16 lower-case hex digits (as shift-inspect prints it), not \"",
        std::string(hex.substr(0, 64)), "\""));
  }
  return value;
}

WeightsDigester::WeightsDigester(uint64_t config_digest, const Checkpoint& checkpoint,
                                 uint64_t piece_bytes, int threads)
    : piece_bytes_(piece_bytes),
      threads_(threads > 0 ? threads
                           : static_cast<int>(
                                 std::min(8u, std::max(1u, std::thread::hardware_concurrency())))) {
  report_.config_digest = config_digest;
  report_.headers_digest = HeadersDigest(checkpoint);
  report_.piece_bytes = piece_bytes;
}

void WeightsDigester::OnRead(const TensorView& tensor, size_t begin, size_t end) {
  const uint64_t piece = piece_bytes_;
  end = std::min(end, tensor.nbytes);
  std::vector<uint32_t> todo;
  {
    absl::MutexLock lock(&mu_);
    TensorPieces& pieces = report_.tensors[tensor.name];
    pieces.nbytes = tensor.nbytes;
    if (tensor.nbytes == 0) {
      pieces.pieces.emplace(0, HashBytes(tensor.data, 0, 0));
      return;
    }
    if (begin >= end) return;
    for (uint64_t i = begin / piece; i * piece < end; ++i) {
      if (!pieces.pieces.count(static_cast<uint32_t>(i))) todo.push_back(static_cast<uint32_t>(i));
    }
  }
  std::vector<uint64_t> digests(todo.size());
  ParallelFor(todo.size(), threads_, [&](size_t k) {
    const uint64_t at = uint64_t{todo[k]} * piece;
    digests[k] = HashBytes(tensor.data + at, std::min<uint64_t>(piece, tensor.nbytes - at), at);
  });
  absl::MutexLock lock(&mu_);
  TensorPieces& pieces = report_.tensors[tensor.name];
  for (size_t k = 0; k < todo.size(); ++k) pieces.pieces.emplace(todo[k], digests[k]);
}

WeightsReport WeightsDigester::Report() const {
  absl::MutexLock lock(&mu_);
  return report_;
}

std::string WeightsDifference(const WeightsReport& mine, const WeightsReport& theirs,
                              const std::string& other) {
  if (mine.piece_bytes != theirs.piece_bytes) {
    return absl::StrCat("its weights report cuts tensors into ", mine.piece_bytes, "-byte pieces, ",
                        other, "'s into ", theirs.piece_bytes, " (run one shift version)");
  }
  if (mine.config_digest != theirs.config_digest) {
    return absl::StrCat("its config.json differs from ", other,
                        "'s: every rank must load the same model");
  }
  if (mine.headers_digest != theirs.headers_digest) {
    return absl::StrCat("its checkpoint's tensors (names, dtypes or shapes) differ from ", other,
                        "'s: every rank must load the same model");
  }
  for (const auto& [name, pieces] : mine.tensors) {
    auto it = theirs.tensors.find(name);
    if (it == theirs.tensors.end()) continue;
    if (it->second.nbytes != pieces.nbytes) {
      return absl::StrCat("tensor ", name, " has ", pieces.nbytes, " bytes, ", other, "'s ",
                          it->second.nbytes);
    }
    for (const auto& [index, digest] : pieces.pieces) {
      auto theirs_piece = it->second.pieces.find(index);
      if (theirs_piece == it->second.pieces.end() || theirs_piece->second == digest) continue;
      const uint64_t at = uint64_t{index} * mine.piece_bytes;
      return absl::StrCat("tensor ", name, " differs from ", other, "'s (bytes ", at, "..",
                          std::min(at + mine.piece_bytes, pieces.nbytes),
                          "): every rank must load the same weights");
    }
  }
  return "";
}

absl::StatusOr<uint64_t> CombinedWeightsDigest(const std::vector<const WeightsReport*>& reports) {
  if (reports.empty()) return absl::InvalidArgumentError("no weights reports to combine");
  const WeightsReport& first = *reports.front();
  std::map<std::string, TensorPieces> all;
  for (const WeightsReport* report : reports) {
    for (const auto& [name, pieces] : report->tensors) {
      TensorPieces& merged = all[name];
      merged.nbytes = pieces.nbytes;
      merged.pieces.insert(pieces.pieces.begin(), pieces.pieces.end());
    }
  }
  uint64_t h = Combine(Combine(0, first.config_digest), first.headers_digest);
  for (const auto& [name, pieces] : all) {
    const uint64_t count = PieceCount(pieces.nbytes, first.piece_bytes);
    if (pieces.pieces.size() != count || pieces.pieces.rbegin()->first != count - 1) {
      uint32_t missing = 0;
      while (pieces.pieces.count(missing)) ++missing;
      const uint64_t at = uint64_t{missing} * first.piece_bytes;
      return absl::FailedPreconditionError(absl::StrCat(
          "no rank read bytes ", at, "..", std::min(at + first.piece_bytes, pieces.nbytes),
          " of tensor ", name, ": the ranks' shards do not cover the model"));
    }
    h = CombineString(h, name);
    h = Combine(h, pieces.nbytes);
    for (const auto& [index, digest] : pieces.pieces) h = Combine(h, digest);
  }
  return h;
}

absl::StatusOr<uint64_t> ModelWeightsDigest(const std::string& dir, int threads,
                                            uint64_t piece_bytes) {
  SHIFT_ASSIGN_OR_RETURN(uint64_t config_digest, ConfigDigestOf(dir));
  SHIFT_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(dir));
  WeightsDigester digester(config_digest, *checkpoint, piece_bytes, threads);
  checkpoint->set_observer(&digester);
  // The scales of FP8 weights, as every rank reads them...
  SHIFT_RETURN_IF_ERROR(CheckCheckpointAgainstSchema(*checkpoint, config));
  // ...and every tensor some rank of some layout loads part of.
  for (const TensorSpec& spec : ModelTensorSpecs(config)) {
    const TensorView* view = checkpoint->Find(spec.name);
    checkpoint->NoteRead(*view, 0, view->nbytes);
  }
  const WeightsReport report = digester.Report();
  return CombinedWeightsDigest({&report});
}

}  // namespace shift
