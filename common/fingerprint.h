// The weights digest (docs/architecture.md, "The weights digest"): what
// the router compares before a group of ranks serves together, so a rank
// with other weights (one tensor changed, another checkpoint, another
// config) is refused instead of silently changing outputs. Each rank
// digests exactly the bytes it loads, while loading them (a
// Checkpoint::ReadObserver): the router never reads a weight.
//
// Every tensor's bytes are cut into pieces of kWeightsPieceBytes; a piece's
// digest is HashBytes of its bytes seeded with its offset. A rank reports
// the config's digest, the checkpoint's headers digest (every tensor's name,
// dtype and shape, in name order: independent of how the files are split)
// and the digests of the pieces it read. The model's digest folds, in
// tensor name order, each tensor's name, size and piece digests after the
// config and headers digests: it is the same whichever ranks read which
// pieces, and shift-inspect prints it from one read of the directory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/safetensors.h"

namespace shift {

// A 64-bit hash of `n` bytes (four xxHash64-style lanes; not
// cryptographic: it tells models apart, it does not resist forgery).
uint64_t HashBytes(const unsigned char* data, size_t n, uint64_t seed);

// Bytes of a piece: small enough that a rank reading 1/8 of an FP8 matrix
// digests little more than its rows, large enough that the report of a
// 400B-parameter model stays near 1 MB.
constexpr uint64_t kWeightsPieceBytes = uint64_t{8} << 20;

// The pieces of one tensor that a rank read: index -> digest.
struct TensorPieces {
  uint64_t nbytes = 0;
  std::map<uint32_t, uint64_t> pieces;
};

// What a rank tells the router about its weights.
struct WeightsReport {
  uint64_t config_digest = 0;
  uint64_t headers_digest = 0;
  uint64_t piece_bytes = kWeightsPieceBytes;
  std::map<std::string, TensorPieces> tensors;
};

// Pieces of a tensor of `nbytes` (one for an empty tensor).
uint64_t PieceCount(uint64_t nbytes, uint64_t piece_bytes);
// The digest of config.json's bytes, and of `dir`/config.json.
uint64_t ConfigDigest(absl::string_view config_json);
absl::StatusOr<uint64_t> ConfigDigestOf(const std::string& dir);
// The digest of every tensor's name, dtype and shape, in name order.
uint64_t HeadersDigest(const Checkpoint& checkpoint);
// 16 lower-case hex digits; ParseDigest reads them back (nullopt-like
// error for anything else).
std::string DigestHex(uint64_t digest);
absl::StatusOr<uint64_t> ParseDigest(absl::string_view hex);

// Digests the pieces the reads it observes touch, each piece once, on up
// to `threads` threads per read (0: one per core, at most 8).
class WeightsDigester : public ReadObserver {
 public:
  WeightsDigester(uint64_t config_digest, const Checkpoint& checkpoint,
                  uint64_t piece_bytes = kWeightsPieceBytes, int threads = 0);
  void OnRead(const TensorView& tensor, size_t begin, size_t end) override;
  WeightsReport Report() const;

 private:
  const uint64_t piece_bytes_;
  const int threads_;
  mutable absl::Mutex mu_;
  WeightsReport report_ ABSL_GUARDED_BY(mu_);
};

// Where two reports disagree on what both describe, naming the first
// tensor that differs (and its byte range); "" when they agree. `other`
// names the second report's owner in the sentence ("group 0 rank 1").
std::string WeightsDifference(const WeightsReport& mine, const WeightsReport& theirs,
                              const std::string& other);

// The model's digest from reports that agree (WeightsDifference) and
// together read every piece of every tensor any of them read; an error
// naming a tensor with a piece nobody read.
absl::StatusOr<uint64_t> CombinedWeightsDigest(const std::vector<const WeightsReport*>& reports);

// The digest of the model in `dir` as a group of ranks reports it: every
// tensor a rank of any layout loads, read whole (shift-inspect prints it).
absl::StatusOr<uint64_t> ModelWeightsDigest(const std::string& dir, int threads = 0,
                                            uint64_t piece_bytes = kWeightsPieceBytes);

}  // namespace shift
