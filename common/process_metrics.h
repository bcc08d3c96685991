// The process's own series, as Prometheus' client libraries export them
// and operators chart them (process_cpu_seconds_total,
// process_resident_memory_bytes, process_virtual_memory_bytes,
// process_open_fds, process_max_fds, process_start_time_seconds), read from
// /proc at each scrape. ServeMetrics (common/metrics_http.h) adds them to
// every /metrics endpoint, the router's and each rank's. Header-only: for
// targets that link prometheus-cpp.
#pragma once

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/labels.h"
#include "prometheus/metric_family.h"

namespace shift {

class ProcessCollector final : public prometheus::Collectable {
 public:
  // `labels` go on every series (the process's model_name, group, rank).
  explicit ProcessCollector(prometheus::Labels labels = {}) : labels_(std::move(labels)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> families;
    auto add = [&](const char* name, const char* help, prometheus::MetricType type, double value) {
      prometheus::MetricFamily family;
      family.name = name;
      family.help = help;
      family.type = type;
      prometheus::ClientMetric metric;
      for (const auto& [key, value] : labels_) metric.label.push_back({key, value});
      if (type == prometheus::MetricType::Counter) {
        metric.counter.value = value;
      } else {
        metric.gauge.value = value;
      }
      family.metric.push_back(metric);
      families.push_back(std::move(family));
    };
    const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
    // /proc/self/stat: fields after the command's closing parenthesis; utime
    // and stime are the 12th and 13th of them, starttime the 20th, vsize the
    // 21st, rss (pages) the 22nd.
    std::ifstream stat_file("/proc/self/stat");
    std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
    const size_t paren = stat.rfind(')');
    if (paren != std::string::npos) {
      std::istringstream fields(stat.substr(paren + 2));
      std::vector<std::string> f;
      for (std::string s; fields >> s;) f.push_back(s);
      if (f.size() > 21) {
        add("process_cpu_seconds_total", "User and system CPU time spent, in seconds",
            prometheus::MetricType::Counter, (std::stod(f[11]) + std::stod(f[12])) / tick);
        add("process_virtual_memory_bytes", "Virtual memory size, in bytes",
            prometheus::MetricType::Gauge, std::stod(f[20]));
        add("process_resident_memory_bytes", "Resident memory size, in bytes",
            prometheus::MetricType::Gauge, std::stod(f[21]) * page);
        if (const double boot = BootTime(); boot > 0) {
          add("process_start_time_seconds",
              "Start time of the process since the Unix epoch, in seconds",
              prometheus::MetricType::Gauge, boot + std::stod(f[19]) / tick);
        }
      }
    }
    add("process_open_fds", "Open file descriptors", prometheus::MetricType::Gauge, OpenFds());
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
      add("process_max_fds", "The open-file limit (soft)", prometheus::MetricType::Gauge,
          static_cast<double>(limit.rlim_cur));
    }
    return families;
  }

 private:
  // Seconds since the epoch at boot (/proc/stat's btime); 0 if unknown.
  static double BootTime() {
    std::ifstream file("/proc/stat");
    for (std::string line; std::getline(file, line);) {
      if (line.rfind("btime ", 0) == 0) return std::stod(line.substr(6));
    }
    return 0;
  }
  static double OpenFds() {
    DIR* dir = opendir("/proc/self/fd");
    if (dir == nullptr) return 0;
    double count = 0;
    while (const dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') ++count;
    }
    closedir(dir);
    return count - 1;  // the directory stream's own descriptor
  }

 private:
  prometheus::Labels labels_;
};

}  // namespace shift
