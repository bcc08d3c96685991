// Model fingerprints: the same model gives the same digest on any number of
// threads and however it is split into files; other weights with the same
// config give another one; the hash sees every byte.
#include "common/fingerprint.h"

#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"
#include "tools/mkmodel.h"

namespace shift {
namespace {

TEST(HashBytesTest, EveryByteAndItsPositionCount) {
  std::vector<unsigned char> data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<unsigned char>(i * 7);
  const uint64_t base = HashBytes(data.data(), data.size(), 0);
  for (size_t i : {size_t{0}, size_t{31}, size_t{32}, size_t{990}, size_t{999}}) {
    data[i] ^= 1;
    EXPECT_NE(HashBytes(data.data(), data.size(), 0), base) << "byte " << i;
    data[i] ^= 1;
  }
  EXPECT_NE(HashBytes(data.data(), data.size() - 1, 0), base);
  EXPECT_NE(HashBytes(data.data(), data.size(), 1), base);
  EXPECT_EQ(HashBytes(data.data(), data.size(), 0), base);
}

TEST(FingerprintTest, SameModelSameDigestOtherWeightsAnother) {
  testing::TestTempDir dir;
  MkModelOptions a;
  auto config = PresetConfig("tiny");
  ASSERT_TRUE(config.ok());
  a.config = *config;
  a.seed = 1;
  ASSERT_TRUE(WriteRandomModel(dir.Sub("a"), a).ok());
  MkModelOptions b = a;
  b.seed = 2;
  ASSERT_TRUE(WriteRandomModel(dir.Sub("b"), b).ok());
  MkModelOptions sharded = a;
  sharded.max_shard_bytes = 256 << 10;
  auto written = WriteRandomModel(dir.Sub("sharded"), sharded);
  ASSERT_TRUE(written.ok());
  ASSERT_GT(written->shards, 1);
  auto fa = ModelFingerprint(dir.Sub("a"), 1);
  auto fa8 = ModelFingerprint(dir.Sub("a"), 8);
  auto fs = ModelFingerprint(dir.Sub("sharded"), 4);
  auto fb = ModelFingerprint(dir.Sub("b"), 3);
  ASSERT_TRUE(fa.ok() && fa8.ok() && fs.ok() && fb.ok()) << fa.status() << fb.status();
  EXPECT_EQ(*fa, *fa8);
  EXPECT_EQ(fa->substr(17), fs->substr(17));  // the weights, however split
  ASSERT_EQ(fa->size(), 33u);
  // Same config.json, other weights.
  EXPECT_EQ(fa->substr(0, 16), fb->substr(0, 16));
  EXPECT_NE(fa->substr(17), fb->substr(17));
}

}  // namespace
}  // namespace shift
