// One child process started from an argument vector, never through a shell:
// the routers and workers shift-bench --compare starts, gnuplot, and the
// processes tests run. The object owns the process: its destructor kills
// (SIGKILL) and reaps a process still running, so nothing outlives its owner
// and no zombie is left behind. Not thread-safe: one thread at a time uses an
// object.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace shift {

class Subprocess {
 public:
  // Starts argv[0] (looked up on PATH when it holds no '/') with `argv`. Its
  // stdout and stderr go to `log_path` (created, or truncated) unless that is
  // empty (then they are this process's); it runs in `working_dir` unless
  // that is empty. The error names the program and why it could not start
  // (missing, not executable, log not writable, ...).
  static absl::StatusOr<Subprocess> Start(const std::vector<std::string>& argv,
                                          const std::string& log_path = "",
                                          const std::string& working_dir = "");

  // No process.
  Subprocess() = default;
  Subprocess(Subprocess&& other) noexcept;
  // Kills and reaps this object's own process first, if it still runs.
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();

  // -1 for no process. Stays set after the process has exited.
  pid_t pid() const { return pid_; }
  // Whether the process has not exited yet (reaps it once it has).
  bool Running();
  // Sends `signal`; an error once the process has been reaped (its pid may
  // belong to another process by then).
  absl::Status Signal(int signal);
  // Waits up to `timeout` for the process to exit and returns its exit code,
  // or -N when signal N ended it; DeadlineExceeded when it still runs then.
  absl::StatusOr<int> Wait(absl::Duration timeout = absl::InfiniteDuration());
  // SIGTERM, then SIGKILL if it still runs `grace` later; returns what Wait
  // does (-SIGKILL when it had to be killed).
  absl::StatusOr<int> Stop(absl::Duration grace);

 private:
  Subprocess(pid_t pid, std::string name) : pid_(pid), name_(std::move(name)) {}
  // Kills and reaps the process if it still runs.
  void Kill();
  // One waitpid; true when the process has been reaped (now or before).
  absl::StatusOr<bool> Reap(bool block);

  pid_t pid_ = -1;
  std::string name_;  // argv[0], for messages
  bool reaped_ = false;
  int exit_code_ = 0;  // valid once reaped_
};

}  // namespace shift
