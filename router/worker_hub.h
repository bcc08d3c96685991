// The router's end of the worker control streams (shift.v1.internal.Worker):
// one bidirectional stream per rank, registered by (group, rank). The hub
// welcomes ranks with the group's generation, sends each step's plan to every
// rank of a group and collects their results. Streams are callback reactors
// with one write in flight; callers of RunStep block, reactors never do.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "shift/v1/internal.grpc.pb.h"

namespace shift {

class WorkerHub final : public v1::internal::Worker::CallbackService {
 public:
  // `on_generation(group, generation)` runs when a group gets a new
  // generation (e.g. to advance the rendezvous store), before ranks learn it.
  using GenerationHook = std::function<void(uint32_t group, uint64_t generation)>;
  explicit WorkerHub(GenerationHook on_generation = nullptr);
  ~WorkerHub() override;

  grpc::ServerBidiReactor<v1::internal::WorkerMessage, v1::internal::RouterMessage>* Connect(
      grpc::CallbackServerContext* ctx) override;

  // Waits until `world_size` ranks of `group` are registered.
  absl::Status WaitForGroup(uint32_t group, uint32_t world_size, absl::Duration timeout);
  // What a rank reported when it registered.
  absl::StatusOr<v1::internal::Register> Registration(uint32_t group, uint32_t rank);
  // Sends `plan` to every rank of the group and waits for all results, in
  // rank order. UNAVAILABLE when a rank is gone, DEADLINE_EXCEEDED after
  // `timeout`, INTERNAL when a rank reports an error.
  absl::StatusOr<std::vector<v1::internal::StepResult>> RunStep(uint32_t group,
                                                                const v1::internal::StepPlan& plan,
                                                                absl::Duration timeout);
  // Asks every rank of the group to exit.
  void Shutdown(uint32_t group, const std::string& reason);

 private:
  class Stream;
  struct Group {
    uint64_t generation = 0;
    std::map<uint32_t, Stream*> ranks;
    std::map<uint32_t, v1::internal::Register> registrations;
    std::map<uint32_t, v1::internal::StepResult> results;  // of the step in flight
  };

  void OnRegister(Stream* stream, const v1::internal::Register& reg);
  void OnResult(Stream* stream, const v1::internal::StepResult& result);
  void OnGone(Stream* stream);

  GenerationHook on_generation_;
  absl::Mutex mu_;
  std::map<uint32_t, Group> groups_ ABSL_GUARDED_BY(mu_);
};

}  // namespace shift
