// One logger for shift's servers (the router and the ranks) and the gRPC
// library inside them: every line has a UTC timestamp, a level and a
// component, then the message and named fields (request_id, group,
// generation...). `--log_format=text` (the default) writes
//   2026-12-06T16:50:00.123Z INFO router: group 0 ready group=0 generation=1
// and `--log_format=json` one JSON object a line:
//   {"ts":"2026-12-06T16:50:00.123Z","level":"info","component":"router",
//    "msg":"group 0 ready","group":"0","generation":"1"}
// Values are escaped in both (a request_id with control characters cannot
// break a line), and each line is one write(2), so lines of different
// threads never interleave. `--log_level` drops lines below it.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"

namespace shift {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// A named value on a line.
struct LogField {
  LogField(std::string_view k, std::string_view v) : key(k), value(v) {}
  LogField(std::string_view k, const std::string& v) : key(k), value(v) {}
  LogField(std::string_view k, const char* v) : key(k), value(v) {}
  template <typename Int, typename = std::enable_if_t<std::is_integral_v<Int>>>
  LogField(std::string_view k, Int v) : key(k), value(std::to_string(v)) {}
  LogField(std::string_view k, double v);
  std::string key;
  std::string value;
};

// Sets the format ("text" or "json") and the lowest level written
// ("debug", "info", "warning", "error"); InvalidArgument for other words.
// Before it is called: text, info.
absl::Status ConfigureLogging(const std::string& format, const std::string& level);

bool LogEnabled(LogLevel level);
void Log(LogLevel level, std::string_view component, std::string_view message,
         std::initializer_list<LogField> fields = {});

// The line Log would write, without its newline (exposed for tests).
std::string FormatLogLine(LogLevel level, std::string_view component, std::string_view message,
                          std::initializer_list<LogField> fields, bool json);

}  // namespace shift
