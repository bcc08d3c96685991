#include "common/log.h"

#include <unistd.h>

#include <atomic>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace shift {
namespace {

std::atomic<bool> json_format{false};
std::atomic<int> min_level{static_cast<int>(LogLevel::kInfo)};

const char* LevelName(LogLevel level, bool upper) {
  switch (level) {
    case LogLevel::kDebug:
      return upper ? "DEBUG" : "debug";
    case LogLevel::kInfo:
      return upper ? "INFO" : "info";
    case LogLevel::kWarning:
      return upper ? "WARNING" : "warning";
    case LogLevel::kError:
      return upper ? "ERROR" : "error";
  }
  return "info";
}

// A value as text: as it is when it is a plain word, else quoted with
// control characters, quotes and backslashes escaped.
std::string TextValue(const std::string& value) {
  bool plain = !value.empty();
  for (unsigned char c : value) {
    if (c <= ' ' || c == '"' || c == '\\' || c == '=' || c == 0x7f) plain = false;
  }
  return plain ? value : absl::StrCat("\"", absl::CHexEscape(value), "\"");
}

// A value or message longer than this is cut, with its length said: a
// refused multi-megabyte request_id cannot make a multi-megabyte line.
constexpr size_t kMaxValueBytes = 1024;
constexpr size_t kMaxMessageBytes = 4096;

std::string Capped(std::string_view value, size_t max) {
  if (value.size() <= max) return std::string(value);
  return absl::StrCat(std::string(value.substr(0, max)), "...(", value.size(), " bytes)");
}

}  // namespace

LogField::LogField(std::string_view k, double v) : key(k), value(absl::StrFormat("%.6g", v)) {}

absl::Status ConfigureLogging(const std::string& format, const std::string& level) {
  if (format != "text" && format != "json") {
    return absl::InvalidArgumentError("--log_format must be text or json");
  }
  int parsed = -1;
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarning, LogLevel::kError}) {
    if (level == LevelName(l, false)) parsed = static_cast<int>(l);
  }
  if (parsed < 0) {
    return absl::InvalidArgumentError("--log_level must be debug, info, warning or error");
  }
  json_format = format == "json";
  min_level = parsed;
  return absl::OkStatus();
}

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= min_level.load(); }

std::string FormatLogLine(LogLevel level, std::string_view component, std::string_view message,
                          std::initializer_list<LogField> fields, bool json) {
  const std::string ts = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  if (json) {
    nlohmann::ordered_json line;
    line["ts"] = ts;
    line["level"] = LevelName(level, false);
    line["component"] = std::string(component);
    line["msg"] = Capped(message, kMaxMessageBytes);
    for (const LogField& f : fields) {
      if (f.key == "ts" || f.key == "level" || f.key == "component" || f.key == "msg") continue;
      line[f.key] = Capped(f.value, kMaxValueBytes);
    }
    return line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  }
  std::string line =
      absl::StrCat(ts, " ", LevelName(level, true), " ", std::string(component), ": ");
  for (char c : Capped(message, kMaxMessageBytes)) {
    // One line per entry: a message's own line breaks are escaped.
    if (c == '\n') {
      line += "\\n";
    } else if (static_cast<unsigned char>(c) < ' ' && c != '\t') {
      line += absl::CHexEscape(std::string(1, c));
    } else {
      line += c;
    }
  }
  for (const LogField& f : fields) {
    absl::StrAppend(&line, " ", f.key, "=", TextValue(Capped(f.value, kMaxValueBytes)));
  }
  return line;
}

void Log(LogLevel level, std::string_view component, std::string_view message,
         std::initializer_list<LogField> fields) {
  if (!LogEnabled(level)) return;
  std::string line = FormatLogLine(level, component, message, fields, json_format.load());
  line += '\n';
  // One write: lines of different threads never interleave.
  for (size_t done = 0; done < line.size();) {
    const ssize_t n = write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
}

}  // namespace shift
