// Every backend operation on each backend this machine has, against the CPU
// backend with the same inputs (in the manner of llama.cpp's
// test-backend-ops): odd shapes, GQA ratios 1/2/4/8, scattered block tables,
// prefill chunks with and without cached context mixed with decodes. Results
// are compared by normalised mean squared error against a per-operation
// tolerance; the CPU backend against itself must agree exactly. Filter by
// operation with --gtest_filter (e.g. '*Attention*'), by device through the
// parameter (e.g. '*/cuda').
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/backends.h"
#include "kernels/cpu/cpu_backend.h"

namespace shift::kernels {
namespace {

// Normalised mean squared error: Σ(a − b)² / Σb².
double Nmse(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    ref += static_cast<double>(b[i]) * b[i];
  }
  return ref > 0 ? err / ref : err;
}

// The largest NMSE a backend other than the CPU may show, per operation, for
// bf16 activations. Inputs are bf16 values, the same on both backends, so
// what differs is the tested backend's arithmetic and the rounding of its
// bf16 results: one rounding is at most 2^-9 relative (NMSE 4e-6); RMSNorm
// with the add rounds the residual too; GEMM and attention round their
// bf16 operands (P in attention) inside. The CPU backend itself must show 0.
double Tolerance(Op op) {
  static const std::map<Op, double> table = {
      {Op::kEmbedding, 1e-5}, {Op::kRmsNorm, 3e-5},      {Op::kGemm, 1e-4},
      {Op::kRope, 1e-5},      {Op::kWriteKv, 1e-5},      {Op::kAttention, 1e-4},
      {Op::kSiluMul, 1e-5},   {Op::kCopy, 1e-5},         {Op::kGatherRows, 1e-5},
      {Op::kSample, 1e-6},    {Op::kCopyFromHost, 1e-5}, {Op::kCopyToHost, 1e-5}};
  return table.at(op);
}

// Normal values that bf16 holds exactly, so both backends start from the
// same numbers.
std::vector<float> Random(std::mt19937& rng, int64_t n, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& f : v) f = Bf16ToF32(F32ToBf16(dist(rng)));
  return v;
}

// The same data on the backend under test (index 1) and on the reference
// CPU backend (index 0).
struct Twin {
  Buffer on[2];
};

class BackendOpsTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto device = ParseDevice(GetParam());
    ASSERT_TRUE(device.ok()) << device.status();
    auto backend = CreateBackend(*device, BackendOptions{2});
    ASSERT_TRUE(backend.ok()) << backend.status();
    backends_[0] = std::make_unique<cpu::CpuBackend>(1);
    backends_[1] = *std::move(backend);
  }

  Backend& on(int i) { return *backends_[i]; }

  Twin Upload(const std::vector<float>& host, int64_t rows, int64_t cols) {
    Twin t;
    for (int i : {0, 1}) {
      auto buffer = on(i).Allocate(on(i).activation_dtype(), rows, cols);
      EXPECT_TRUE(buffer.ok()) << buffer.status();
      t.on[i] = *std::move(buffer);
      EXPECT_TRUE(on(i).CopyFromHost(host.data(), t.on[i]).ok());
    }
    return t;
  }
  Twin Zeros(int64_t rows, int64_t cols, DType dtype) {
    Twin t;
    for (int i : {0, 1}) {
      auto buffer = on(i).Allocate(i == 0 ? DType::kF32 : dtype, rows, cols, /*zero=*/true);
      EXPECT_TRUE(buffer.ok()) << buffer.status();
      t.on[i] = *std::move(buffer);
    }
    return t;
  }
  Twin Zeros(int64_t rows, int64_t cols) { return Zeros(rows, cols, on(1).activation_dtype()); }

  std::vector<float> Download(int i, const Tensor& t) {
    std::vector<float> host(t.size());
    EXPECT_TRUE(on(i).CopyToHost(t, host.data()).ok());
    return host;
  }

  // Compares what the reference and the tested backend hold.
  void ExpectClose(const Tensor& reference, const Tensor& tested, Op op, const std::string& what) {
    const std::vector<float> want = Download(0, reference), got = Download(1, tested);
    ASSERT_EQ(want.size(), got.size()) << what;
    // A case whose reference is all zeros would compare nothing.
    ASSERT_GT(std::inner_product(want.begin(), want.end(), want.begin(), 0.0), 0.0) << what;
    const double nmse = Nmse(got, want);
    if (on(1).device() == Device::kCpu) {
      EXPECT_EQ(nmse, 0.0) << OpName(op) << " " << what;
    } else {
      EXPECT_LE(nmse, Tolerance(op)) << OpName(op) << " " << what;
    }
  }
  void ExpectClose(const Twin& t, Op op, const std::string& what) {
    ExpectClose(t.on[0], t.on[1], op, what);
  }
  // The same with a bound of its own for backends other than the CPU.
  void ExpectWithin(const Twin& t, double bound, const std::string& what) {
    const std::vector<float> want = Download(0, t.on[0]), got = Download(1, t.on[1]);
    ASSERT_EQ(want.size(), got.size()) << what;
    ASSERT_GT(std::inner_product(want.begin(), want.end(), want.begin(), 0.0), 0.0) << what;
    const double nmse = Nmse(got, want);
    EXPECT_LE(nmse, on(1).device() == Device::kCpu ? 0.0 : bound) << what;
  }

  // The same fp32 logits (one row per request) sampled by both backends.
  void SampleOnBoth(const std::vector<float>& logits, int64_t vocab,
                    const std::vector<SampleRequest>& requests,
                    std::vector<SampleResult>* results) {
    Twin t = Zeros(static_cast<int64_t>(requests.size()), vocab, DType::kF32);
    for (int i : {0, 1}) {
      ASSERT_TRUE(on(i).CopyFromHost(logits.data(), t.on[i]).ok());
      auto sampled = on(i).Sample(t.on[i], requests);
      ASSERT_TRUE(sampled.ok()) << sampled.status();
      results[i] = *std::move(sampled);
    }
  }

  // y (+ bias) = x · w over `range` for random x on both backends; with
  // `strided`, y is a column window of a wider buffer.
  Twin GemmOnBoth(std::unique_ptr<Weight> (&w)[2], const GemmRange& range, int64_t m,
                  bool with_bias, bool strided) {
    const int64_t n = w[0]->n(), k = w[0]->k();
    const int64_t cols = (range.n_end < 0 ? n : range.n_end) - range.n_begin;
    const int64_t kr = k / kReductionGroups * range.group_count, at = strided ? 1 : 0;
    Twin x = Upload(Random(rng_, m * kr), m, kr);
    Twin bias = Upload(Random(rng_, cols), 1, cols);
    Twin y = Zeros(m, cols + (strided ? 3 : 0));
    for (int i : {0, 1}) {
      EXPECT_TRUE(on(i)
                      .Gemm(x.on[i], *w[i], range, with_bias ? &bias.on[i].tensor() : nullptr,
                            y.on[i].Cols(at, at + cols))
                      .ok());
    }
    return y;
  }
  static std::string GemmCase(int64_t m, int64_t n, int64_t k, const GemmRange& range,
                              bool with_bias) {
    return absl::StrCat(m, " x ", n, " x ", k, " columns [", range.n_begin, ", ", range.n_end,
                        ") groups ", range.group_begin, "+", range.group_count,
                        with_bias ? " + bias" : "");
  }

  std::unique_ptr<StepData> Prepare(int i, const StepLayout& layout) {
    auto step = on(i).PrepareStep(layout);
    EXPECT_TRUE(step.ok()) << step.status();
    return *std::move(step);
  }

  std::unique_ptr<Backend> backends_[2];
  std::mt19937 rng_{11};
};

// A step of sequences given as (start position, new tokens), with block
// tables drawn at random from `num_blocks` (scattered, never shared).
StepLayout MakeLayout(const std::vector<std::pair<int64_t, int64_t>>& seqs, int64_t block_size,
                      int64_t num_blocks, int32_t vocab, std::mt19937& rng) {
  std::vector<int32_t> free(num_blocks);
  std::iota(free.begin(), free.end(), 0);
  std::shuffle(free.begin(), free.end(), rng);
  StepLayout layout;
  for (const auto& [start, count] : seqs) {
    StepLayout::Sequence s;
    s.first_token = layout.num_tokens();
    s.num_tokens = count;
    s.start_position = start;
    for (int64_t b = 0; b * block_size < start + count; ++b) {
      s.block_table.push_back(free.back());
      free.pop_back();
    }
    for (int64_t i = 0; i < count; ++i) {
      layout.token_ids.push_back(static_cast<int32_t>(rng() % vocab));
      layout.positions.push_back(start + i);
      layout.sequence_of_token.push_back(static_cast<int32_t>(layout.sequences.size()));
    }
    layout.sequences.push_back(std::move(s));
  }
  return layout;
}

TEST_P(BackendOpsTest, Embedding) {
  const int64_t vocab = 37, dim = 24;
  const StepLayout layout = MakeLayout({{0, 5}, {9, 1}, {3, 7}}, 4, 16, vocab, rng_);
  Twin table = Upload(Random(rng_, vocab * dim), vocab, dim);
  for (int64_t first : {0, 5}) {
    Twin out = Zeros(layout.num_tokens() - first, dim);
    for (int i : {0, 1}) {
      ASSERT_TRUE(on(i).Embedding(table.on[i], *Prepare(i, layout), first, out.on[i]).ok());
    }
    ExpectClose(out, Op::kEmbedding, absl::StrCat("from token ", first));
  }
}

TEST_P(BackendOpsTest, RmsNormWithAndWithoutTheResidualAdd) {
  for (int64_t rows : {1, 3, 17}) {
    for (int64_t dim : {8, 40, 264}) {
      for (bool add : {false, true}) {
        Twin residual = Upload(Random(rng_, rows * dim, 3.0f), rows, dim);
        Twin delta = Upload(Random(rng_, rows * dim), rows, dim);
        Twin weight = Upload(Random(rng_, dim), 1, dim);
        Twin out = Zeros(rows, dim);
        for (int i : {0, 1}) {
          ASSERT_TRUE(on(i)
                          .RmsNorm(residual.on[i], add ? &delta.on[i].tensor() : nullptr,
                                   weight.on[i], 1e-5f, out.on[i])
                          .ok());
        }
        const std::string what = absl::StrCat(rows, " x ", dim, add ? " with add" : "");
        ExpectClose(out, Op::kRmsNorm, what);
        ExpectClose(residual, Op::kRmsNorm, what + " (residual)");
      }
    }
  }
}

TEST_P(BackendOpsTest, GemmOnColumnAndReductionRangesWithBias) {
  for (int64_t m : {1, 3, 5, 17}) {
    for (int64_t n : {1, 15, 16, 33, 100}) {
      for (int64_t k : {8, 24, 136}) {
        const std::vector<float> w_host = Random(rng_, n * k);
        std::unique_ptr<Weight> w[2];
        for (int i : {0, 1}) {
          auto uploaded = on(i).UploadWeight(w_host.data(), WeightPart::Whole(n, k));
          ASSERT_TRUE(uploaded.ok()) << uploaded.status();
          w[i] = *std::move(uploaded);
        }
        std::vector<GemmRange> ranges = {GemmRange{}, GemmRange{0, -1, 0, 4},
                                         GemmRange{0, -1, 4, 2}, GemmRange{0, -1, 7, 1}};
        if (n >= 48) ranges.push_back(GemmRange{16, 48});
        if (n > 32) ranges.push_back(GemmRange{32, n, 2, 2});
        for (const GemmRange& range : ranges) {
          for (bool with_bias : {false, true}) {
            // A strided output: y is a column window of a wider buffer.
            const Twin y = GemmOnBoth(w, range, m, with_bias, /*strided=*/true);
            ExpectClose(y, Op::kGemm, GemmCase(m, n, k, range, with_bias));
          }
        }
      }
    }
  }
}

// The rows [row_begin, row_end) and groups [g, g + c) of W [n][k], row-major.
template <typename T>
std::vector<T> PartOf(const std::vector<T>& w, int64_t k, const WeightPart& part) {
  std::vector<T> out;
  const int64_t len = k / kReductionGroups;
  for (int64_t r = part.row_begin; r < part.row_end; ++r) {
    const T* row = w.data() + r * k + part.group_begin * len;
    out.insert(out.end(), row, row + part.cols());
  }
  return out;
}

// A TP shard holds rows and reduction groups of a weight (the hybrid
// layout); GEMM ranges still name the whole weight's columns and groups.
// On the tested backend the shard's GEMMs match the CPU's on the whole
// weight, and on the CPU the shard gives the whole weight's bits.
TEST_P(BackendOpsTest, GemmOnAShardOfTheWeightNamesTheWholeWeightsRanges) {
  const int64_t n = 96, k = 64, m = 5;
  const std::vector<float> w_host = Random(rng_, n * k);
  struct Case {
    WeightPart part;
    GemmRange range;
  };
  const std::vector<Case> cases = {
      {{n, k, 32, 64, 0, 8}, {32, 64}},      // column-parallel shard 1 of 3 panels' worth
      {{n, k, 48, 96, 0, 8}, {64, 96}},      // a view inside a shard (TP over more ranks)
      {{n, k, 0, n, 4, 4}, {0, -1, 4, 4}},   // row-parallel shard 1 of 2
      {{n, k, 0, n, 4, 4}, {0, -1, 6, 2}},   // its second quarter (TP over 4)
      {{n, k, 0, n, 2, 2}, {16, 48, 3, 1}},  // a subtree and columns inside both
  };
  for (const Case& c : cases) {
    auto whole = on(0).UploadWeight(w_host.data(), WeightPart::Whole(n, k));
    const std::vector<float> part_host = PartOf(w_host, k, c.part);
    auto part = on(1).UploadWeight(part_host.data(), c.part);
    ASSERT_TRUE(whole.ok() && part.ok()) << part.status();
    EXPECT_EQ((*part)->n(), c.part.rows());
    EXPECT_EQ((*part)->k(), c.part.cols());
    const int64_t cols = (c.range.n_end < 0 ? n : c.range.n_end) - c.range.n_begin;
    const int64_t kr = k / kReductionGroups * c.range.group_count;
    Twin x = Upload(Random(rng_, m * kr), m, kr);
    Twin y = Zeros(m, cols);
    ASSERT_TRUE(on(0).Gemm(x.on[0], **whole, c.range, nullptr, y.on[0]).ok());
    ASSERT_TRUE(on(1).Gemm(x.on[1], **part, c.range, nullptr, y.on[1]).ok());
    const std::string what = GemmCase(m, n, k, c.range, false) + " on a shard";
    ExpectClose(y, Op::kGemm, what);
    if (on(1).device() == Device::kCpu) {
      const std::vector<float> a = Download(0, y.on[0]), b = Download(1, y.on[1]);
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << what;
    }
  }
  // A range outside the shard, and shards that are not a panel or subtree.
  const WeightPart shard{n, k, 32, 64, 4, 4};
  const std::vector<float> part_host = PartOf(w_host, k, shard);
  auto part = on(1).UploadWeight(part_host.data(), shard);
  ASSERT_TRUE(part.ok());
  Twin x = Upload(Random(rng_, m * 16), m, 16), y = Zeros(m, 32);
  const absl::Status outside = on(1).Gemm(x.on[1], **part, {16, 48, 4, 2}, nullptr, y.on[1]);
  EXPECT_EQ(outside.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(outside.message().find("holds rows [32, 64)"), std::string_view::npos) << outside;
  EXPECT_FALSE(on(1).UploadWeight(part_host.data(), {n, k, 8, 40, 4, 4}).ok());
  EXPECT_FALSE(on(1).UploadWeight(part_host.data(), {n, k, 32, 64, 2, 4}).ok());
}

TEST_P(BackendOpsTest, RopeWithAndWithoutLlama3Scaling) {
  const StepLayout layout = MakeLayout({{0, 3}, {4090, 2}, {517, 4}}, 16, 600, 100, rng_);
  for (int64_t head_dim : {8, 64, 128}) {
    for (int64_t heads : {1, 3}) {
      for (bool scaled : {false, true}) {
        RopeSpec spec{head_dim, scaled ? 500000.0 : 10000.0, std::nullopt};
        if (scaled) spec.scaling = Llama3Scaling{8.0, 1.0, 4.0, 8192};
        Twin x = Upload(Random(rng_, layout.num_tokens() * heads * head_dim), layout.num_tokens(),
                        heads * head_dim);
        for (int i : {0, 1}) {
          auto rope = on(i).UploadRope(spec);
          ASSERT_TRUE(rope.ok());
          ASSERT_TRUE(on(i).Rope(x.on[i], heads, **rope, *Prepare(i, layout), 0).ok());
        }
        ExpectClose(x, Op::kRope,
                    absl::StrCat(heads, " heads of ", head_dim, scaled ? ", llama3" : ""));
      }
    }
  }
}

// K/V written into scattered blocks over random cached context, then
// attention of every token: GQA ratios 1, 2, 4 and 8.
TEST_P(BackendOpsTest, WriteKvAndAttentionOverScatteredBlocks) {
  struct Shape {
    int64_t heads, kv_heads, head_dim, block_size;
  };
  // Head sizes 16 to 128 take the CUDA backend's tensor-core kernel; 8
  // takes its simple one.
  const std::vector<Shape> shapes = {{8, 8, 16, 4},   {8, 4, 64, 16}, {8, 2, 32, 16},
                                     {8, 1, 64, 8},   {3, 3, 8, 5},   {32, 8, 128, 16},
                                     {12, 4, 128, 16}};
  // A fresh prefill, a chunk after cached context, decodes over short and
  // long contexts: few rows, so the CUDA backend splits the positions.
  const std::vector<std::pair<int64_t, int64_t>> few = {
      {0, 11}, {37, 9}, {5, 1}, {2047, 1}, {400, 1}};
  // A 300-token chunk after 90 cached positions and 48 decodes: enough rows
  // that it does not split.
  std::vector<std::pair<int64_t, int64_t>> many = {{90, 300}};
  for (int i = 0; i < 48; ++i) many.push_back({i * 37 % 700, 1});
  for (const Shape& s : shapes) {
    for (const auto& seqs : {few, many}) {
      for (int64_t window : {int64_t{0}, int64_t{7}, int64_t{100}}) {  // 0: none
        int64_t num_blocks = 3;                                        // and a few never used
        for (const auto& [start, count] : seqs) {
          num_blocks += (start + count + s.block_size - 1) / s.block_size;
        }
        const StepLayout layout = MakeLayout(seqs, s.block_size, num_blocks, 100, rng_);
        const int64_t n = layout.num_tokens(), width = s.kv_heads * s.head_dim;
        Twin k_cache = Upload(Random(rng_, num_blocks * s.block_size * width),
                              num_blocks * s.block_size, width);
        Twin v_cache = Upload(Random(rng_, num_blocks * s.block_size * width),
                              num_blocks * s.block_size, width);
        Twin k = Upload(Random(rng_, n * width), n, width);
        Twin v = Upload(Random(rng_, n * width), n, width);
        Twin q = Upload(Random(rng_, n * s.heads * s.head_dim), n, s.heads * s.head_dim);
        Twin out = Zeros(n, s.heads * s.head_dim);
        const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
        for (int i : {0, 1}) {
          const PagedKv cache{k_cache.on[i], v_cache.on[i], s.block_size,
                              s.kv_heads,    s.head_dim,    window};
          const std::unique_ptr<StepData> step = Prepare(i, layout);
          ASSERT_TRUE(on(i).WriteKv(cache, k.on[i], v.on[i], *step).ok());
          ASSERT_TRUE(on(i).Attention(q.on[i], s.heads, cache, *step, scale, out.on[i]).ok());
        }
        const std::string what =
            absl::StrCat(s.heads, "/", s.kv_heads, " heads of ", s.head_dim, ", blocks of ",
                         s.block_size, ", ", seqs.size(), " sequences, window ", window);
        ExpectClose(k_cache, Op::kWriteKv, what + " (K cache)");
        ExpectClose(v_cache, Op::kWriteKv, what + " (V cache)");
        ExpectClose(out, Op::kAttention, what);
      }
    }
  }
}

TEST_P(BackendOpsTest, SiluMul) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 8}, {7, 33}, {16, 1536}}) {
    Twin gate = Upload(Random(rng_, rows * cols, 4.0f), rows, cols);
    Twin up = Upload(Random(rng_, rows * cols), rows, cols);
    Twin out = Zeros(rows, cols);
    for (int i : {0, 1}) ASSERT_TRUE(on(i).SiluMul(gate.on[i], up.on[i], out.on[i]).ok());
    ExpectClose(out, Op::kSiluMul, absl::StrCat(rows, " x ", cols));
  }
}

TEST_P(BackendOpsTest, CopyBetweenStridedViewsAndGatherRows) {
  Twin src = Upload(Random(rng_, 9 * 40), 9, 40);
  Twin packed = Zeros(9, 70);
  for (int i : {0, 1}) {
    // Two column windows side by side in a wider buffer: SP's packing.
    ASSERT_TRUE(on(i).Copy(src.on[i].Cols(8, 24), packed.on[i].Cols(0, 16)).ok());
    ASSERT_TRUE(on(i).Copy(src.on[i].Cols(0, 40), packed.on[i].Cols(30, 70)).ok());
  }
  ExpectClose(packed, Op::kCopy, "column windows");
  const std::vector<int64_t> rows = {8, 0, 3, 3, 7};
  Twin gathered = Zeros(5, 40);
  for (int i : {0, 1}) ASSERT_TRUE(on(i).GatherRows(src.on[i], rows, gathered.on[i]).ok());
  ExpectClose(gathered, Op::kGatherRows, "rows 8, 0, 3, 3, 7");
}

TEST_P(BackendOpsTest, SampleGreedyTemperatureTopKTopP) {
  const int64_t vocab = 301;
  std::vector<SampleRequest> requests(6);
  requests[1].params = {0.7f, 1.0f, 0, 3};
  requests[2].params = {1.0f, 1.0f, 5, 4};
  requests[3].params = {1.3f, 0.8f, 0, 5};
  requests[4].params = {0.9f, 0.95f, 40, 6};
  requests[5].top_logprobs = 5;
  requests[5].return_logits = true;
  for (size_t r = 0; r < requests.size(); ++r) requests[r].position = 17 + 1000 * r;
  std::vector<float> logits = Random(rng_, requests.size() * vocab, 2.0f);
  logits[5 * vocab + 3] = logits[5 * vocab + 9] = 50.0f;  // a tie: the lower id wins
  std::vector<SampleResult> results[2];
  SampleOnBoth(logits, vocab, requests, results);
  EXPECT_EQ(results[0][5].token_id, 3);
  for (size_t r = 0; r < requests.size(); ++r) {
    const SampleResult &want = results[0][r], &got = results[1][r];
    EXPECT_EQ(got.token_id, want.token_id) << "request " << r;
    EXPECT_LE(Nmse({got.logprob}, {want.logprob}), Tolerance(Op::kSample)) << "request " << r;
    ASSERT_EQ(got.top.size(), want.top.size());
    for (size_t j = 0; j < got.top.size(); ++j) EXPECT_EQ(got.top[j].first, want.top[j].first);
    EXPECT_EQ(got.logits, want.logits);
  }
  EXPECT_EQ(results[1][5].top.size(), 5u);
  EXPECT_EQ(results[1][5].logits.size(), static_cast<size_t>(vocab));
}

// A step of greedy requests only (the serving case a GPU backend samples on
// the device), over a Llama-3-sized vocabulary, with ties and with the
// largest logit first and last.
TEST_P(BackendOpsTest, SampleGreedyRowsOnly) {
  const int64_t vocab = 128256, rows = 7;
  std::vector<SampleRequest> requests(rows);
  for (int64_t r = 0; r < rows; ++r) requests[r].position = 3 + r;
  std::vector<float> logits = Random(rng_, rows * vocab, 3.0f);
  logits[0 * vocab + 0] = 40.0f;
  logits[1 * vocab + vocab - 1] = 40.0f;
  logits[2 * vocab + 77] = logits[2 * vocab + 70000] = 40.0f;  // a tie: the lower id wins
  logits[3 * vocab + 5] = logits[3 * vocab + 4] = 40.0f;
  std::vector<SampleResult> results[2];
  SampleOnBoth(logits, vocab, requests, results);
  EXPECT_EQ(results[0][0].token_id, 0);
  EXPECT_EQ(results[0][1].token_id, vocab - 1);
  EXPECT_EQ(results[0][2].token_id, 77);
  EXPECT_EQ(results[0][3].token_id, 4);
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_EQ(results[1][r].token_id, results[0][r].token_id) << "row " << r;
    EXPECT_NEAR(results[1][r].logprob, results[0][r].logprob,
                1e-4 * std::max(1.0f, std::abs(results[0][r].logprob)))
        << "row " << r;
  }
}

// FP8 (E4M3) weights with a scale per row, against the CPU on the
// dequantized weights. A backend with FP8 GEMMs quantizes the activations
// per token too: E4M3 keeps 3 mantissa bits, a relative error of about
// 3.6% RMS per product, so the outputs' NMSE stays near 1.3e-3; 5e-3 is
// the bound. K of 128 and 256 take the FP8 path on every reduction range;
// K of 24 (3 per group) runs in bf16 on the dequantized slice.
TEST_P(BackendOpsTest, GemmOnFp8WeightsWithScalesPerRow) {
  for (int64_t m : {1, 7, 64}) {
    for (int64_t n : {16, 48, 112}) {
      for (int64_t k : {24, 128, 256}) {
        std::vector<uint8_t> codes(n * k);
        std::vector<float> scales(n);
        for (float& s : scales) s = std::exp2(static_cast<float>(rng_() % 6) - 8.0f);
        for (uint8_t& c : codes) c = F32ToF8E4M3(Random(rng_, 1, 60.0f)[0]);
        std::unique_ptr<Weight> w[2];
        for (int i : {0, 1}) {
          auto uploaded =
              on(i).UploadWeightFp8(codes.data(), scales.data(), WeightPart::Whole(n, k));
          ASSERT_TRUE(uploaded.ok()) << uploaded.status();
          w[i] = *std::move(uploaded);
        }
        std::vector<GemmRange> ranges = {GemmRange{}, GemmRange{0, -1, 4, 4}};
        if (n > 16) ranges.push_back(GemmRange{16, n, 2, 2});
        for (const GemmRange& range : ranges) {
          for (bool with_bias : {false, true}) {
            const Twin y = GemmOnBoth(w, range, m, with_bias, /*strided=*/false);
            ExpectWithin(y, 5e-3, "FP8 " + GemmCase(m, n, k, range, with_bias));
          }
        }
      }
    }
  }
}

// Block-scaled FP8 (one scale per 128 x 128 tile, the last ones partial) on
// parts whose rows and reduction groups cut the tiles, against the CPU
// backend on the same values dequantized here: code · its tile's scale.
TEST_P(BackendOpsTest, GemmOnFp8WeightsWithBlockScalesOnPartsThatCutBlocks) {
  const int64_t n = 200, k = 320, block = 128, m = 9;
  const int64_t tile_cols = (k + block - 1) / block;
  std::vector<uint8_t> codes(n * k);
  std::vector<float> scales(((n + block - 1) / block) * tile_cols);
  for (float& s : scales) s = std::exp2(static_cast<float>(rng_() % 6) - 8.0f);
  for (uint8_t& c : codes) c = F32ToF8E4M3(Random(rng_, 1, 60.0f)[0]);
  std::vector<float> dequantized(n * k);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      dequantized[r * k + c] =
          F8E4M3ToF32(codes[r * k + c]) * scales[r / block * tile_cols + c / block];
    }
  }
  struct Case {
    WeightPart part;
    GemmRange range;
  };
  const std::vector<Case> cases = {
      {WeightPart::Whole(n, k), {}},
      {{n, k, 64, 192, 0, 8}, {64, 192}},         // rows cutting both row blocks
      {{n, k, 0, n, 2, 2}, {0, -1, 2, 2}},        // K columns [80, 160): cut tiles 0 and 1
      {{n, k, 0, n, 4, 4}, {0, -1, 6, 2}},        // [160, 320): a cut tile and a partial one
      {{n, k, 96, 160, 4, 4}, {112, 160, 4, 2}},  // rows and columns cutting tiles
  };
  for (const Case& c : cases) {
    const std::vector<uint8_t> part_codes = PartOf(codes, k, c.part);
    const std::vector<float> part_values = PartOf(dequantized, k, c.part);
    std::unique_ptr<Weight> w[2];
    auto reference = on(0).UploadWeight(part_values.data(), c.part);
    auto tested = on(1).UploadWeightFp8Blocks(part_codes.data(), scales.data(), block, c.part);
    ASSERT_TRUE(reference.ok() && tested.ok()) << tested.status();
    w[0] = *std::move(reference);
    w[1] = *std::move(tested);
    const int64_t cols = (c.range.n_end < 0 ? n : c.range.n_end) - c.range.n_begin;
    const int64_t kr = k / kReductionGroups * c.range.group_count;
    Twin x = Upload(Random(rng_, m * kr), m, kr);
    Twin y = Zeros(m, cols);
    for (int i : {0, 1}) ASSERT_TRUE(on(i).Gemm(x.on[i], *w[i], c.range, nullptr, y.on[i]).ok());
    ExpectWithin(y, 5e-3, "FP8 blocks " + GemmCase(m, n, k, c.range, false));
  }
  EXPECT_FALSE(
      on(1).UploadWeightFp8Blocks(codes.data(), scales.data(), 0, WeightPart::Whole(n, k)).ok());
}

TEST_P(BackendOpsTest, ShapeMismatchesAreErrorsThatNameTheOperation) {
  Twin a = Zeros(3, 16), b = Zeros(3, 8), w = Zeros(1, 16);
  const absl::Status status = on(1).RmsNorm(a.on[1], nullptr, w.on[1], 1e-5f, b.on[1]);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("rms_norm"), std::string_view::npos) << status;
  const std::vector<float> w_host(32 * 16, 0.5f);
  auto weight = on(1).UploadWeight(w_host.data(), WeightPart::Whole(32, 16));
  ASSERT_TRUE(weight.ok());
  Twin y = Zeros(3, 32);
  EXPECT_EQ(on(1).Gemm(b.on[1], **weight, {}, nullptr, y.on[1]).code(),
            absl::StatusCode::kInvalidArgument);  // K 8 against 16
}

INSTANTIATE_TEST_SUITE_P(Devices, BackendOpsTest, ::testing::ValuesIn(AvailableBackends()),
                         [](const auto& info) { return info.param; });

// The counters a backend keeps per operation: exact FLOPs and bytes.
TEST(BackendCountersTest, GemmAndAttentionCountTheirWork) {
  cpu::CpuBackend backend(1);
  const int64_t m = 4, n = 48, k = 64;
  const std::vector<float> w_host(n * k, 0.25f);
  auto w = backend.UploadWeight(w_host.data(), WeightPart::Whole(n, k));
  ASSERT_TRUE(w.ok());
  auto x = backend.Allocate(DType::kF32, m, k, true);
  auto y = backend.Allocate(DType::kF32, m, n, true);
  ASSERT_TRUE(x.ok() && y.ok());
  ASSERT_TRUE(backend.Gemm(*x, **w, {}, nullptr, *y).ok());
  // Half the reduction (groups 0-3) over columns [16, 48).
  auto y2 = backend.Allocate(DType::kF32, m, 32, true);
  ASSERT_TRUE(backend.Gemm(x->Cols(0, 32), **w, {16, 48, 0, 4}, nullptr, *y2).ok());
  const OpStats& gemm = backend.stats(Op::kGemm);
  EXPECT_EQ(gemm.calls, 2u);
  EXPECT_EQ(gemm.flops, static_cast<uint64_t>(2 * m * n * k + 2 * m * 32 * 32));
  EXPECT_EQ(
      gemm.bytes,
      static_cast<uint64_t>((m * k + n * k + m * n) + (m * 32 + 32 * 32 + m * 32)) * sizeof(float));
  EXPECT_GE(gemm.seconds, 0.0);

  // Two sequences: a 3-token chunk at 0 and a decode at position 9.
  std::mt19937 rng(1);
  const StepLayout layout = MakeLayout({{0, 3}, {9, 1}}, 4, 8, 10, rng);
  auto step = backend.PrepareStep(layout);
  ASSERT_TRUE(step.ok());
  const int64_t heads = 4, kv = 2, hd = 16;
  auto k_cache = backend.Allocate(DType::kF32, 32, kv * hd, true);
  auto v_cache = backend.Allocate(DType::kF32, 32, kv * hd, true);
  auto q = backend.Allocate(DType::kF32, 4, heads * hd, true);
  auto out = backend.Allocate(DType::kF32, 4, heads * hd, true);
  const PagedKv cache{*k_cache, *v_cache, 4, kv, hd};
  ASSERT_TRUE(backend.Attention(*q, heads, cache, **step, 0.25f, *out).ok());
  const OpStats& attention = backend.stats(Op::kAttention);
  // Positions 0, 1, 2 and 9 attend to 1, 2, 3 and 10 positions.
  EXPECT_EQ(attention.flops, static_cast<uint64_t>(heads * (4 * hd + 3) * (1 + 2 + 3 + 10)));
  // q and out, and the K and V of 3 and 10 positions once each.
  EXPECT_EQ(attention.bytes,
            static_cast<uint64_t>(2 * 4 * heads * hd + 2 * (3 + 10) * kv * hd) * sizeof(float));
  // A window of 2: positions 0, 1, 2 and 9 attend to 1, 2, 2 and 2; the
  // chunk reads its 3 positions, the decode 2 of its 10.
  const PagedKv windowed{*k_cache, *v_cache, 4, kv, hd, 2};
  const OpStats before = attention;
  ASSERT_TRUE(backend.Attention(*q, heads, windowed, **step, 0.25f, *out).ok());
  EXPECT_EQ(attention.flops - before.flops,
            static_cast<uint64_t>(heads * (4 * hd + 3) * (1 + 2 + 2 + 2)));
  EXPECT_EQ(attention.bytes - before.bytes,
            static_cast<uint64_t>(2 * 4 * heads * hd + 2 * (3 + 2) * kv * hd) * sizeof(float));
}

TEST(BackendDeviceTest, DeviceNamesParseAndCudaNeedsItsBuildAndAGpu) {
  EXPECT_EQ(*ParseDevice("cpu"), Device::kCpu);
  const auto cuda = ParseDevice("cuda");
  if (BuiltWithCuda()) {
    EXPECT_EQ(*cuda, Device::kCuda);
    std::string why;
    if (CudaDeviceCount(&why) == 0) {
      const auto backend = CreateBackend(Device::kCuda, {});
      EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition);
      EXPECT_NE(backend.status().message().find("use --device=cpu"), std::string_view::npos)
          << backend.status();
    }
  } else {
    EXPECT_EQ(cuda.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_NE(cuda.status().message().find("--device=cpu"), std::string_view::npos);
  }
  EXPECT_EQ(ParseDevice("tpu").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace shift::kernels
