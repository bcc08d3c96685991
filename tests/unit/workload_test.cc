// The load generator's workload library: trace readers on the real public
// traces (when ../shared/data is there) and on malformed files, arrival
// processes, prompts that share exactly the prefixes a trace names, and the
// report's statistics and plots.
#include "workload/workload.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"
#include "workload/plots.h"

namespace shift::workload {
namespace {

using ::testing::HasSubstr;

std::string TracePath(const std::string& name) {
  const char* shared = std::getenv("SHIFT_SHARED_DATA");
  return std::string(shared ? shared : "../shared/data") + "/traces/" + name;
}

TEST(TraceTest, RealTracesHaveTheirRowsAndLengths) {
  if (!std::filesystem::exists(TracePath("mooncake_conversation_trace.jsonl"))) {
    GTEST_SKIP() << "../shared/data/traces is absent";
  }
  struct Case {
    const char* file;
    size_t rows;
  };
  for (const Case& c : {Case{"AzureLLMInferenceTrace_conv.csv", 19366},
                        Case{"AzureLLMInferenceTrace_code.csv", 8819},
                        Case{"mooncake_conversation_trace.jsonl", 12031},
                        Case{"mooncake_synthetic_trace.jsonl", 3993}}) {
    auto rows = ReadTrace(TracePath(c.file));
    ASSERT_TRUE(rows.ok()) << rows.status();
    EXPECT_EQ(rows->size(), c.rows) << c.file;
    EXPECT_EQ(rows->front().at, 0.0);
    for (size_t i = 1; i < rows->size(); ++i) ASSERT_GE((*rows)[i].at, 0.0);
  }
  // The first rows, as in the files.
  auto azure = ReadAzureTrace(TracePath("AzureLLMInferenceTrace_conv.csv"), 2);
  ASSERT_TRUE(azure.ok());
  ASSERT_EQ(azure->size(), 2u);
  EXPECT_EQ((*azure)[0].input_tokens, 374);
  EXPECT_EQ((*azure)[0].output_tokens, 44);
  EXPECT_NEAR((*azure)[1].at, 50.9951690 - 46.6805900, 1e-6);
  auto mooncake = ReadMooncakeTrace(TracePath("mooncake_conversation_trace.jsonl"), 3);
  ASSERT_TRUE(mooncake.ok());
  EXPECT_EQ((*mooncake)[1].input_tokens, 7322);
  EXPECT_EQ((*mooncake)[1].output_tokens, 490);
  EXPECT_EQ((*mooncake)[1].hash_ids.front(), 0);
  EXPECT_EQ((*mooncake)[1].hash_ids.size(), 15u);
}

TEST(TraceTest, MalformedLinesAreNamed) {
  testing::TestTempDir tmp;
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(tmp.Sub(name)) << text;
    return tmp.Sub(name);
  };
  const std::string csv = write("a.csv",
                                "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                "2023-11-16 18:15:46.6805900,374,44\n"
                                "2023-11-16 18:15:50.9951690,39x,109\n");
  auto bad = ReadAzureTrace(csv);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("a.csv:3:"));
  const std::string time = write("t.csv", "h\nyesterday,1,2\n");
  EXPECT_THAT(ReadAzureTrace(time).status().message(), HasSubstr("t.csv:2: bad timestamp"));
  const std::string jsonl = write("b.jsonl",
                                  "{\"timestamp\": 0, \"input_length\": 5, \"output_length\": 2}\n"
                                  "{\"timestamp\": 3, \"input_length\": 5\n");
  EXPECT_THAT(ReadMooncakeTrace(jsonl).status().message(), HasSubstr("b.jsonl:2: not a JSON"));
  const std::string field = write("c.jsonl",
                                  "{\"timestamp\": 0, \"input_length\": -1, "
                                  "\"output_length\": 2}\n");
  EXPECT_THAT(ReadMooncakeTrace(field).status().message(), HasSubstr("\"input_length\""));
  EXPECT_FALSE(ReadTrace(write("d.txt", "x")).ok());
  EXPECT_EQ(ReadTrace(tmp.Sub("missing.csv")).status().code(), absl::StatusCode::kNotFound);
}

TEST(ArrivalsTest, PoissonHasItsRateAndBurstsTheirs) {
  const std::vector<double> t = PoissonArrivals(50, 200, 1);
  EXPECT_NEAR(t.size(), 10000.0, 300.0);
  for (size_t i = 1; i < t.size(); ++i) ASSERT_GT(t[i], t[i - 1]);
  const std::vector<double> b = BurstArrivals(40, 2, 5, 5, 100, 2);  // mean rate 21/s
  EXPECT_NEAR(b.size(), 2100.0, 150.0);
  size_t in_burst = 0;
  for (double x : b) in_burst += std::fmod(x, 10.0) < 5.0;
  EXPECT_GT(in_burst, b.size() * 9 / 10);
}

TEST(PromptTest, TraceBlocksBecomeSharedPrefixes) {
  const PromptMaker maker(10, 1000, 4, 7);
  const auto a = maker.FromBlocks({0, 1, 2}, 10, 0);
  const auto b = maker.FromBlocks({0, 1, 5}, 12, 1);
  ASSERT_EQ(a.size(), 10u);
  ASSERT_EQ(b.size(), 12u);
  EXPECT_EQ(std::vector<int32_t>(a.begin(), a.begin() + 8),
            std::vector<int32_t>(b.begin(), b.begin() + 8));
  EXPECT_NE(std::vector<int32_t>(a.begin() + 8, a.end()),
            std::vector<int32_t>(b.begin() + 8, b.begin() + 10));
  for (int32_t t : b) EXPECT_TRUE(t >= 10 && t < 1000);
  EXPECT_NE(maker.Random(16, 1), maker.Random(16, 2));
  EXPECT_EQ(maker.Random(16, 1), maker.Random(16, 1));
  std::vector<TraceRow> rows = {{0, 1000, 100, {}}, {2, 30, 5000, {0, 1}}};
  const std::vector<Request> r = FromTrace(rows, maker, 2.0, 10.0, 64, 50);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].prompt.size(), 64u);  // 100 capped
  EXPECT_EQ(r[0].max_tokens, 10u);
  EXPECT_EQ(r[1].at, 1.0);
  EXPECT_EQ(r[1].prompt.size(), 3u);
  EXPECT_EQ(r[1].max_tokens, 50u);  // 500 capped
}

TEST(ReportTest, CountsPercentilesAndGoodput) {
  std::vector<Outcome> outcomes;
  for (int i = 0; i < 100; ++i) {
    Outcome o;
    o.start = i;
    o.ttft = 0.01 * (i + 1);  // 10 ms .. 1 s
    o.e2e = o.ttft + 0.1;
    o.output_tokens = 11;  // TPOT 10 ms
    o.prompt_tokens = 5;
    o.token_times = {o.start + o.ttft, o.start + o.ttft + 0.1};
    if (i % 4 == 0) o.token_times.push_back(o.start + o.ttft + 0.105);  // a 5 ms gap
    outcomes.push_back(o);
  }
  Outcome failed;
  failed.code = "RESOURCE_EXHAUSTED";
  failed.start = 5;
  outcomes.push_back(failed);
  const Report r = MakeReport(outcomes, /*ttft_limit=*/0.5, /*tpot_limit=*/0.02);
  EXPECT_EQ(r.requests, 101);
  EXPECT_EQ(r.completed, 100);
  ASSERT_EQ(r.failures.size(), 1u);
  EXPECT_EQ(r.failures[0].second, 1);
  EXPECT_EQ(r.output_tokens, 1100);
  EXPECT_NEAR(r.ttft.p50, 0.50, 1e-9);
  EXPECT_NEAR(r.ttft.p99, 0.99, 1e-9);
  EXPECT_NEAR(r.tpot.mean, 0.01, 1e-9);
  EXPECT_NEAR(r.itl.p50, 0.1, 1e-9);
  EXPECT_NEAR(r.duration, 99 + 1.1, 1e-9);
  EXPECT_NEAR(r.goodput * r.duration, 50, 1e-9);  // TTFT <= 0.5 s
  // Of 125 gaps, the 25 of 5 ms are within 20 ms.
  EXPECT_NEAR(r.itl_within_tpot_limit, 0.2, 1e-9);
  EXPECT_THAT(ReportTable(r), HasSubstr("RESOURCE_EXHAUSTED: 1"));
  EXPECT_THAT(ReportTable(r), HasSubstr("20.0% of inter-token gaps <= 20.0 ms"));
  EXPECT_EQ(ReportJson(r)["completed"], 100);
  EXPECT_EQ(MakeReport(outcomes, 0, 0).itl_within_tpot_limit, -1);
}

// Whether `program` is an executable file in a PATH directory.
bool OnPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::filesystem::path file = std::filesystem::path(dir) / program;
    if (!dir.empty() && ::access(file.c_str(), X_OK) == 0) return true;
  }
  return false;
}

std::vector<Outcome> SomeOutcomes() {
  std::vector<Outcome> outcomes;
  for (int i = 0; i < 20; ++i) {
    Outcome o;
    o.start = 0.2 * i;
    o.ttft = 0.01 * (i + 1);
    o.e2e = o.ttft + 0.5;
    o.output_tokens = 5;
    for (int t = 0; t < 5; ++t) o.token_times.push_back(o.start + o.ttft + 0.1 * t);
    outcomes.push_back(o);
  }
  return outcomes;
}

// gnuplot runs without a shell: quotes and spaces in the directory (or the
// title) are just characters.
TEST(PlotsTest, ADirectoryNamedWithQuotesAndSpacesGetsItsPngs) {
  if (!OnPath("gnuplot")) GTEST_SKIP() << "gnuplot is not installed";
  testing::TestTempDir tmp;
  const std::string dir = tmp.Sub("it's a \"plot\" dir");
  const std::vector<ModeSample> modes = {{0, 0, 0}, {1, 10, 2}, {2, 15, 9}};
  const absl::Status plotted = WritePlots(dir, "a 'quoted' \"title\"", SomeOutcomes(), modes);
  ASSERT_TRUE(plotted.ok()) << plotted;
  for (const char* png : {"latency_cdf.png", "throughput.png", "ttft_over_time.png", "modes.png"}) {
    const std::filesystem::path file = std::filesystem::path(dir) / png;
    ASSERT_TRUE(std::filesystem::exists(file)) << file;
    EXPECT_GT(std::filesystem::file_size(file), 1000u) << file;
  }
}

TEST(PlotsTest, WithoutGnuplotTheDataStaysAndTheErrorSaysSo) {
  testing::TestTempDir tmp;
  const char* path = std::getenv("PATH");
  const std::string saved = path != nullptr ? path : "";
  ::setenv("PATH", tmp.path().c_str(), 1);  // an empty directory: no gnuplot
  const absl::Status plotted = WritePlots(tmp.Sub("plots"), "t", SomeOutcomes(), {});
  ::setenv("PATH", saved.c_str(), 1);
  EXPECT_EQ(plotted.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(plotted.message(), HasSubstr("gnuplot is not installed"));
  EXPECT_TRUE(std::filesystem::exists(tmp.Sub("plots/ttft_cdf.dat")));
}

}  // namespace
}  // namespace shift::workload
