// API key files: parsing, tenants, refusals, and keys rotated on disk.
#include <chrono>
#include <thread>

#include "common/file_util.h"
#include "common/security.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace shift {
namespace {

using ::testing::HasSubstr;
using ::testing::Optional;

constexpr char kKeyA[] = "aaaaaaaaaaaaaaaa-key-a";
constexpr char kKeyB[] = "bbbbbbbbbbbbbbbb-key-b";

TEST(ApiKeysTest, ParsesTokensAndTenantsAndRefusesBadLines) {
  auto keys = ParseApiKeys("# comment\n\n  aaaaaaaaaaaaaaaa  tenant-a \nbbbbbbbbbbbbbbbb\n");
  ASSERT_TRUE(keys.ok()) << keys.status();
  ASSERT_EQ(keys->size(), 2u);
  EXPECT_EQ((*keys)[0], std::make_pair(std::string("aaaaaaaaaaaaaaaa"), std::string("tenant-a")));
  EXPECT_EQ((*keys)[1],
            std::make_pair(std::string("bbbbbbbbbbbbbbbb"), UnnamedTenant("bbbbbbbbbbbbbbbb")));
  // The first 8 bytes of sha256("bbbbbbbbbbbbbbbb"), from sha256sum.
  EXPECT_EQ(UnnamedTenant("bbbbbbbbbbbbbbbb"), "key-2e61afd25d3ca76a");
  EXPECT_THAT(ParseApiKeys("short\n").status().message(), HasSubstr("line 1: a token has"));
  EXPECT_THAT(ParseApiKeys("\naaaaaaaaaaaaaaaa b c\n").status().message(),
              HasSubstr("line 2: expected TOKEN [TENANT]"));
}

TEST(ApiKeysTest, FindsTenantsOfWholeKeysOnly) {
  testing::TestTempDir dir;
  ASSERT_TRUE(WriteStringToFile(dir.Sub("keys"), absl::StrCat(kKeyA, " a\n", kKeyB, "\n")).ok());
  auto keys = ApiKeys::FromFile(dir.Sub("keys"));
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT((*keys)->Tenant(kKeyA), Optional(std::string("a")));
  EXPECT_THAT((*keys)->Tenant(kKeyB), Optional(UnnamedTenant(kKeyB)));
  // A line inserted above moves no key into another tenant.
  ASSERT_TRUE(WriteStringToFile(dir.Sub("keys2"), absl::StrCat("cccccccccccccccc-key-c\n", kKeyA,
                                                               " a\n", kKeyB, "\n"))
                  .ok());
  auto moved = ApiKeys::FromFile(dir.Sub("keys2"));
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ((*moved)->Tenant(kKeyB), (*keys)->Tenant(kKeyB));
  EXPECT_NE((*moved)->Tenant("cccccccccccccccc-key-c"), (*keys)->Tenant(kKeyB));
  const std::string a = kKeyA;
  EXPECT_EQ((*keys)->Tenant(a.substr(0, a.size() - 1)), std::nullopt);
  EXPECT_EQ((*keys)->Tenant(a + "x"), std::nullopt);
  EXPECT_EQ((*keys)->Tenant(""), std::nullopt);
}

TEST(ApiKeysTest, EmptyOrMissingFilesAreRefusedAtStart) {
  testing::TestTempDir dir;
  ASSERT_TRUE(WriteStringToFile(dir.Sub("empty"), "# nothing\n").ok());
  EXPECT_THAT(ApiKeys::FromFile(dir.Sub("empty")).status().message(), HasSubstr("has no key"));
  EXPECT_FALSE(ApiKeys::FromFile(dir.Sub("missing")).ok());
}

TEST(ApiKeysTest, ARotatedFileIsPickedUpAndABrokenOneKeepsTheLastKeys) {
  testing::TestTempDir dir;
  const std::string path = dir.Sub("keys");
  ASSERT_TRUE(WriteStringToFile(path, absl::StrCat(kKeyA, "\n")).ok());
  auto keys = ApiKeys::FromFile(path);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_TRUE((*keys)->Tenant(kKeyA).has_value());
  // The file is checked at most once a second, by modification time.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  ASSERT_TRUE(WriteStringToFile(path, absl::StrCat(kKeyB, "\n")).ok());
  EXPECT_FALSE((*keys)->Tenant(kKeyA).has_value());
  EXPECT_TRUE((*keys)->Tenant(kKeyB).has_value());
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  ASSERT_TRUE(WriteStringToFile(path, "too short\n").ok());
  EXPECT_TRUE((*keys)->Tenant(kKeyB).has_value());
}

TEST(ApiKeysTest, ClientsReadTheFirstKey) {
  testing::TestTempDir dir;
  ASSERT_TRUE(WriteStringToFile(dir.Sub("k"), absl::StrCat("# mine\n", kKeyB, " b\n", kKeyA)).ok());
  auto key = ReadApiKey(dir.Sub("k"));
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(*key, kKeyB);
}

}  // namespace
}  // namespace shift
