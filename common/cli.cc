#include "common/cli.h"

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace shift {

std::vector<char*> InitProgram(int argc, char** argv, const std::string& description,
                               const std::string& usage) {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "_main.cc");
  };
  // Show "tools/x_main.cc", not the path of the machine that built it.
  config.normalize_filename = [](absl::string_view file) {
    for (absl::string_view dir : {"tools/", "router/", "worker/"}) {
      if (auto pos = file.rfind(dir); pos != absl::string_view::npos) {
        return std::string(file.substr(pos));
      }
    }
    return std::string(file);
  };
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(absl::StrCat(description, "\nUsage: ", usage));
  return absl::ParseCommandLine(argc, argv);
}

}  // namespace shift
