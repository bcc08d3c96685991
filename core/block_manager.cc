#include "core/block_manager.h"

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace shift {
namespace {
const std::vector<int32_t> kNoBlocks;
}  // namespace

BlockManager::BlockManager(int64_t num_blocks, int64_t block_size)
    : block_size_(block_size),
      ref_counts_(num_blocks, 0),
      hash_of_(num_blocks, 0),
      cached_(num_blocks, false),
      keys_(num_blocks),
      last_use_(num_blocks, 0) {
  SHIFT_CHECK(num_blocks >= 0 && block_size > 0);
  free_.reserve(num_blocks);
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

int64_t BlockManager::BlocksNeeded(uint64_t seq, int64_t num_tokens) const {
  const int64_t have = static_cast<int64_t>(Table(seq).size());
  const int64_t want = (num_tokens + block_size_ - 1) / block_size_;
  return std::max<int64_t>(0, want - have);
}

bool BlockManager::Append(uint64_t seq, int64_t num_tokens) {
  const int64_t needed = BlocksNeeded(seq, num_tokens);
  if (needed > num_free()) return false;
  if (needed == 0) return true;
  std::vector<int32_t>& table = tables_[seq];
  for (int64_t i = 0; i < needed; ++i) {
    int32_t block;
    if (!free_.empty()) {
      block = free_.back();
      free_.pop_back();
    } else {
      // Evict the least recently used cached block.
      block = evictable_.begin()->second;
      evictable_.erase(evictable_.begin());
      Uncache(block);
    }
    ref_counts_[block] = 1;
    table.push_back(block);
  }
  return true;
}

void BlockManager::Uncache(int32_t block) {
  if (!cached_[block]) return;
  cache_.erase(hash_of_[block]);
  cached_[block] = false;
  keys_[block] = CachedKey();
}

std::vector<int32_t> BlockManager::MatchPrefix(absl::Span<const uint64_t> hashes,
                                               absl::Span<const int32_t> tokens,
                                               uint64_t tenant) const {
  std::vector<int32_t> blocks;
  uint64_t parent = 0;
  for (size_t i = 0; i < hashes.size(); ++i) {
    if (static_cast<int64_t>((i + 1)) * block_size_ > static_cast<int64_t>(tokens.size())) break;
    auto it = cache_.find(hashes[i]);
    if (it == cache_.end()) break;
    const CachedKey& key = keys_[it->second];
    const absl::Span<const int32_t> mine = tokens.subspan(i * block_size_, block_size_);
    if (key.tenant != tenant || key.parent != parent ||
        !std::equal(mine.begin(), mine.end(), key.tokens.begin(), key.tokens.end())) {
      break;
    }
    blocks.push_back(it->second);
    parent = key.id;
  }
  return blocks;
}

void BlockManager::AppendCached(uint64_t seq, absl::Span<const int32_t> blocks) {
  SHIFT_CHECK(Table(seq).empty(), "sequence ", seq, " already has blocks");
  if (blocks.empty()) return;
  std::vector<int32_t>& table = tables_[seq];
  for (const int32_t block : blocks) {
    SHIFT_CHECK(cached_[block], "block ", block, " of the prefix is not cached");
    if (ref_counts_[block]++ == 0) evictable_.erase(last_use_[block]);
    table.push_back(block);
  }
}

void BlockManager::Cache(uint64_t seq, int64_t index, uint64_t hash,
                         absl::Span<const int32_t> tokens, uint64_t tenant) {
  const std::vector<int32_t>& table = Table(seq);
  SHIFT_CHECK(index < static_cast<int64_t>(table.size()), "sequence ", seq, " has no block ",
              index);
  SHIFT_CHECK(static_cast<int64_t>(tokens.size()) == block_size_, "a cached block holds ",
              block_size_, " tokens, not ", tokens.size());
  const int32_t block = table[index];
  if (cached_[block] || cache_.contains(hash)) return;
  // A block whose parent is not cached (another block was cached for its
  // hash) gets no key a match could reach.
  const uint64_t parent = index == 0 ? 0 : keys_[table[index - 1]].id;
  if (index > 0 && parent == 0) return;
  cached_[block] = true;
  hash_of_[block] = hash;
  cache_[hash] = block;
  keys_[block] = CachedKey{++next_cache_id_, parent, tenant,
                           std::vector<int32_t>(tokens.begin(), tokens.end())};
}

void BlockManager::DropCache() {
  for (auto& [use, block] : evictable_) free_.push_back(block);
  evictable_.clear();
  for (auto& [hash, block] : cache_) {
    cached_[block] = false;
    keys_[block] = CachedKey();
  }
  cache_.clear();
  // Keep handing out the lowest ids first.
  std::sort(free_.begin(), free_.end(), std::greater<int32_t>());
}

void BlockManager::Free(uint64_t seq) {
  auto it = tables_.find(seq);
  if (it == tables_.end()) return;
  // Returned in reverse so a sequence's first block is handed out first.
  for (auto b = it->second.rbegin(); b != it->second.rend(); ++b) {
    if (--ref_counts_[*b] != 0) continue;
    if (cached_[*b]) {
      last_use_[*b] = ++clock_;
      evictable_[clock_] = *b;
    } else {
      free_.push_back(*b);
    }
  }
  tables_.erase(it);
}

const std::vector<int32_t>& BlockManager::Table(uint64_t seq) const {
  auto it = tables_.find(seq);
  return it == tables_.end() ? kNoBlocks : it->second;
}

absl::Status BlockManager::CheckConsistency() const {
  std::vector<int32_t> held(ref_counts_.size(), 0);
  for (const auto& [seq, table] : tables_) {
    for (int32_t block : table) {
      if (block < 0 || block >= num_blocks()) {
        return absl::InternalError(absl::StrCat("sequence ", seq, " holds block ", block,
                                                " outside 0..", num_blocks() - 1));
      }
      ++held[block];
    }
  }
  std::vector<int32_t> free_count(ref_counts_.size(), 0);
  for (int32_t block : free_) ++free_count[block];
  for (const auto& [use, block] : evictable_) {
    ++free_count[block];
    if (!cached_[block] || last_use_[block] != use) {
      return absl::InternalError(absl::StrCat("evictable block ", block, " is not cached"));
    }
  }
  for (const auto& [hash, block] : cache_) {
    if (!cached_[block] || hash_of_[block] != hash) {
      return absl::InternalError(
          absl::StrCat("the cache maps a hash to block ", block, " which does not carry it"));
    }
  }
  int64_t cached = 0;
  for (int64_t b = 0; b < num_blocks(); ++b) {
    cached += cached_[b] ? 1 : 0;
    if (held[b] != ref_counts_[b]) {
      return absl::InternalError(absl::StrCat("block ", b, " has count ", ref_counts_[b], " but ",
                                              held[b], " tables hold it"));
    }
    if (free_count[b] != (held[b] == 0 ? 1 : 0)) {
      return absl::InternalError(absl::StrCat("block ", b, " is free or evictable ", free_count[b],
                                              " times with count ", held[b]));
    }
    if (held[b] == 0 && cached_[b] && std::count(free_.begin(), free_.end(), b)) {
      return absl::InternalError(absl::StrCat("cached block ", b, " is on the free list"));
    }
  }
  if (cached != static_cast<int64_t>(cache_.size())) {
    return absl::InternalError(
        absl::StrCat(cached, " blocks are marked cached but the cache has ", cache_.size()));
  }
  return absl::OkStatus();
}

}  // namespace shift
