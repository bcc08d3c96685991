#include "common/cli.h"

#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "absl/base/config.h"
#include "absl/flags/internal/parse.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace shift {
namespace {

std::string& ProgramName() {
  static auto* name = new std::string("shift");
  return *name;
}

// absl::ParseCommandLine, except that a usage flag (--help, --helpfull,
// --help=substring, --version, ...) prints to stdout and exits 0: asking for
// help is not a failure. Abseil's own handling exits 1, and its public API
// has no way to parse without acting on usage flags, hence the internal calls
// (whose signatures changed in the 2023-08 release). Unknown flags and bad
// values still make Abseil print why and exit 1.
std::vector<char*> ParseFlags(int argc, char** argv) {
  namespace fi = absl::flags_internal;
#if !defined(ABSL_LTS_RELEASE_VERSION) || ABSL_LTS_RELEASE_VERSION >= 20230802
  std::vector<char*> positional = fi::ParseCommandLineImpl(
      argc, argv, fi::UsageFlagsAction::kIgnoreUsage, fi::OnUndefinedFlag::kAbortIfUndefined);
  const bool usage =
      fi::HandleUsageFlags(std::cout, absl::ProgramUsageMessage()) != fi::HelpMode::kNone;
#else
  std::vector<char*> positional = fi::ParseCommandLineImpl(
      argc, argv, fi::ArgvListAction::kRemoveParsedArgs, fi::UsageFlagsAction::kIgnoreUsage,
      fi::OnUndefinedFlag::kAbortIfUndefined);
  const bool usage = fi::HandleUsageFlags(std::cout, absl::ProgramUsageMessage()) != -1;
#endif
  if (usage) {
    std::cout.flush();
    std::exit(0);
  }
  return positional;
}

}  // namespace

int64_t RaiseOpenFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return -1;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return limit.rlim_cur == RLIM_INFINITY ? -1 : static_cast<int64_t>(limit.rlim_cur);
}

uint64_t ReturnFreeHeap(uint64_t threshold_bytes) {
  const struct mallinfo2 info = mallinfo2();
  const uint64_t free_bytes = info.fordblks;
  if (free_bytes > threshold_bytes) malloc_trim(0);
  return free_bytes;
}

std::vector<char*> InitProgram(int argc, char** argv, const std::string& description,
                               const std::string& usage) {
  // Abseil's deadlock detection (on in some distributions' builds) updates a
  // global lock graph on every Mutex acquisition: a measurable cost for a
  // server taking a lock per streamed token. Tests keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (argc > 0) {
    const std::string path = argv[0];
    ProgramName() = path.substr(path.find_last_of('/') + 1);
  }
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view file) {
    // A program's own flags, and those it shares with others (*_flags.cc).
    return absl::EndsWith(file, "_main.cc") || absl::EndsWith(file, "_flags.cc");
  };
  // Show "tools/x_main.cc", not the path of the machine that built it.
  config.normalize_filename = [](absl::string_view file) {
    for (absl::string_view dir : {"tools/", "router/", "worker/", "workload/"}) {
      if (auto pos = file.rfind(dir); pos != absl::string_view::npos) {
        return std::string(file.substr(pos));
      }
    }
    return std::string(file);
  };
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(
      absl::StrCat(description, "\nUsage: ", usage,
                   "\nFlags are written with underscores; dashes work too (--world-size=2)."));
  // Abseil flag names cannot hold dashes: "--max-num-seqs=8" is read as
  // "--max_num_seqs=8". Values are left alone.
  static std::vector<std::string>* rewritten = new std::vector<std::string>();
  rewritten->reserve(rewritten->size() + argc);  // no reallocation: args point into it
  std::vector<char*> args(argv, argv + argc);
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") break;
    if (!absl::StartsWith(arg, "--")) continue;
    const size_t end = std::min(arg.find('='), arg.size());
    for (size_t c = 2; c < end; ++c) {
      if (arg[c] == '-') arg[c] = '_';
    }
    rewritten->push_back(std::move(arg));
    args[i] = rewritten->back().data();
  }
  return ParseFlags(argc, args.data());
}

int ReportFailure(const absl::Status& status) {
  std::fprintf(stderr, "%s: %s\n", ProgramName().c_str(), std::string(status.ToString()).c_str());
  return 1;
}

}  // namespace shift
