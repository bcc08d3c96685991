// The logger's lines: text and JSON, every field escaped so that no value
// (a request_id with control characters, quotes, line breaks, or bytes that
// are not UTF-8) can break a line or forge another.
#include "common/log.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace shift {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;

TEST(LogTest, TextLinesHaveTimeLevelComponentAndFields) {
  const std::string line = FormatLogLine(LogLevel::kWarning, "router", "group 0 ready",
                                         {{"group", 0}, {"reason", "a b"}}, /*json=*/false);
  EXPECT_THAT(line,
              MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
                           "WARNING router: group 0 ready group=0 reason=\"a b\""));
}

TEST(LogTest, JsonLinesParseWithEveryField) {
  const std::string line = FormatLogLine(LogLevel::kInfo, "access", "request finished",
                                         {{"request_id", "r-1"}, {"e2e_s", 0.25}}, /*json=*/true);
  const auto parsed = nlohmann::json::parse(line);
  EXPECT_EQ(parsed["level"], "info");
  EXPECT_EQ(parsed["component"], "access");
  EXPECT_EQ(parsed["msg"], "request finished");
  EXPECT_EQ(parsed["request_id"], "r-1");
  EXPECT_EQ(parsed["e2e_s"], "0.25");
  EXPECT_TRUE(parsed["ts"].is_string());
  // A field may not replace the line's own keys.
  const auto forged = nlohmann::json::parse(
      FormatLogLine(LogLevel::kInfo, "access", "m", {{"level", "error"}}, /*json=*/true));
  EXPECT_EQ(forged["level"], "info");
}

TEST(LogTest, HostileValuesStayOnOneLine) {
  const std::string hostile = std::string("id\n2026-01-01T00:00:00.000Z ERROR forged: x\x01\"\\") +
                              std::string(256, 'a') + "\xff";
  for (bool json : {false, true}) {
    const std::string line =
        FormatLogLine(LogLevel::kInfo, "access", "msg\nsecond", {{"request_id", hostile}}, json);
    EXPECT_EQ(line.find('\n'), std::string::npos) << line;
    EXPECT_EQ(line.find('\x01'), std::string::npos) << line;
    if (json) {
      const auto parsed = nlohmann::json::parse(line);  // valid JSON, invalid UTF-8 replaced
      EXPECT_THAT(parsed["request_id"].get<std::string>(), HasSubstr("ERROR forged"));
    } else {
      EXPECT_THAT(line, Not(HasSubstr("\" ERROR")));
    }
  }
}

TEST(LogTest, LongValuesAreCutWithTheirLength) {
  const std::string huge(4 << 20, 'x');
  for (bool json : {false, true}) {
    const std::string line =
        FormatLogLine(LogLevel::kInfo, "router", "request refused", {{"request_id", huge}}, json);
    EXPECT_LT(line.size(), 2048u);
    EXPECT_THAT(line, HasSubstr("...(4194304 bytes)"));
  }
}

TEST(LogTest, LevelsAndFormatsAreChecked) {
  EXPECT_FALSE(ConfigureLogging("xml", "info").ok());
  EXPECT_FALSE(ConfigureLogging("text", "loud").ok());
  ASSERT_TRUE(ConfigureLogging("text", "warning").ok());
  EXPECT_FALSE(LogEnabled(LogLevel::kInfo));
  EXPECT_TRUE(LogEnabled(LogLevel::kError));
  ASSERT_TRUE(ConfigureLogging("text", "info").ok());
  EXPECT_TRUE(LogEnabled(LogLevel::kInfo));
}

}  // namespace
}  // namespace shift
