// The process's own series read from /proc: present with OpenMetrics'
// names and types, and moving as the process does (CPU time, descriptors).
#include "common/process_metrics.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <map>

#include "gtest/gtest.h"

namespace shift {
namespace {

std::map<std::string, double> Read() {
  std::map<std::string, double> values;
  for (const auto& family : ProcessCollector().Collect()) {
    EXPECT_EQ(family.metric.size(), 1u) << family.name;
    const bool counter = family.type == prometheus::MetricType::Counter;
    EXPECT_EQ(counter, family.name == "process_cpu_seconds_total") << family.name;
    values[family.name] = counter ? family.metric[0].counter.value : family.metric[0].gauge.value;
  }
  return values;
}

TEST(ProcessMetricsTest, ReadsTheProcessFromProc) {
  std::map<std::string, double> before = Read();
  for (const char* name : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                           "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                           "process_start_time_seconds"}) {
    EXPECT_TRUE(before.count(name)) << name;
  }
  EXPECT_GT(before["process_resident_memory_bytes"], 1 << 20);
  EXPECT_GE(before["process_virtual_memory_bytes"], before["process_resident_memory_bytes"]);
  EXPECT_GE(before["process_open_fds"], 3);  // at least stdin, stdout, stderr
  EXPECT_GE(before["process_max_fds"], before["process_open_fds"]);
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_LE(before["process_start_time_seconds"], now + 1);
  EXPECT_GT(before["process_start_time_seconds"], now - 3600);  // started just now

  // Descriptors follow what the process opens; CPU time follows its work.
  const int fd = open("/dev/null", O_RDONLY);
  ASSERT_GE(fd, 0);
  volatile double sink = 0;
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(300)) sink = sink + 1;
  std::map<std::string, double> after = Read();
  EXPECT_EQ(after["process_open_fds"], before["process_open_fds"] + 1);
  EXPECT_GT(after["process_cpu_seconds_total"], before["process_cpu_seconds_total"]);
  close(fd);
}

}  // namespace
}  // namespace shift
