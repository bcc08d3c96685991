// The safetensors reader on good files (single, sharded, every dtype) and on
// each kind of broken file, which must give an error naming file and tensor.
#include "common/safetensors.h"

#include <filesystem>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace shift {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

class SafetensorsTest : public ::testing::Test {
 protected:
  std::string Path(const std::string& name) const { return tmp_.Sub(name); }

  // A file with a raw header and `data_size` zero bytes of data.
  std::string WriteRaw(const std::string& name, const std::string& header, size_t data_size) {
    std::string bytes(8, '\0');
    uint64_t len = header.size();
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((len >> (8 * i)) & 0xFF);
    bytes += header;
    bytes.append(data_size, '\0');
    EXPECT_TRUE(WriteStringToFile(Path(name), bytes).ok());
    return Path(name);
  }

  absl::Status OpenError(const std::string& path) {
    auto checkpoint = Checkpoint::OpenFile(path);
    EXPECT_FALSE(checkpoint.ok());
    return checkpoint.status();
  }

  testing::TestTempDir tmp_;
  const std::filesystem::path& dir_ = tmp_.path();
};

std::string Bytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

TEST_F(SafetensorsTest, RoundTripsEveryDtype) {
  std::vector<float> f32 = {1.5f, -2.0f, 0.25f, 3.0f, 4.0f, -0.5f};
  std::vector<uint16_t> bf16 = {0x3F80, 0xC000, 0x3E80};  // 1, -2, 0.25
  std::vector<uint16_t> f16 = {0x3C00, 0xC000};           // 1, -2
  std::string bf16_bytes(reinterpret_cast<const char*>(bf16.data()), 6);
  std::string f16_bytes(reinterpret_cast<const char*>(f16.data()), 4);
  std::string f32_bytes = Bytes(f32);
  std::vector<TensorToWrite> tensors = {{"a", DType::kF32, {2, 3}, f32_bytes},
                                        {"b", DType::kBF16, {3}, bf16_bytes},
                                        {"c", DType::kF16, {1, 2}, f16_bytes},
                                        {"empty", DType::kF32, {0, 4}, ""}};
  ASSERT_TRUE(WriteSafetensors(Path("model.safetensors"), tensors, {{"format", "pt"}}).ok());
  auto checkpoint = Checkpoint::Open(dir_.string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ((*checkpoint)->Names(), (std::vector<std::string>{"a", "b", "c", "empty"}));
  EXPECT_EQ((*checkpoint)->TotalBytes(), 24u + 6u + 4u);

  const int64_t a_shape[] = {2, 3};
  std::vector<float> out(6);
  ASSERT_TRUE((*checkpoint)->ReadAsF32("a", a_shape, out.data()).ok());
  EXPECT_EQ(out, f32);
  const int64_t b_shape[] = {3};
  ASSERT_TRUE((*checkpoint)->ReadAsF32("b", b_shape, out.data()).ok());
  EXPECT_EQ(std::vector<float>(out.begin(), out.begin() + 3), (std::vector<float>{1, -2, 0.25}));
  const int64_t c_shape[] = {1, 2};
  ASSERT_TRUE((*checkpoint)->ReadAsF32("c", c_shape, out.data()).ok());
  EXPECT_EQ(std::vector<float>(out.begin(), out.begin() + 2), (std::vector<float>{1, -2}));
  const TensorView* a = (*checkpoint)->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(a->data), a->nbytes), f32_bytes);
  // The header is padded so the data section starts 8-byte aligned.
  auto raw = ReadFileToString(Path("model.safetensors"));
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(static_cast<uint8_t>((*raw)[0]) % 8, 0);
}

TEST_F(SafetensorsTest, ShardedCheckpointLoads) {
  std::string x = Bytes({1, 2}), y = Bytes({3, 4, 5}), z = Bytes({6});
  ASSERT_TRUE(WriteSafetensors(Path("model-00001-of-00002.safetensors"),
                               std::vector<TensorToWrite>{{"x", DType::kF32, {2}, x},
                                                          {"y", DType::kF32, {3}, y}})
                  .ok());
  ASSERT_TRUE(WriteSafetensors(Path("model-00002-of-00002.safetensors"),
                               std::vector<TensorToWrite>{{"z", DType::kF32, {1}, z}})
                  .ok());
  ASSERT_TRUE(WriteSafetensorsIndex(dir_.string(),
                                    {{"x", "model-00001-of-00002.safetensors"},
                                     {"y", "model-00001-of-00002.safetensors"},
                                     {"z", "model-00002-of-00002.safetensors"}},
                                    24)
                  .ok());
  auto checkpoint = Checkpoint::Open(dir_.string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ((*checkpoint)->files().size(), 2u);
  EXPECT_EQ((*checkpoint)->Names(), (std::vector<std::string>{"x", "y", "z"}));
  const TensorView* z_view = (*checkpoint)->Find("z");
  ASSERT_NE(z_view, nullptr);
  EXPECT_THAT(*z_view->file, HasSubstr("model-00002-of-00002.safetensors"));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(z_view->data), 4), z);
}

TEST_F(SafetensorsTest, ShardMissingTensorOrFileIsAnError) {
  std::string x = Bytes({1, 2});
  ASSERT_TRUE(WriteSafetensors(Path("s1.safetensors"),
                               std::vector<TensorToWrite>{{"x", DType::kF32, {2}, x}})
                  .ok());
  ASSERT_TRUE(WriteSafetensorsIndex(dir_.string(),
                                    {{"x", "s1.safetensors"}, {"ghost", "s1.safetensors"}}, 8)
                  .ok());
  auto missing_tensor = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(missing_tensor.ok());
  EXPECT_THAT(missing_tensor.status().message(),
              AllOf(HasSubstr("s1.safetensors"), HasSubstr("\"ghost\""), HasSubstr("missing")));

  ASSERT_TRUE(
      WriteSafetensorsIndex(dir_.string(), {{"x", "s1.safetensors"}, {"w", "s2.safetensors"}}, 8)
          .ok());
  auto missing_file = Checkpoint::Open(dir_.string());
  ASSERT_FALSE(missing_file.ok());
  EXPECT_EQ(missing_file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing_file.status().message(), HasSubstr("s2.safetensors"));
}

TEST_F(SafetensorsTest, MissingCheckpointIsNotFound) {
  auto checkpoint = Checkpoint::Open(dir_.string());
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(checkpoint.status().message(), HasSubstr("model.safetensors"));
}

TEST_F(SafetensorsTest, TruncatedFilesAreRejected) {
  ASSERT_TRUE(WriteStringToFile(Path("tiny.safetensors"), "abc").ok());
  EXPECT_THAT(OpenError(Path("tiny.safetensors")).message(),
              AllOf(HasSubstr("tiny.safetensors"), HasSubstr("too short")));

  // A valid file cut short: the header's length runs past the end...
  std::string x = Bytes(std::vector<float>(16, 1.0f));
  ASSERT_TRUE(WriteSafetensors(Path("full.safetensors"),
                               std::vector<TensorToWrite>{{"x", DType::kF32, {16}, x}})
                  .ok());
  std::string full = *ReadFileToString(Path("full.safetensors"));
  ASSERT_TRUE(WriteStringToFile(Path("cut_header.safetensors"), full.substr(0, 20)).ok());
  EXPECT_THAT(OpenError(Path("cut_header.safetensors")).message(),
              AllOf(HasSubstr("cut_header.safetensors"), HasSubstr("truncated")));
  // ...or the data ends early.
  ASSERT_TRUE(
      WriteStringToFile(Path("cut_data.safetensors"), full.substr(0, full.size() - 4)).ok());
  EXPECT_THAT(
      OpenError(Path("cut_data.safetensors")).message(),
      AllOf(HasSubstr("cut_data.safetensors"), HasSubstr("\"x\""), HasSubstr("out of range")));
}

TEST_F(SafetensorsTest, BadHeadersAreRejected) {
  EXPECT_THAT(OpenError(WriteRaw("json.safetensors", "{not json", 0)).message(),
              AllOf(HasSubstr("json.safetensors"), HasSubstr("not valid JSON")));
  EXPECT_THAT(OpenError(WriteRaw("array.safetensors", "[1, 2]", 0)).message(),
              HasSubstr("not a JSON object"));
  std::string huge(8, '\xff');
  ASSERT_TRUE(WriteStringToFile(Path("huge.safetensors"), huge + "{}").ok());
  EXPECT_THAT(OpenError(Path("huge.safetensors")).message(), HasSubstr("header of"));
  EXPECT_THAT(OpenError(WriteRaw("nodtype.safetensors",
                                 R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", 8))
                  .message(),
              AllOf(HasSubstr("\"w\""), HasSubstr("dtype")));
  EXPECT_THAT(OpenError(WriteRaw("noshape.safetensors",
                                 R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})", 8))
                  .message(),
              AllOf(HasSubstr("\"w\""), HasSubstr("shape")));
  EXPECT_THAT(
      OpenError(WriteRaw("nooffsets.safetensors", R"({"w": {"dtype": "F32", "shape": [2]}})", 8))
          .message(),
      AllOf(HasSubstr("\"w\""), HasSubstr("data_offsets")));
  EXPECT_THAT(
      OpenError(WriteRaw("negdim.safetensors",
                         R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8))
          .message(),
      AllOf(HasSubstr("\"w\""), HasSubstr("shape")));
  EXPECT_THAT(
      OpenError(WriteRaw("dtype.safetensors",
                         R"({"w": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}})", 8))
          .message(),
      AllOf(HasSubstr("\"w\""), HasSubstr("unsupported dtype I64")));
  EXPECT_THAT(
      OpenError(
          WriteRaw(
              "overflow.safetensors",
              R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})",
              8))
          .message(),
      AllOf(HasSubstr("\"w\""), HasSubstr("overflows")));
}

TEST_F(SafetensorsTest, BadOffsetsAreRejected) {
  EXPECT_THAT(
      OpenError(WriteRaw("range.safetensors",
                         R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8))
          .message(),
      AllOf(HasSubstr("range.safetensors"), HasSubstr("\"w\""), HasSubstr("out of range")));
  EXPECT_THAT(
      OpenError(WriteRaw("reversed.safetensors",
                         R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})", 8))
          .message(),
      AllOf(HasSubstr("\"w\""), HasSubstr("end before")));
  EXPECT_THAT(
      OpenError(WriteRaw("size.safetensors",
                         R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8))
          .message(),
      AllOf(HasSubstr("\"w\""), HasSubstr("needs 12")));
  EXPECT_THAT(OpenError(WriteRaw("overlap.safetensors",
                                 R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                     "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                                 12))
                  .message(),
              AllOf(HasSubstr("overlap.safetensors"), HasSubstr("overlaps")));
}

TEST_F(SafetensorsTest, MissingTensorAndWrongShapeNameTheTensor) {
  std::string x = Bytes({1, 2, 3, 4, 5, 6});
  ASSERT_TRUE(WriteSafetensors(Path("model.safetensors"),
                               std::vector<TensorToWrite>{{"x", DType::kF32, {2, 3}, x}})
                  .ok());
  auto checkpoint = Checkpoint::Open(dir_.string());
  ASSERT_TRUE(checkpoint.ok());
  const int64_t wrong[] = {3, 2};
  auto shape = (*checkpoint)->Get("x", wrong);
  ASSERT_FALSE(shape.ok());
  EXPECT_THAT(shape.status().message(), AllOf(HasSubstr("model.safetensors"), HasSubstr("\"x\""),
                                              HasSubstr("[2, 3]"), HasSubstr("expected [3, 2]")));
  auto missing = (*checkpoint)->Get("y", wrong);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(),
              AllOf(HasSubstr("model.safetensors"), HasSubstr("\"y\""), HasSubstr("missing")));
}

TEST_F(SafetensorsTest, RandomCorruptionNeverCrashes) {
  std::string x = Bytes(std::vector<float>(8, 2.0f));
  ASSERT_TRUE(WriteSafetensors(Path("base.safetensors"),
                               std::vector<TensorToWrite>{{"x", DType::kF32, {8}, x},
                                                          {"y", DType::kF32, {2, 4}, x}})
                  .ok());
  const std::string base = *ReadFileToString(Path("base.safetensors"));
  uint64_t state = 12345;
  for (int trial = 0; trial < 500; ++trial) {
    std::string bytes = base;
    for (int flips = 0; flips < 3; ++flips) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      size_t pos = (state >> 33) % bytes.size();
      bytes[pos] = static_cast<char>(state >> 13);
    }
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    if (trial % 3 == 0) bytes.resize((state >> 33) % bytes.size());
    ASSERT_TRUE(WriteStringToFile(Path("fuzz.safetensors"), bytes).ok());
    auto checkpoint = Checkpoint::OpenFile(Path("fuzz.safetensors"));
    if (!checkpoint.ok()) {
      EXPECT_THAT(checkpoint.status().message(), HasSubstr("fuzz.safetensors"));
    }
  }
}

}  // namespace
}  // namespace shift
