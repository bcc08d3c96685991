// TextStream: streamed text equals the full decode, stop strings are never
// streamed (even when split over tokens or characters), and the text before
// a stop string is all released.
#include "core/text_stream.h"

#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"
#include "tools/mkmodel.h"

namespace shift {
namespace {

class TextStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MkModelOptions options;
    options.config = *PresetConfig("tiny");
    ASSERT_TRUE(WriteRandomModel(tmp_.Sub("m"), options).ok());
    auto tokenizer = Tokenizer::FromFile(tmp_.Sub("m") + "/tokenizer.json");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
  }

  // Streams `text`'s tokens one by one; returns what was released and how it
  // ended.
  std::string Stream(const std::string& text, const std::vector<std::string>& stops,
                     bool* stopped, std::string* stop_string, std::vector<std::string>* pieces) {
    auto ids = tokenizer_->Encode(text);
    EXPECT_TRUE(ids.ok());
    TextStream stream(*tokenizer_, stops);
    std::string out;
    *stopped = false;
    for (int32_t id : *ids) {
      TextStream::Piece piece = stream.Append(id);
      out += piece.text;
      if (pieces) pieces->push_back(piece.text);
      if (piece.stopped) {
        *stopped = true;
        *stop_string = piece.stop_string;
        return out;
      }
    }
    return out + stream.Finish();
  }

  testing::TestTempDir tmp_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(TextStreamTest, WithoutStopsEverythingIsStreamed) {
  const std::string text = "The lighthouse keeper counted ships: 42, ¿sí? 你好 🚀 done.";
  bool stopped;
  std::string stop;
  EXPECT_EQ(Stream(text, {}, &stopped, &stop, nullptr), text);
  EXPECT_FALSE(stopped);
}

TEST_F(TextStreamTest, StopStringsAreCutAndNeverStreamed) {
  const std::string text = "The lighthouse keeper counted ships until the END of the night";
  for (const std::string stop_at : {"END", "counted ships", "e", "night", "keeper c"}) {
    bool stopped;
    std::string stop;
    std::vector<std::string> pieces;
    const std::string out = Stream(text, {"never there", stop_at}, &stopped, &stop, &pieces);
    EXPECT_TRUE(stopped) << stop_at;
    EXPECT_EQ(stop, stop_at);
    EXPECT_EQ(out, text.substr(0, text.find(stop_at))) << stop_at;
  }
  // The earliest match wins, whichever string it is.
  bool stopped;
  std::string stop;
  EXPECT_EQ(Stream(text, {"night", "ships"}, &stopped, &stop, nullptr), "The lighthouse keeper counted ");
  EXPECT_EQ(stop, "ships");
}

TEST_F(TextStreamTest, HeldBackTextIsReleasedWhenNoStopCanMatch) {
  const std::string text = "abc abd abe";
  bool stopped;
  std::string stop;
  std::vector<std::string> pieces;
  EXPECT_EQ(Stream(text, {"abf"}, &stopped, &stop, &pieces), text);
  EXPECT_FALSE(stopped);
  // Never more than the longest stop minus one byte held back.
  std::string released;
  for (const std::string& p : pieces) released += p;
  EXPECT_GE(released.size() + 2, text.size());
}

TEST_F(TextStreamTest, MultibyteStopStringsAndHoldBackKeepUtf8Whole) {
  const std::string text = "one 你好 two 🚀 three";
  bool stopped;
  std::string stop;
  std::vector<std::string> pieces;
  EXPECT_EQ(Stream(text, {"🚀"}, &stopped, &stop, &pieces), "one 你好 two ");
  EXPECT_TRUE(stopped);
  pieces.clear();
  EXPECT_EQ(Stream(text, {"好 twx"}, &stopped, &stop, &pieces), text);
  for (const std::string& p : pieces) {
    // Every piece is whole UTF-8: no piece starts with a continuation byte.
    if (!p.empty()) {
      EXPECT_NE(static_cast<unsigned char>(p[0]) & 0xC0, 0x80) << p;
    }
  }
}

}  // namespace
}  // namespace shift
