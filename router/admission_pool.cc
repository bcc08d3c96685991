#include "router/admission_pool.h"

#include <pthread.h>

#include "absl/strings/str_cat.h"
#include "common/defaults.h"

namespace shift {

AdmissionPool::AdmissionPool(int threads, int64_t max_waiting, int64_t per_client)
    : max_waiting_(max_waiting), per_client_(per_client) {
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this, i] {
      pthread_setname_np(pthread_self(), absl::StrCat("shift-admit-", i).c_str());
      Run();
    });
  }
}

AdmissionPool::~AdmissionPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

absl::Status AdmissionPool::Add(const std::string& client, std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (total_ >= max_waiting_) {
    return absl::ResourceExhaustedError(
        absl::StrCat(max_waiting_, " requests are already waiting to be tokenized; retry later"));
  }
  int64_t& count = counts_[client];
  if (count >= per_client_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "this client has ", per_client_, " requests waiting to be tokenized; retry later"));
  }
  ++count;
  ++total_;
  queue_.emplace_back(client, std::move(task));
  return absl::OkStatus();
}

void AdmissionPool::Run() {
  while (true) {
    std::pair<std::string, std::function<void()>> next;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](AdmissionPool* p)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) { return p->stopping_ || !p->queue_.empty(); },
          this));
      if (queue_.empty()) return;  // stopping, and nothing left to run
      next = std::move(queue_.front());
      queue_.pop_front();
    }
    next.second();
    absl::MutexLock lock(&mu_);
    --total_;
    if (--counts_[next.first] == 0) counts_.erase(next.first);
  }
}

AdmissionLanes::AdmissionLanes()
    : large_bytes_(defaults::kLargePromptBytes),
      small_(std::make_unique<AdmissionPool>(defaults::kAdmissionThreads,
                                             defaults::kMaxAdmissionsWaiting,
                                             defaults::kMaxAdmissionsPerClient)),
      large_(std::make_unique<AdmissionPool>(defaults::kLargeAdmissionThreads,
                                             defaults::kMaxLargeAdmissionsWaiting,
                                             defaults::kMaxLargeAdmissionsPerClient)) {}

}  // namespace shift
