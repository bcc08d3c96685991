// Decode steps padded to batch buckets (worker/model_executor.h,
// DecodeGraphs): on the CPU, where a row's result does not depend on its
// batch, the padded path must give exactly the bits of the plain one, for
// batches that fill a bucket and batches that do not, across table widths
// (contexts past 64 blocks), with sampling of every kind, and the padding
// rows' scratch block never shows: one block fewer for the scheduler, and
// the real sequences' cache untouched. The same holds when the decodes are
// recorded as graphs and replayed, on a test backend that records them as a
// GPU does. The buckets themselves are checked too. GPU replays against the
// same padded steps run eagerly: tests/gpu/cuda_engine_test.cc.
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/recording_backend.h"
#include "tests/testing/temp_dir.h"
#include "tools/mkmodel.h"
#include "worker/engine.h"
#include "worker/model_executor.h"

namespace shift {
namespace {

TEST(DecodeBucketsTest, CoverEveryBatchWithAQuarterAtMostOfPadding) {
  EXPECT_EQ(DecodeBuckets(1), (std::vector<int64_t>{1}));
  EXPECT_EQ(DecodeBuckets(8), (std::vector<int64_t>{1, 2, 4, 8}));
  EXPECT_EQ(DecodeBuckets(40),
            (std::vector<int64_t>{1, 2, 4, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40}));
  const std::vector<int64_t> b = DecodeBuckets(256);
  EXPECT_EQ(b.back(), 256);
  EXPECT_EQ(b[b.size() - 2], 224);
  for (int64_t n = 1; n <= 256; ++n) {
    const int64_t bucket = *std::lower_bound(b.begin(), b.end(), n);
    EXPECT_LE(bucket - n, n < 8 ? n : n / 4) << n;
  }
  EXPECT_EQ(DecodeBuckets(100).back(), 100);
}

class DecodeGraphsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MkModelOptions options;
    options.config = *PresetConfig("tiny");
    options.config.num_key_value_heads = 2;
    options.config.max_position_embeddings = 4096;
    options.seed = 9;
    ASSERT_TRUE(WriteRandomModel(tmp_.Sub("model"), options).ok());
    auto files = OpenModelFiles(tmp_.Sub("model"));
    ASSERT_TRUE(files.ok()) << files.status();
    files_ = std::make_unique<ModelFiles>(*std::move(files));
  }

  enum class Kind { kPlain, kPadded, kRecorded };
  // kRecorded: on a backend that records graphs as a GPU does
  // (tests/testing/recording_backend.h), so decodes are recorded and
  // replayed.
  std::unique_ptr<Engine> Make(Kind kind) {
    EngineOptions options;
    options.kv_cache_bytes = 8 << 20;
    options.block_size = 4;
    options.pad_decodes = kind == Kind::kPadded;
    options.max_graph_batch = 6;
    auto engine = kind == Kind::kRecorded
                      ? Engine::Create(*files_, options, nullptr,
                                       std::make_unique<testing::RecordingBackend>(true))
                      : Engine::Create(*files_, options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? *std::move(engine) : nullptr;
  }
  void ExpectPlainBits(Kind kind);

  testing::TestTempDir tmp_;
  std::unique_ptr<ModelFiles> files_;
};

void DecodeGraphsTest::ExpectPlainBits(Kind kind) {
  auto plain = Make(Kind::kPlain), padded = Make(kind);
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(padded, nullptr);
  EXPECT_EQ(padded->num_blocks(), plain->num_blocks() - 1);  // the scratch block
  const int64_t bs = 4;
  std::mt19937 rng(3);
  const int32_t vocab = static_cast<int32_t>(files_->config.vocab_size);
  // Seven sequences; sequence i owns blocks [i·80, (i+1)·80): 320 positions,
  // past the 64-block table width.
  struct Seq {
    std::vector<int32_t> table, next;
    int64_t position = 0;
  };
  std::vector<Seq> seqs(7);
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (int32_t b = 0; b < 80; ++b) seqs[i].table.push_back(static_cast<int32_t>(i * 80 + b));
  }
  auto step = [&](const std::vector<size_t>& which, int64_t tokens) {
    std::vector<SequenceStep> batch;
    for (size_t i : which) {
      SequenceStep s;
      s.seq_id = i + 1;
      s.start_position = seqs[i].position;
      if (seqs[i].next.empty()) {
        for (int64_t t = 0; t < tokens; ++t) s.token_ids.push_back(rng() % vocab);
      } else {
        s.token_ids = seqs[i].next;
      }
      const int64_t end = s.start_position + static_cast<int64_t>(s.token_ids.size());
      s.block_table.assign(seqs[i].table.begin(), seqs[i].table.begin() + (end + bs - 1) / bs);
      s.sample = true;
      s.return_logits = true;
      // Every kind of sampling: greedy, seeded temperature, top-k with
      // alternatives.
      if (i % 3 == 1) s.sampling = {0.8f, 0.9f, 0, i};
      if (i % 3 == 2) {
        s.sampling = {1.0f, 1.0f, 5, i};
        s.top_logprobs = 3;
      }
      batch.push_back(s);
    }
    auto a = plain->Step(batch), b = padded->Step(batch);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    ASSERT_EQ(a->size(), b->size());
    for (size_t k = 0; k < a->size(); ++k) {
      const EngineSample &x = (*a)[k], &y = (*b)[k];
      EXPECT_EQ(x.token_id, y.token_id);
      EXPECT_EQ(x.logprob, y.logprob);
      EXPECT_EQ(x.top, y.top);
      ASSERT_EQ(x.logits, y.logits) << "sequence " << x.seq_id << " at " << batch[k].start_position;
      seqs[which[k]].position += static_cast<int64_t>(batch[k].token_ids.size());
      seqs[which[k]].next = {x.token_id};
    }
  };
  // Prompts (not decodes: no padding), then decodes of 1, 3, 5 and 7
  // sequences (7 is past the largest bucket: it runs as usual).
  step({0, 1, 2, 3, 4, 5, 6}, 40);
  for (int round = 0; round < 3; ++round) {
    step({0}, 1);
    step({1, 2, 3}, 1);
    step({0, 2, 4, 5, 6}, 1);
    step({0, 1, 2, 3, 4, 5, 6}, 1);
  }
  EXPECT_GT(padded->num_decode_graphs(), 0);
  EXPECT_EQ(plain->num_decode_graphs(), 0);
  if (kind == Kind::kRecorded) {
    // Replayed, not fallen back to running eagerly.
    EXPECT_GT(dynamic_cast<const testing::RecordingBackend&>(padded->backend()).replayed(), 0);
  }
  // Sequence 6 grows past 64 blocks (256 positions): a wider table.
  const int64_t graphs = padded->num_decode_graphs();
  seqs[6].next.clear();
  step({6}, 240);
  for (int i = 0; i < 3; ++i) step({6}, 1);
  EXPECT_GT(padded->num_decode_graphs(), graphs);
}

TEST_F(DecodeGraphsTest, PaddedDecodesGiveThePlainBits) { ExpectPlainBits(Kind::kPadded); }

// Recorded once per bucket and width, replayed after: still the plain bits.
TEST_F(DecodeGraphsTest, RecordedDecodesGiveThePlainBits) { ExpectPlainBits(Kind::kRecorded); }

}  // namespace
}  // namespace shift
