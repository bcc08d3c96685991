#include "router/block_manager.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace shift {
namespace {
const std::vector<int32_t> kNoBlocks;
}  // namespace

BlockManager::BlockManager(int64_t num_blocks, int64_t block_size)
    : block_size_(block_size), ref_counts_(num_blocks, 0) {
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
    const int32_t block = free_.back();
    free_.pop_back();
    ref_counts_[block] = 1;
    table.push_back(block);
  }
  return true;
}

void BlockManager::Fork(uint64_t from, uint64_t to, int64_t num_blocks) {
  const std::vector<int32_t>& source = Table(from);
  SHIFT_CHECK(num_blocks <= static_cast<int64_t>(source.size()));
  SHIFT_CHECK(Table(to).empty());
  std::vector<int32_t> shared(source.begin(), source.begin() + num_blocks);
  for (int32_t block : shared) ++ref_counts_[block];
  if (!shared.empty()) tables_[to] = std::move(shared);
}

void BlockManager::Free(uint64_t seq) {
  auto it = tables_.find(seq);
  if (it == tables_.end()) return;
  // Returned in reverse so a sequence's first block is handed out first.
  for (auto b = it->second.rbegin(); b != it->second.rend(); ++b) {
    if (--ref_counts_[*b] == 0) free_.push_back(*b);
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
  for (int64_t b = 0; b < num_blocks(); ++b) {
    if (held[b] != ref_counts_[b]) {
      return absl::InternalError(absl::StrCat("block ", b, " has count ", ref_counts_[b],
                                              " but ", held[b], " tables hold it"));
    }
    if (free_count[b] != (held[b] == 0 ? 1 : 0)) {
      return absl::InternalError(absl::StrCat("block ", b, " is on the free list ",
                                              free_count[b], " times with count ", held[b]));
    }
  }
  return absl::OkStatus();
}

}  // namespace shift
