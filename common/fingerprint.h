// What the router and every rank of a group compare before they serve
// together: the model's config.json and a digest of its weights, so a rank
// with the same config but other weights is refused instead of silently
// changing outputs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/safetensors.h"

namespace shift {

// A 64-bit hash of `n` bytes (four xxHash64-style lanes; not
// cryptographic: it tells models apart, it does not resist forgery).
uint64_t HashBytes(const unsigned char* data, size_t n, uint64_t seed);

// A digest of every tensor: its name, dtype, shape and bytes, in name
// order, so it does not depend on how the checkpoint is split into files.
// The bytes are hashed in chunks on `threads` threads (0: one per core).
uint64_t WeightsDigest(const Checkpoint& checkpoint, int threads = 0);

// "CONFIG-WEIGHTS": hex digests of `dir`/config.json and of its weights.
absl::StatusOr<std::string> ModelFingerprint(const std::string& dir, int threads = 0);

}  // namespace shift
