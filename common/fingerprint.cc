#include "common/fingerprint.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/dtype.h"
#include "common/file_util.h"
#include "common/status.h"

namespace shift {
namespace {

constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ull;
// Bytes hashed as one unit of parallel work.
constexpr size_t kChunk = size_t{32} << 20;

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

uint64_t WeightsDigest(const Checkpoint& checkpoint, int threads) {
  struct Piece {
    const TensorView* tensor;
    size_t offset, size;
    uint64_t hash = 0;
  };
  std::vector<Piece> pieces;
  const std::vector<std::string> names = checkpoint.Names();
  for (const std::string& name : names) {
    const TensorView* t = checkpoint.Find(name);
    for (size_t at = 0; at < t->nbytes || (at == 0 && t->nbytes == 0); at += kChunk) {
      pieces.push_back({t, at, std::min(kChunk, t->nbytes - at)});
      if (t->nbytes == 0) break;
    }
  }
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::max(1, std::min<int>(threads, static_cast<int>(pieces.size())));
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < pieces.size();) {
      Piece& p = pieces[i];
      p.hash = HashBytes(p.tensor->data + p.offset, p.size, p.offset);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();

  uint64_t h = 0;
  const TensorView* last = nullptr;
  for (const Piece& p : pieces) {
    if (p.tensor != last) {
      last = p.tensor;
      h = CombineString(h, p.tensor->name);
      h = CombineString(h, std::string(DTypeName(p.tensor->dtype)));
      h = Combine(h, p.tensor->shape.size());
      for (int64_t dim : p.tensor->shape) h = Combine(h, static_cast<uint64_t>(dim));
    }
    h = Combine(h, p.hash);
  }
  return h;
}

absl::StatusOr<std::string> ModelFingerprint(const std::string& dir, int threads) {
  SHIFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(dir + "/config.json"));
  const uint64_t config =
      HashBytes(reinterpret_cast<const unsigned char*>(text.data()), text.size(), 0);
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(dir));
  return absl::StrFormat("%016x-%016x", config, WeightsDigest(*checkpoint, threads));
}

}  // namespace shift
