#include "router/worker_hub.h"

#include "absl/strings/str_cat.h"

namespace shift {

namespace internal = v1::internal;

// One rank's stream: reads until the rank goes away; writes are queued with
// one in flight. Deletes itself when gRPC is done with it.
class WorkerHub::Stream final
    : public grpc::ServerBidiReactor<internal::WorkerMessage, internal::RouterMessage> {
 public:
  explicit Stream(WorkerHub* hub) : hub_(hub) { StartRead(&incoming_); }

  void Send(internal::RouterMessage message) {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    outbox_.push_back(std::move(message));
    if (!writing_) WriteNext();
  }

  uint32_t group = 0, rank = 0;
  bool registered = false;

  void OnReadDone(bool ok) override {
    if (!ok) {
      Close(grpc::Status::OK);
      return;
    }
    if (incoming_.has_register_()) {
      group = incoming_.register_().group();
      rank = incoming_.register_().rank();
      hub_->OnRegister(this, incoming_.register_());
    } else if (incoming_.has_result()) {
      hub_->OnResult(this, incoming_.result());
    }
    StartRead(&incoming_);
  }
  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    outbox_.pop_front();
    writing_ = false;
    if (ok && !closed_) WriteNext();
  }
  void OnCancel() override { Close(grpc::Status(grpc::StatusCode::CANCELLED, "rank went away")); }
  void OnDone() override {
    hub_->OnGone(this);
    delete this;
  }

 private:
  void WriteNext() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (outbox_.empty()) return;
    writing_ = true;
    StartWrite(&outbox_.front());
  }
  void Close(const grpc::Status& status) {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    closed_ = true;
    Finish(status);
  }

  WorkerHub* hub_;
  internal::WorkerMessage incoming_;
  absl::Mutex mu_;
  std::deque<internal::RouterMessage> outbox_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

WorkerHub::WorkerHub(GenerationHook on_generation) : on_generation_(std::move(on_generation)) {}
WorkerHub::~WorkerHub() = default;

grpc::ServerBidiReactor<internal::WorkerMessage, internal::RouterMessage>* WorkerHub::Connect(
    grpc::CallbackServerContext*) {
  return new Stream(this);
}

void WorkerHub::OnRegister(Stream* stream, const internal::Register& reg) {
  internal::RouterMessage welcome;
  {
    absl::MutexLock lock(&mu_);
    Group& group = groups_[reg.group()];
    if (group.ranks.count(reg.rank()) || group.generation == 0) {
      // A rank (re)joining: the group meets again under a new generation.
      ++group.generation;
      if (on_generation_) on_generation_(reg.group(), group.generation);
    }
    group.ranks[reg.rank()] = stream;
    group.registrations[reg.rank()] = reg;
    stream->registered = true;
    welcome.mutable_welcome()->set_generation(group.generation);
    welcome.mutable_welcome()->set_heartbeat_interval_seconds(1.0);
    stream->Send(std::move(welcome));
  }
}

void WorkerHub::OnResult(Stream* stream, const internal::StepResult& result) {
  absl::MutexLock lock(&mu_);
  groups_[stream->group].results[stream->rank] = result;
}

void WorkerHub::OnGone(Stream* stream) {
  absl::MutexLock lock(&mu_);
  if (!stream->registered) return;
  Group& group = groups_[stream->group];
  auto it = group.ranks.find(stream->rank);
  if (it != group.ranks.end() && it->second == stream) group.ranks.erase(it);
}

absl::Status WorkerHub::WaitForGroup(uint32_t group, uint32_t world_size, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return groups_[group].ranks.size() >= world_size;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) {
    return absl::DeadlineExceededError(absl::StrCat("group ", group, " has ",
                                                    groups_[group].ranks.size(), " of ", world_size,
                                                    " ranks registered"));
  }
  return absl::OkStatus();
}

absl::StatusOr<internal::Register> WorkerHub::Registration(uint32_t group, uint32_t rank) {
  absl::MutexLock lock(&mu_);
  auto& regs = groups_[group].registrations;
  if (!regs.count(rank)) return absl::NotFoundError(absl::StrCat("rank ", rank, " not registered"));
  return regs[rank];
}

absl::StatusOr<std::vector<internal::StepResult>> WorkerHub::RunStep(uint32_t group_id,
                                                                     const internal::StepPlan& plan,
                                                                     absl::Duration timeout) {
  internal::RouterMessage message;
  *message.mutable_plan() = plan;
  // Streams are only used under mu_: OnGone (under mu_) runs before one is
  // deleted.
  absl::MutexLock lock(&mu_);
  Group& group = groups_[group_id];
  group.results.clear();
  const size_t world = group.ranks.size();
  for (auto& [rank, stream] : group.ranks) stream->Send(message);
  auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return group.results.size() >= world || group.ranks.size() < world;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&done), timeout)) {
    return absl::DeadlineExceededError(absl::StrCat("step ", plan.step_id(), ": ",
                                                    group.results.size(), " of ", world,
                                                    " ranks answered in time"));
  }
  if (group.ranks.size() < world) {
    return absl::UnavailableError(absl::StrCat("a rank of group ", group_id, " went away"));
  }
  std::vector<internal::StepResult> results;
  for (auto& [rank, result] : group.results) {
    if (!result.error().empty()) {
      return absl::InternalError(absl::StrCat("rank ", rank, ": ", result.error()));
    }
    results.push_back(result);
  }
  return results;
}

void WorkerHub::Shutdown(uint32_t group_id, const std::string& reason) {
  internal::RouterMessage message;
  message.mutable_shutdown()->set_reason(reason);
  absl::MutexLock lock(&mu_);
  for (auto& [rank, stream] : groups_[group_id].ranks) stream->Send(message);
}

}  // namespace shift
