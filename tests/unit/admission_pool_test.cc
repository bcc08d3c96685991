// The admission pool: tasks run on its threads, within its bounds in all and
// per client, and what is queued still runs when the pool is destroyed.
#include "router/admission_pool.h"

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shift {
namespace {

TEST(AdmissionPoolTest, BoundsWaitingTasksInAllAndPerClient) {
  absl::Notification release;
  std::atomic<int> ran{0};
  {
    AdmissionPool pool(/*threads=*/1, /*max_waiting=*/4, /*per_client=*/2);
    auto blocked = [&] {
      release.WaitForNotification();
      ++ran;
    };
    EXPECT_TRUE(pool.Add("a", blocked).ok());
    EXPECT_TRUE(pool.Add("a", blocked).ok());
    const absl::Status third = pool.Add("a", blocked);
    EXPECT_TRUE(absl::IsResourceExhausted(third));
    EXPECT_THAT(third.message(), ::testing::HasSubstr("this client"));
    EXPECT_TRUE(pool.Add("b", blocked).ok());
    EXPECT_TRUE(pool.Add("c", blocked).ok());
    const absl::Status full = pool.Add("d", blocked);
    EXPECT_TRUE(absl::IsResourceExhausted(full));
    EXPECT_THAT(full.message(), ::testing::HasSubstr("4 requests are already waiting"));
    release.Notify();
  }  // the destructor runs what is queued
  EXPECT_EQ(ran.load(), 4);
}

TEST(AdmissionPoolTest, TasksRunOffTheCallersThreadAndFreeTheirPlace) {
  AdmissionPool pool(2, 1, 1);
  const std::thread::id caller = std::this_thread::get_id();
  for (int i = 0; i < 20; ++i) {
    absl::Notification done;
    std::thread::id where;
    // One place only: an Add succeeds once the previous task has ended and
    // given its place back (just after it returns).
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (!pool.Add("a",
                     [&] {
                       where = std::this_thread::get_id();
                       done.Notify();
                     })
                .ok()) {
      ASSERT_LT(absl::Now(), deadline) << "the place was never given back";
      absl::SleepFor(absl::Microseconds(50));
    }
    done.WaitForNotification();
    EXPECT_NE(where, caller);
  }
}

}  // namespace
}  // namespace shift
