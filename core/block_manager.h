// The router's KV block manager: the single source of truth for which KV
// blocks each sequence owns. Workers allocate the memory; the router decides
// which block holds which tokens and sends block ids in step plans. Blocks
// are reference-counted so that sequences can share a prefix. A full block
// can be cached under a hash of the tokens up to its end: when nobody holds
// it any more it stays, evictable in least-recently-used order, for the next
// sequence with the same prefix. The hash only finds a candidate: a hit also
// needs the same tenant, the same parent (the block matched just before,
// identified by a cache id that is never reused) and the same tokens,
// compared one by one, so a hash collision can never serve another
// prompt's KV, and one tenant's blocks never serve another's. Running out of blocks is a value
// (Append returns false), never an exception: the scheduler preempts and tries again.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/types/span.h"

namespace shift {

class BlockManager {
 public:
  BlockManager(int64_t num_blocks, int64_t block_size);

  int64_t num_blocks() const { return static_cast<int64_t>(ref_counts_.size()); }
  int64_t block_size() const { return block_size_; }
  // Blocks Append can take: free ones and cached ones nobody holds.
  int64_t num_free() const { return static_cast<int64_t>(free_.size() + evictable_.size()); }
  int64_t num_used() const { return num_blocks() - num_free(); }
  // Cached blocks nobody holds (part of num_free()).
  int64_t num_cached() const { return static_cast<int64_t>(evictable_.size()); }

  // Blocks `seq` must add so its table covers `num_tokens` tokens.
  int64_t BlocksNeeded(uint64_t seq, int64_t num_tokens) const;
  // Grows `seq`'s table to cover `num_tokens` tokens. Returns false and
  // changes nothing when there are not enough free blocks.
  bool Append(uint64_t seq, int64_t num_tokens);
  // Drops `seq`'s table; blocks nobody else holds become free (or, when
  // cached, evictable).
  void Free(uint64_t seq);

  // The cached blocks that hold the longest verified prefix of `tokens`
  // (`hashes`: one per full block, in order) for `tenant`.
  std::vector<int32_t> MatchPrefix(absl::Span<const uint64_t> hashes,
                                   absl::Span<const int32_t> tokens, uint64_t tenant) const;
  // Starts `seq`'s (empty) table with `blocks` (from MatchPrefix).
  void AppendCached(uint64_t seq, absl::Span<const int32_t> blocks);
  // Caches `seq`'s block `index` (full, its KV computed) under `hash`, with
  // its `tokens` (block_size of them) and `tenant`, unless that hash or that
  // block is cached already.
  void Cache(uint64_t seq, int64_t index, uint64_t hash, absl::Span<const int32_t> tokens,
             uint64_t tenant);
  // Forgets every cached block (the workers' KV can no longer be trusted).
  void DropCache();
  // `seq`'s blocks in position order (empty when it has none).
  const std::vector<int32_t>& Table(uint64_t seq) const;
  int32_t RefCount(int32_t block) const { return ref_counts_[block]; }
  // Every block's count equals the tables holding it, and the free blocks are
  // exactly those with count 0, each once. For tests and debug checks.
  absl::Status CheckConsistency() const;

 private:
  void Uncache(int32_t block);

  int64_t block_size_;
  std::vector<int32_t> ref_counts_;
  std::vector<int32_t> free_;  // a stack: lowest ids are handed out first
  absl::flat_hash_map<uint64_t, std::vector<int32_t>> tables_;
  absl::flat_hash_map<uint64_t, int32_t> cache_;  // hash -> block
  std::vector<uint64_t> hash_of_;                 // per block, when cached
  std::vector<bool> cached_;                      // per block
  // Per cached block: what a hit must match.
  struct CachedKey {
    uint64_t id = 0;      // this caching's id (never reused; 0: none)
    uint64_t parent = 0;  // the id of the block before it (0: the first block)
    uint64_t tenant = 0;
    std::vector<int32_t> tokens;
  };
  std::vector<CachedKey> keys_;
  uint64_t next_cache_id_ = 0;
  std::map<uint64_t, int32_t> evictable_;  // last use -> cached block nobody holds
  std::vector<uint64_t> last_use_;         // per evictable block: its key above
  uint64_t clock_ = 0;
};

}  // namespace shift
