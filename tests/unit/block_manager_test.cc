// The router's KV block manager: tables grow by whole blocks, a full cache is
// a false return that changes nothing, forked prefixes are reference-counted,
// and the free list always matches the counts.
#include "core/block_manager.h"

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace shift {
namespace {

using Blocks = std::vector<int32_t>;

TEST(BlockManagerTest, FreshManagerIsAllFree) {
  BlockManager bm(8, 4);
  EXPECT_EQ(bm.num_blocks(), 8);
  EXPECT_EQ(bm.block_size(), 4);
  EXPECT_EQ(bm.num_free(), 8);
  EXPECT_EQ(bm.num_used(), 0);
  EXPECT_TRUE(bm.Table(1).empty());
  for (int32_t b = 0; b < 8; ++b) EXPECT_EQ(bm.RefCount(b), 0);
  EXPECT_TRUE(bm.CheckConsistency().ok());
}

TEST(BlockManagerTest, BlocksNeededRoundsUpToWholeBlocks) {
  BlockManager bm(8, 4);
  EXPECT_EQ(bm.BlocksNeeded(1, 0), 0);
  EXPECT_EQ(bm.BlocksNeeded(1, 1), 1);
  EXPECT_EQ(bm.BlocksNeeded(1, 4), 1);
  EXPECT_EQ(bm.BlocksNeeded(1, 5), 2);
  EXPECT_EQ(bm.BlocksNeeded(1, 32), 8);
  EXPECT_EQ(bm.BlocksNeeded(1, 33), 9);  // more than exist: still the count
  ASSERT_TRUE(bm.Append(1, 6));          // 2 blocks
  EXPECT_EQ(bm.BlocksNeeded(1, 0), 0);
  EXPECT_EQ(bm.BlocksNeeded(1, 8), 0);
  EXPECT_EQ(bm.BlocksNeeded(1, 9), 1);
  EXPECT_EQ(bm.BlocksNeeded(1, 17), 3);
  EXPECT_EQ(bm.BlocksNeeded(2, 9), 3);  // other sequences are unaffected
}

TEST(BlockManagerTest, AppendCoversTokensWithCeilBlocksLowestIdsFirst) {
  BlockManager bm(8, 4);
  ASSERT_TRUE(bm.Append(1, 5));
  EXPECT_EQ(bm.Table(1), (Blocks{0, 1}));
  EXPECT_EQ(bm.num_used(), 2);
  EXPECT_TRUE(bm.CheckConsistency().ok());
  // Already covered: nothing added.
  ASSERT_TRUE(bm.Append(1, 8));
  EXPECT_EQ(bm.Table(1), (Blocks{0, 1}));
  EXPECT_EQ(bm.num_used(), 2);
  ASSERT_TRUE(bm.Append(1, 3));  // shrinking is not a thing: table unchanged
  EXPECT_EQ(bm.Table(1), (Blocks{0, 1}));
  ASSERT_TRUE(bm.Append(1, 9));
  EXPECT_EQ(bm.Table(1), (Blocks{0, 1, 2}));
  ASSERT_TRUE(bm.Append(2, 1));
  EXPECT_EQ(bm.Table(2), (Blocks{3}));
  ASSERT_TRUE(bm.Append(3, 16));
  EXPECT_EQ(bm.Table(3), (Blocks{4, 5, 6, 7}));
  EXPECT_EQ(bm.num_free(), 0);
  EXPECT_EQ(bm.num_used(), 8);
  for (int32_t b = 0; b < 8; ++b) EXPECT_EQ(bm.RefCount(b), 1) << b;
  EXPECT_TRUE(bm.CheckConsistency().ok());
}

TEST(BlockManagerTest, AppendWithoutEnoughBlocksChangesNothing) {
  BlockManager bm(8, 4);
  ASSERT_TRUE(bm.Append(1, 12));  // 3 blocks
  const Blocks before = bm.Table(1);
  EXPECT_FALSE(bm.Append(1, 36));  // needs 6 more, 5 free
  EXPECT_EQ(bm.Table(1), before);
  EXPECT_EQ(bm.num_free(), 5);
  EXPECT_FALSE(bm.Append(2, 24));  // needs 6, 5 free
  EXPECT_TRUE(bm.Table(2).empty());
  EXPECT_EQ(bm.num_free(), 5);
  EXPECT_TRUE(bm.CheckConsistency().ok());
  // Exactly the free count succeeds, then nothing more fits.
  ASSERT_TRUE(bm.Append(2, 20));
  EXPECT_EQ(bm.Table(2).size(), 5u);
  EXPECT_EQ(bm.num_free(), 0);
  EXPECT_FALSE(bm.Append(3, 1));
  EXPECT_FALSE(bm.Append(1, 13));
  EXPECT_TRUE(bm.Table(3).empty());
  EXPECT_EQ(bm.Table(1), before);
  EXPECT_TRUE(bm.CheckConsistency().ok());
}

TEST(BlockManagerTest, FreeReturnsBlocks) {
  BlockManager bm(8, 4);
  ASSERT_TRUE(bm.Append(1, 12));
  ASSERT_TRUE(bm.Append(2, 20));
  EXPECT_EQ(bm.num_free(), 0);
  const Blocks freed = bm.Table(1);
  bm.Free(1);
  EXPECT_TRUE(bm.Table(1).empty());
  EXPECT_EQ(bm.num_free(), 3);
  for (int32_t b : freed) EXPECT_EQ(bm.RefCount(b), 0);
  EXPECT_TRUE(bm.CheckConsistency().ok());
  // The freed blocks are the ones handed out again.
  ASSERT_TRUE(bm.Append(3, 12));
  Blocks got = bm.Table(3);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, freed);
  bm.Free(2);
  bm.Free(3);
  bm.Free(42);  // unknown: nothing happens
  EXPECT_EQ(bm.num_free(), 8);
  EXPECT_EQ(bm.num_used(), 0);
  EXPECT_TRUE(bm.CheckConsistency().ok());
}

// Two holders of cached prefix blocks: counts go up and down with them.
TEST(BlockManagerTest, SharedPrefixBlocksCountEveryHolder) {
  BlockManager bm(8, 4);
  ASSERT_TRUE(bm.Append(1, 10));  // {0, 1, 2}
  const std::vector<uint64_t> hashes = {101, 102};
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  bm.Cache(1, 0, hashes[0], absl::MakeConstSpan(tokens).subspan(0, 4), 0);
  bm.Cache(1, 1, hashes[1], absl::MakeConstSpan(tokens).subspan(4, 4), 0);
  const std::vector<int32_t> found = bm.MatchPrefix(hashes, tokens, 0);
  ASSERT_EQ(found, (Blocks{0, 1}));
  bm.AppendCached(2, found);
  EXPECT_EQ(bm.Table(2), (Blocks{0, 1}));
  EXPECT_EQ(bm.RefCount(0), 2);
  EXPECT_EQ(bm.RefCount(1), 2);
  EXPECT_EQ(bm.RefCount(2), 1);
  EXPECT_EQ(bm.num_used(), 3);
  EXPECT_TRUE(bm.CheckConsistency().ok());
  // The second holder grows with its own blocks.
  EXPECT_EQ(bm.BlocksNeeded(2, 12), 1);
  ASSERT_TRUE(bm.Append(2, 12));
  EXPECT_EQ(bm.Table(2), (Blocks{0, 1, 3}));
  EXPECT_EQ(bm.num_used(), 4);
  // Freeing one holder keeps shared blocks in use.
  bm.Free(1);
  EXPECT_EQ(bm.RefCount(0), 1);
  EXPECT_EQ(bm.RefCount(1), 1);
  EXPECT_EQ(bm.RefCount(2), 0);
  EXPECT_EQ(bm.num_used(), 3);
  EXPECT_TRUE(bm.CheckConsistency().ok());
  // Freeing the other leaves the cached blocks evictable, not used.
  bm.Free(2);
  EXPECT_EQ(bm.RefCount(0), 0);
  EXPECT_EQ(bm.num_used(), 0);
  EXPECT_EQ(bm.num_cached(), 2);
  EXPECT_TRUE(bm.CheckConsistency().ok());
}

// A hit needs the same tokens, tenant and parent, not only the same hash: a
// collision, another tenant's prompt or a block cached after another
// parent never serve KV that belongs to something else.
TEST(BlockManagerTest, HitsAreVerifiedNotHashed) {
  BlockManager bm(8, 2);
  ASSERT_TRUE(bm.Append(1, 4));  // {0, 1}
  const std::vector<uint64_t> hashes = {7, 8};
  const std::vector<int32_t> tokens = {10, 11, 12, 13};
  bm.Cache(1, 0, hashes[0], {10, 11}, /*tenant=*/1);
  bm.Cache(1, 1, hashes[1], {12, 13}, 1);
  EXPECT_EQ(bm.MatchPrefix(hashes, tokens, 1), (Blocks{0, 1}));
  // Same hashes, other tokens (a collision): nothing, or only what agrees.
  EXPECT_TRUE(bm.MatchPrefix(hashes, {10, 99, 12, 13}, 1).empty());
  EXPECT_EQ(bm.MatchPrefix(hashes, {10, 11, 12, 99}, 1), (Blocks{0}));
  // Another tenant, same everything else: nothing.
  EXPECT_TRUE(bm.MatchPrefix(hashes, tokens, 2).empty());
  // Fewer tokens than the hashes cover: only the full blocks they hold.
  EXPECT_EQ(bm.MatchPrefix(hashes, {10, 11, 12}, 1), (Blocks{0}));
  // A sequence that computed the same first block itself (its copy is not
  // cached: hash 7 is taken) caches its second block under no parent a match
  // can reach.
  ASSERT_TRUE(bm.Append(5, 4));  // {2, 3}
  bm.Cache(5, 0, hashes[0], {10, 11}, 1);
  bm.Cache(5, 1, 9, {20, 21}, 1);
  EXPECT_EQ(bm.MatchPrefix({7, 9}, {10, 11, 20, 21}, 1), (Blocks{0}));
  bm.Free(1);
  bm.Free(5);
  EXPECT_EQ(bm.num_cached(), 2);
  EXPECT_TRUE(bm.CheckConsistency().ok()) << bm.CheckConsistency();
}

// Random appends, prefix shares and frees against a model of the tables: counts,
// tables and the free count agree and the manager stays consistent.
TEST(BlockManagerTest, RandomOperationsMatchModel) {
  constexpr int64_t kBlocks = 32, kBlockSize = 4;
  BlockManager bm(kBlocks, kBlockSize);
  std::map<uint64_t, Blocks> model;
  std::mt19937_64 rng(1234);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  for (int iter = 0; iter < 5000; ++iter) {
    const uint64_t seq = uniform(0, 11);
    const int op = uniform(0, 9);
    if (op < 6) {
      const int64_t tokens = uniform(0, 48);
      const int64_t have = static_cast<int64_t>(model[seq].size());
      const int64_t want = std::max<int64_t>(have, (tokens + kBlockSize - 1) / kBlockSize);
      const int64_t needed = bm.BlocksNeeded(seq, tokens);
      ASSERT_EQ(needed, want - have);
      const int64_t free_before = bm.num_free();
      const bool ok = bm.Append(seq, tokens);
      ASSERT_EQ(ok, needed <= free_before);
      if (ok) {
        ASSERT_EQ(bm.num_free(), free_before - needed);
        const Blocks& table = bm.Table(seq);
        ASSERT_EQ(static_cast<int64_t>(table.size()), want);
        ASSERT_TRUE(std::equal(model[seq].begin(), model[seq].end(), table.begin()));
        model[seq] = table;
      } else {
        ASSERT_EQ(bm.num_free(), free_before);
        ASSERT_EQ(bm.Table(seq), model[seq]);
      }
    } else if (op < 8) {
      bm.Free(seq);
      model.erase(seq);
      ASSERT_TRUE(bm.Table(seq).empty());
    } else {
      // Shares seq's first n blocks with `to` through the prefix cache.
      const uint64_t to = uniform(0, 11);
      if (to == seq || !model[to].empty() || model[seq].empty()) continue;
      const int64_t n = uniform(1, static_cast<int64_t>(model[seq].size()));
      std::vector<uint64_t> hashes;
      std::vector<int32_t> tokens;
      for (int64_t i = 0; i < n; ++i) {
        hashes.push_back(1000 + static_cast<uint64_t>(model[seq][i]));
        const std::vector<int32_t> mine(kBlockSize, model[seq][i]);
        tokens.insert(tokens.end(), mine.begin(), mine.end());
        bm.Cache(seq, i, hashes.back(), mine, 0);
      }
      const std::vector<int32_t> found = bm.MatchPrefix(hashes, tokens, 0);
      ASSERT_EQ(static_cast<int64_t>(found.size()), n);
      bm.AppendCached(to, found);
      model[to] = Blocks(model[seq].begin(), model[seq].begin() + n);
      ASSERT_EQ(bm.Table(to), model[to]);
    }
    ASSERT_TRUE(bm.CheckConsistency().ok()) << bm.CheckConsistency();
    std::map<int32_t, int32_t> counts;
    for (const auto& [s, table] : model) {
      for (int32_t b : table) ++counts[b];
    }
    ASSERT_EQ(bm.num_used(), static_cast<int64_t>(counts.size()));
    for (int32_t b = 0; b < kBlocks; ++b) {
      const auto it = counts.find(b);
      ASSERT_EQ(bm.RefCount(b), it == counts.end() ? 0 : it->second) << "block " << b;
    }
  }
  for (uint64_t s = 0; s < 12; ++s) bm.Free(s);
  EXPECT_EQ(bm.num_used(), 0);
  EXPECT_TRUE(bm.CheckConsistency().ok());
}

}  // namespace
}  // namespace shift
