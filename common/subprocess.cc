#include "common/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace shift {
namespace {

// posix_spawn's file actions, destroyed on every path out.
class FileActions {
 public:
  FileActions() { posix_spawn_file_actions_init(&actions_); }
  ~FileActions() { posix_spawn_file_actions_destroy(&actions_); }
  FileActions(const FileActions&) = delete;
  FileActions& operator=(const FileActions&) = delete;
  posix_spawn_file_actions_t* get() { return &actions_; }

 private:
  posix_spawn_file_actions_t actions_;
};

}  // namespace

absl::StatusOr<Subprocess> Subprocess::Start(const std::vector<std::string>& argv,
                                             const std::string& log_path,
                                             const std::string& working_dir) {
  if (argv.empty() || argv[0].empty()) {
    return absl::InvalidArgumentError("no program to start");
  }
  FileActions actions;
  // posix_spawn reports a failed action or exec as its return value (glibc
  // runs them in the child before the parent returns), so errors arrive here.
  if (!working_dir.empty() &&
      posix_spawn_file_actions_addchdir_np(actions.get(), working_dir.c_str()) != 0) {
    return absl::InternalError("posix_spawn_file_actions_addchdir_np failed");
  }
  if (!log_path.empty() &&
      (posix_spawn_file_actions_addopen(actions.get(), STDOUT_FILENO, log_path.c_str(),
                                        O_WRONLY | O_CREAT | O_TRUNC, 0644) != 0 ||
       posix_spawn_file_actions_adddup2(actions.get(), STDOUT_FILENO, STDERR_FILENO) != 0)) {
    return absl::InternalError("posix_spawn_file_actions_addopen failed");
  }
  std::vector<std::string> args = argv;
  std::vector<char*> pointers;
  for (std::string& arg : args) pointers.push_back(arg.data());
  pointers.push_back(nullptr);
  pid_t pid = -1;
  const int error =
      posix_spawnp(&pid, pointers[0], actions.get(), nullptr, pointers.data(), environ);
  if (error != 0) {
    std::string where;
    if (!working_dir.empty()) absl::StrAppend(&where, " in ", working_dir);
    if (!log_path.empty()) absl::StrAppend(&where, " (log ", log_path, ")");
    const std::string message =
        absl::StrCat("cannot start ", argv[0], where, ": ", std::strerror(error));
    return error == ENOENT ? absl::NotFoundError(message) : absl::UnavailableError(message);
  }
  return Subprocess(pid, argv[0]);
}

Subprocess::Subprocess(Subprocess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      name_(std::move(other.name_)),
      reaped_(other.reaped_),
      exit_code_(other.exit_code_) {}

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    Kill();
    pid_ = std::exchange(other.pid_, -1);
    name_ = std::move(other.name_);
    reaped_ = other.reaped_;
    exit_code_ = other.exit_code_;
  }
  return *this;
}

Subprocess::~Subprocess() { Kill(); }

void Subprocess::Kill() {
  if (pid_ <= 0 || reaped_) return;
  ::kill(pid_, SIGKILL);
  Reap(/*block=*/true).IgnoreError();
}

absl::StatusOr<bool> Subprocess::Reap(bool block) {
  if (pid_ <= 0) return absl::FailedPreconditionError("no process");
  if (reaped_) return true;
  int status = 0;
  pid_t got;
  do {
    got = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
  } while (got < 0 && errno == EINTR);
  if (got < 0) {
    return absl::InternalError(
        absl::StrCat("waitpid(", pid_, ") for ", name_, ": ", std::strerror(errno)));
  }
  if (got == 0) return false;
  reaped_ = true;
  exit_code_ = WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status);
  return true;
}

bool Subprocess::Running() {
  absl::StatusOr<bool> reaped = Reap(/*block=*/false);
  return reaped.ok() && !*reaped;
}

absl::Status Subprocess::Signal(int signal) {
  if (pid_ <= 0) return absl::FailedPreconditionError("no process");
  if (reaped_) {
    return absl::FailedPreconditionError(
        absl::StrCat(name_, " (pid ", pid_, ") has already exited"));
  }
  if (::kill(pid_, signal) != 0) {
    return absl::InternalError(
        absl::StrCat("kill(", pid_, ", ", signal, ") for ", name_, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> Subprocess::Wait(absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) {
    absl::StatusOr<bool> reaped = Reap(/*block=*/true);
    if (!reaped.ok()) return reaped.status();
    return exit_code_;
  }
  // waitpid has no timeout: poll, at most every 10 ms.
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    absl::StatusOr<bool> reaped = Reap(/*block=*/false);
    if (!reaped.ok()) return reaped.status();
    if (*reaped) return exit_code_;
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat(name_, " (pid ", pid_, ") still runs after ",
                                                      absl::FormatDuration(timeout)));
    }
    absl::SleepFor(std::min(left, absl::Milliseconds(10)));
  }
}

absl::StatusOr<int> Subprocess::Stop(absl::Duration grace) {
  if (pid_ <= 0) return absl::FailedPreconditionError("no process");
  if (reaped_) return exit_code_;
  ::kill(pid_, SIGTERM);
  absl::StatusOr<int> code = Wait(grace);
  if (code.ok() || !absl::IsDeadlineExceeded(code.status())) return code;
  ::kill(pid_, SIGKILL);
  return Wait();
}

}  // namespace shift
