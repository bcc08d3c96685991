// The router's end of the worker control streams (shift.v1.internal.Worker):
// one bidirectional stream per rank, registered by (group, rank). A group
// forms when all its ranks are registered: the hub bumps its generation and
// welcomes every rank with it, and the ranks meet under that generation in
// the rendezvous store. The hub sends each step's plan to every rank and
// collects their results. A rank whose stream closes, or that sends nothing
// (not even a heartbeat) for the heartbeat timeout, is lost: the step in
// flight fails with UNAVAILABLE naming it, and when it registers again the
// group re-forms under a new generation. A step that fails on a live group
// re-forms it at once. Streams are callback reactors with one write in
// flight; callers of WaitStep block, reactors never do.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/defaults.h"
#include "common/fingerprint.h"
#include "shift/v1/internal.grpc.pb.h"

namespace shift {

struct WorkerHubOptions {
  // Announced to ranks in Welcome: how often they send a heartbeat.
  absl::Duration heartbeat_interval = absl::Seconds(1);
  // A rank silent this long is declared lost and its stream cancelled.
  absl::Duration heartbeat_timeout = absl::Seconds(defaults::kHeartbeatTimeoutSeconds);
  // What the router serves, when set (0: learnt from the first
  // registration, for tests): groups 0 .. num_groups - 1 of world_size ranks
  // with this block size. A registration that differs is refused, so no
  // registration can redefine a group.
  uint32_t num_groups = 0;
  uint32_t world_size = 0;
  // The base mode's Ulysses degree (0: learnt, as world_size).
  uint32_t sp_degree = 0;
  uint32_t block_size = 0;
  // The digest of the router's config.json (common/fingerprint.h): a rank
  // that loaded another config is refused. Unset: any config the
  // registered ranks agree on (tests).
  std::optional<uint64_t> config_digest;
  // Pins the model's weights digest (--expected_weights_digest): a group
  // whose ranks' weights make another digest is refused when it completes.
  std::optional<uint64_t> expected_weights_digest;
  // Every control stream must carry it (common/security.h): one without is
  // refused with InternalTokenRefusal before its registration is read.
  std::string internal_token;
  // When set, every token id (and alternative) a leader returns must lie in
  // [0, vocab_size) and every log-probability be a number <= 0: anything
  // else fails the step, as a broken rank's error would.
  int64_t vocab_size = 0;
};

class WorkerHub final : public v1::internal::Worker::CallbackService {
 public:
  // `on_generation(group, generation, tickets)` runs when a group gets a new
  // generation (to advance the rendezvous store), before ranks learn it:
  // `tickets` holds each rank's rendezvous ticket, sent to it alone in its
  // Welcome.
  using GenerationHook = std::function<void(uint32_t group, uint64_t generation,
                                            std::map<uint32_t, std::string> tickets)>;
  explicit WorkerHub(GenerationHook on_generation = nullptr, WorkerHubOptions options = {});
  ~WorkerHub() override;

  grpc::ServerBidiReactor<v1::internal::WorkerMessage, v1::internal::RouterMessage>* Connect(
      grpc::CallbackServerContext* ctx) override;

  // Waits until `world_size` ranks of `group` are registered (the group is
  // formed, or forming, under a generation).
  absl::Status WaitForGroup(uint32_t group, uint32_t world_size, absl::Duration timeout);
  // Waits until every rank of the group's current generation reported its
  // communicators formed. FAILED_PRECONDITION when one reported it could
  // not (the hub re-forms the group a second later); DEADLINE_EXCEEDED
  // naming the ranks not heard from after `timeout`.
  absl::Status WaitFormed(uint32_t group, absl::Duration timeout);
  // What a rank of the current generation reported when its communicators
  // did not form; OK while none did.
  absl::Status FormationError(uint32_t group);
  // What a rank reported when it (last) registered, less its weights report.
  absl::StatusOr<v1::internal::Register> Registration(uint32_t group, uint32_t rank);
  // The weights digest (16 hex digits) of the model the group last formed
  // with; "" before it first formed.
  std::string WeightsDigest(uint32_t group);
  // The group's current generation (0 before it first formed).
  uint64_t Generation(uint32_t group);
  // Ranks of the group whose control stream is open and on time.
  std::vector<uint32_t> ConnectedRanks(uint32_t group);
  // Sends `plan` (its generation set to the group's) to every rank of the
  // group; UNAVAILABLE, naming the missing ranks and why, when the group is
  // incomplete; FAILED_PRECONDITION with two steps started and not waited
  // for (the ranks run them in order).
  absl::Status StartStep(uint32_t group, v1::internal::StepPlan plan);
  // Waits for every rank's result of the oldest started step (at most two
  // are started and not waited for: the running one and one planned ahead
  // of its results), in rank order, and tells when the last one arrived.
  // Any failure voids the other started step too. UNAVAILABLE, naming the ranks and why,
  // when the group loses a rank; DEADLINE_EXCEEDED after `timeout`;
  // INTERNAL when a rank reports an error. Any failure re-forms a complete
  // group under a new generation, so the ranks' sequences are gone: the
  // caller re-queues them.
  struct StepOutcome {
    std::vector<v1::internal::StepResult> results;
    absl::Time completed;
  };
  absl::StatusOr<StepOutcome> WaitStep(uint32_t group, absl::Duration timeout);
  // Forgets the group's started steps (after a failure elsewhere): their
  // results, if any come, are ignored.
  void AbandonSteps(uint32_t group);
  // Tells every rank of the group the router is going: `reconnect`, to keep
  // its weights and connect again (a restart); else to exit.
  void Shutdown(uint32_t group, const std::string& reason, bool reconnect);

 private:
  class Stream;
  struct Group {
    uint32_t world_size = 0;  // from the first registration
    uint32_t sp_degree = 0;
    uint32_t block_size = 0;
    std::map<uint32_t, WeightsReport> weights;  // rank -> what it read
    std::optional<uint64_t> weights_digest;     // when it last formed
    uint64_t generation = 0;
    std::map<uint32_t, Stream*> ranks;
    std::map<uint32_t, v1::internal::Register> registrations;
    std::map<uint32_t, absl::Time> last_seen;
    std::set<uint32_t> unread_logged;      // ranks heard by the kernel, not yet by the router
    std::map<uint32_t, std::string> lost;  // rank -> why, until it registers again
    std::set<uint32_t> formed;             // ranks of this generation that formed
    std::string formation_error;           // why one of them did not
    std::optional<absl::Time> reform_at;   // after a failed formation
    // Steps sent and not yet waited for, oldest first (two when the router
    // planned one ahead), and each one's results and when the last came.
    std::deque<uint64_t> steps_in_flight;
    std::map<uint64_t, std::map<uint32_t, v1::internal::StepResult>> results;
    std::map<uint64_t, absl::Time> last_result;
  };

  void OnRegister(Stream* stream, const v1::internal::Register& reg);
  // Why `report` cannot serve beside the registered ranks (the router's
  // config, every registered rank's tensors and pieces); "" if it can.
  std::string WeightsRefusal(const WeightsReport& report) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The complete group's weights digest, or why its ranks cannot serve
  // together (a piece nobody read, a digest other than the pinned one).
  absl::StatusOr<uint64_t> GroupWeightsDigest(const Group& group) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnMessage(Stream* stream, const v1::internal::WorkerMessage& message);
  void OnGone(Stream* stream);
  // A new generation for a complete group: every rank is welcomed with it.
  void Reform(uint32_t group_id, Group& group) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Lose(uint32_t group_id, Group& group, uint32_t rank, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // FAILED_PRECONDITION with why a rank of the current generation did not
  // form; OK while none reported it.
  absl::Status Formation(uint32_t group_id, const Group& group) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // "rank 1 (its control stream closed)", for every rank of the group missing.
  std::string Missing(const Group& group) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Watchdog();
  // What is wrong with a leader's sampled tokens ("" when nothing).
  std::string CheckSampled(const v1::internal::StepResult& result) const;

  GenerationHook on_generation_;
  WorkerHubOptions options_;
  absl::Mutex mu_;
  std::map<uint32_t, Group> groups_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watchdog_;
};

}  // namespace shift
