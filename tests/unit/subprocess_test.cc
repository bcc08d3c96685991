// The child-process launcher: exit codes come back, Stop escalates from
// SIGTERM to SIGKILL after the grace period, the destructor leaves no process
// behind, and a program that cannot start says why.
#include "common/subprocess.h"

#include <signal.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace shift {
namespace {

using ::testing::HasSubstr;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Waits (up to 10 s) until the file at `path` holds `text`.
bool WaitForText(const std::string& path, const std::string& text) {
  for (int i = 0; i < 1000; ++i) {
    if (ReadAll(path).find(text) != std::string::npos) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return false;
}

class SubprocessTest : public ::testing::Test {
 protected:
  testing::TestTempDir tmp_;
};

TEST_F(SubprocessTest, ExitCodeComesBack) {
  absl::StatusOr<Subprocess> child = Subprocess::Start({"/bin/sh", "-c", "exit 3"});
  ASSERT_TRUE(child.ok()) << child.status();
  EXPECT_GT(child->pid(), 0);
  absl::StatusOr<int> code = child->Wait();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 3);
  EXPECT_FALSE(child->Running());
  // Reaped: asking again gives the same code, and no signal goes to the pid.
  EXPECT_EQ(*child->Wait(absl::Seconds(1)), 3);
  EXPECT_EQ(child->Signal(SIGTERM).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SubprocessTest, OutputGoesToTheLogInTheWorkingDirectory) {
  const std::string log = tmp_.Sub("child.log");
  absl::StatusOr<Subprocess> child =
      Subprocess::Start({"sh", "-c", "pwd; echo to-stderr >&2"}, log, tmp_.path().string());
  ASSERT_TRUE(child.ok()) << child.status();
  EXPECT_EQ(*child->Wait(), 0);
  EXPECT_THAT(ReadAll(log), HasSubstr(tmp_.path().string()));
  EXPECT_THAT(ReadAll(log), HasSubstr("to-stderr"));
}

TEST_F(SubprocessTest, WaitTimesOutOnARunningProcess) {
  absl::StatusOr<Subprocess> child = Subprocess::Start({"sleep", "60"});
  ASSERT_TRUE(child.ok()) << child.status();
  EXPECT_TRUE(child->Running());
  EXPECT_EQ(child->Wait(absl::Milliseconds(50)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(child->Running());
}

TEST_F(SubprocessTest, StopEndsAProcessThatHeedsSigterm) {
  absl::StatusOr<Subprocess> child = Subprocess::Start({"sleep", "60"});
  ASSERT_TRUE(child.ok()) << child.status();
  const absl::Time start = absl::Now();
  absl::StatusOr<int> code = child->Stop(absl::Seconds(10));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, -SIGTERM);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_FALSE(child->Running());
}

TEST_F(SubprocessTest, StopKillsAProcessThatIgnoresSigtermAfterTheGrace) {
  const std::string log = tmp_.Sub("stubborn.log");
  // `exec` keeps one process: sleep inherits the ignored SIGTERM.
  absl::StatusOr<Subprocess> child =
      Subprocess::Start({"/bin/sh", "-c", "trap '' TERM; echo ready; exec sleep 60"}, log);
  ASSERT_TRUE(child.ok()) << child.status();
  ASSERT_TRUE(WaitForText(log, "ready"));
  const absl::Time start = absl::Now();
  absl::StatusOr<int> code = child->Stop(absl::Milliseconds(300));
  const absl::Duration took = absl::Now() - start;
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, -SIGKILL);
  EXPECT_GE(took, absl::Milliseconds(300));
  EXPECT_LT(took, absl::Seconds(5));
}

TEST_F(SubprocessTest, DestructorKillsAndReaps) {
  pid_t pid;
  {
    absl::StatusOr<Subprocess> child = Subprocess::Start({"sleep", "60"});
    ASSERT_TRUE(child.ok()) << child.status();
    pid = child->pid();
    ASSERT_EQ(::kill(pid, 0), 0);
  }
  // Reaped, not a zombie: the pid is gone.
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

TEST_F(SubprocessTest, MovedFromOwnsNothing) {
  absl::StatusOr<Subprocess> child = Subprocess::Start({"/bin/sh", "-c", "exit 7"});
  ASSERT_TRUE(child.ok()) << child.status();
  Subprocess moved = std::move(*child);
  EXPECT_EQ(child->pid(), -1);
  EXPECT_EQ(*moved.Wait(), 7);
  // Assigning over a running process kills and reaps it first.
  absl::StatusOr<Subprocess> sleeper = Subprocess::Start({"sleep", "60"});
  ASSERT_TRUE(sleeper.ok()) << sleeper.status();
  const pid_t pid = sleeper->pid();
  *sleeper = std::move(moved);
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(*sleeper->Wait(), 7);
}

TEST_F(SubprocessTest, AMissingProgramSaysSo) {
  absl::StatusOr<Subprocess> child = Subprocess::Start({tmp_.Sub("no-such-program")});
  ASSERT_FALSE(child.ok());
  EXPECT_EQ(child.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(child.status().message(), HasSubstr("cannot start"));
  EXPECT_THAT(child.status().message(), HasSubstr("no-such-program"));
  EXPECT_THAT(child.status().message(), HasSubstr("No such file or directory"));
  EXPECT_EQ(Subprocess::Start({"shift-no-such-program-on-path"}).status().code(),
            absl::StatusCode::kNotFound);
  // An unwritable log is an error too, naming the log.
  absl::StatusOr<Subprocess> unlogged =
      Subprocess::Start({"/bin/true"}, tmp_.Sub("missing-dir/x.log"));
  ASSERT_FALSE(unlogged.ok());
  EXPECT_THAT(unlogged.status().message(), HasSubstr("missing-dir/x.log"));
  EXPECT_EQ(Subprocess::Start({}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace shift
