// The weights digest: the same model gives the same digest on any number of
// threads, however it is split into files and whichever reads cover it;
// another config or other weights give another; two reports that differ
// name the tensor; reads that leave a piece unread are found; the hash
// sees every byte.
#include "common/fingerprint.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "common/file_util.h"
#include "gmock/gmock.h"
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

std::string WriteModel(testing::TestTempDir& dir, const std::string& name, uint64_t seed,
                       int64_t max_shard_bytes = 0) {
  MkModelOptions options;
  auto config = PresetConfig("tiny");
  EXPECT_TRUE(config.ok());
  options.config = *config;
  options.seed = seed;
  if (max_shard_bytes > 0) options.max_shard_bytes = max_shard_bytes;
  auto written = WriteRandomModel(dir.Sub(name), options);
  EXPECT_TRUE(written.ok()) << written.status();
  if (max_shard_bytes > 0) {
    EXPECT_GT(written->shards, 1);
  }
  return dir.Sub(name);
}

TEST(WeightsDigestTest, SameModelSameDigestOtherWeightsOrConfigAnother) {
  testing::TestTempDir dir;
  const std::string a = WriteModel(dir, "a", 1);
  const std::string sharded = WriteModel(dir, "sharded", 1, 256 << 10);
  const std::string b = WriteModel(dir, "b", 2);
  auto da = ModelWeightsDigest(a, 1);
  auto da8 = ModelWeightsDigest(a, 8);
  auto ds = ModelWeightsDigest(sharded, 4);
  auto db = ModelWeightsDigest(b, 3);
  ASSERT_TRUE(da.ok() && da8.ok() && ds.ok() && db.ok()) << da.status() << db.status();
  EXPECT_EQ(*da, *da8);
  EXPECT_EQ(*da, *ds);  // however the files are split
  EXPECT_NE(*da, *db);  // same config, other weights
  // The same weights under a config.json that differs by a byte.
  auto text = ReadFileToString(a + "/config.json");
  ASSERT_TRUE(text.ok());
  std::ofstream(a + "/config.json", std::ios::trunc) << *text << " ";
  auto spaced = ModelWeightsDigest(a, 1);
  ASSERT_TRUE(spaced.ok());
  EXPECT_NE(*spaced, *da);
}

TEST(WeightsDigestTest, HexRoundTripsAndOnlySixteenLowerCaseDigitsParse) {
  for (uint64_t v : {uint64_t{0}, uint64_t{0x0123456789abcdef}, ~uint64_t{0}}) {
    auto back = ParseDigest(DigestHex(v));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, v);
  }
  EXPECT_EQ(DigestHex(0x1f), "000000000000001f");
  for (const char* bad : {"", "1f", "0123456789ABCDEF", "0123456789abcdeg", "0123456789abcdef0",
                          " 123456789abcdef"}) {
    EXPECT_FALSE(ParseDigest(bad).ok()) << bad;
  }
}

// Two readers, each of half of every tensor's bytes (as two TP ranks read
// their rows), in pieces of 64 bytes.
struct Halves {
  std::unique_ptr<Checkpoint> checkpoint;
  WeightsReport whole, first, second;
};
Halves ReadInHalves(const std::string& dir, uint64_t piece) {
  Halves h;
  auto checkpoint = Checkpoint::Open(dir);
  EXPECT_TRUE(checkpoint.ok());
  h.checkpoint = *std::move(checkpoint);
  auto text = ReadFileToString(dir + "/config.json");
  EXPECT_TRUE(text.ok());
  const uint64_t config = ConfigDigest(*text);
  WeightsDigester whole(config, *h.checkpoint, piece, 2), first(config, *h.checkpoint, piece, 1),
      second(config, *h.checkpoint, piece, 3);
  for (const std::string& name : h.checkpoint->Names()) {
    const TensorView& t = *h.checkpoint->Find(name);
    whole.OnRead(t, 0, t.nbytes);
    first.OnRead(t, 0, t.nbytes / 2);
    second.OnRead(t, t.nbytes / 2, t.nbytes);
  }
  h.whole = whole.Report();
  h.first = first.Report();
  h.second = second.Report();
  return h;
}

TEST(WeightsDigestTest, ReadsThatCoverTheModelGiveTheDigestOfOneWholeRead) {
  testing::TestTempDir dir;
  const std::string a = WriteModel(dir, "a", 1);
  Halves h = ReadInHalves(a, 64);
  // A half reads only the pieces its bytes touch.
  const std::string embed = "model.embed_tokens.weight";
  const uint64_t pieces = (h.whole.tensors.at(embed).nbytes + 63) / 64;
  EXPECT_EQ(h.whole.tensors.at(embed).pieces.size(), pieces);
  EXPECT_LE(h.first.tensors.at(embed).pieces.size(), pieces / 2 + 1);
  EXPECT_EQ(WeightsDifference(h.first, h.second, "rank 1"), "");
  EXPECT_EQ(WeightsDifference(h.first, h.whole, "rank 1"), "");
  auto whole = CombinedWeightsDigest({&h.whole});
  auto halves = CombinedWeightsDigest({&h.second, &h.first});
  ASSERT_TRUE(whole.ok() && halves.ok()) << halves.status();
  EXPECT_EQ(*whole, *halves);
  // One half alone leaves pieces unread, and says of which tensor.
  auto alone = CombinedWeightsDigest({&h.first});
  ASSERT_FALSE(alone.ok());
  EXPECT_THAT(alone.status().message(), ::testing::HasSubstr("the ranks' shards do not cover"));
  // The piece size is part of the digest's definition.
  Halves coarse = ReadInHalves(a, 4096);
  auto coarse_whole = CombinedWeightsDigest({&coarse.whole});
  ASSERT_TRUE(coarse_whole.ok());
  EXPECT_NE(*coarse_whole, *whole);
  EXPECT_THAT(WeightsDifference(coarse.whole, h.whole, "rank 1"),
              ::testing::HasSubstr("4096-byte pieces, rank 1's into 64"));
  // The model's digest (what shift-inspect prints) is that of a whole read:
  // the tiny model has no tensor its ranks leave unread.
  auto model = ModelWeightsDigest(a, 1, 64);
  ASSERT_TRUE(model.ok());
  EXPECT_EQ(*model, *whole);
}

TEST(WeightsDigestTest, ADifferentByteIsNamedByTensorWhereReadsOverlap) {
  testing::TestTempDir dir;
  const std::string a = WriteModel(dir, "a", 1);
  const std::string b = WriteModel(dir, "b", 1);
  // Flip one byte of one tensor's data in b's file.
  const std::string target = "model.layers.1.mlp.up_proj.weight";
  size_t offset = 0;
  {
    auto checkpoint = Checkpoint::Open(b);
    ASSERT_TRUE(checkpoint.ok());
    const TensorView* t = (*checkpoint)->Find(target);
    ASSERT_NE(t, nullptr);
    offset = static_cast<size_t>(t->data - (*checkpoint)->files()[0]->data()) + t->nbytes - 3;
  }
  {
    std::fstream f(b + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(offset));
    char c = 0;
    f.read(&c, 1);
    c ^= 0x10;
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(&c, 1);
  }
  Halves ha = ReadInHalves(a, 64), hb = ReadInHalves(b, 64);
  const std::string why = WeightsDifference(hb.whole, ha.whole, "group 0 rank 0");
  EXPECT_THAT(why, ::testing::HasSubstr("tensor " + target + " differs from group 0 rank 0's"));
  // The changed byte is in the second half: the first halves agree...
  EXPECT_EQ(WeightsDifference(hb.first, ha.whole, "group 0 rank 0"), "");
  // ...the second halves do not, and the two readers of b make another model.
  EXPECT_THAT(WeightsDifference(hb.second, ha.second, "x"), ::testing::HasSubstr(target));
  auto da = CombinedWeightsDigest({&ha.first, &ha.second});
  auto db = CombinedWeightsDigest({&hb.first, &hb.second});
  ASSERT_TRUE(da.ok() && db.ok());
  EXPECT_NE(*da, *db);
  auto ma = ModelWeightsDigest(a), mb = ModelWeightsDigest(b);
  ASSERT_TRUE(ma.ok() && mb.ok());
  EXPECT_NE(*ma, *mb);
}

}  // namespace
}  // namespace shift
