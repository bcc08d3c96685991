// The rendezvous key/value store the router serves to worker ranks
// (shift.v1.internal.Rendezvous), on gRPC's callback API. Keys live in the
// namespace of (group, generation); advancing a group's generation drops the
// old keys and refuses requests that still name them. A Get for keys not yet
// set waits (without holding a thread) until they are, or until its timeout.
// What a caller can make it hold is bounded: only the router's groups exist,
// each holds at most kMaxRendezvousKeys keys (values and counters) of
// bounded size, and at most kMaxWaiters Gets wait at once
// (RESOURCE_EXHAUSTED past these). When the router issues tickets with a
// generation (AdvanceGeneration), only calls carrying one of them are
// answered (PERMISSION_DENIED otherwise), and a key one rank set no other
// may overwrite: a holder of the internal token who is not a welcomed rank
// of that generation can neither read nor write its rendezvous.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "shift/v1/internal.grpc.pb.h"

namespace shift {

class RendezvousService final : public v1::internal::Rendezvous::CallbackService {
 public:
  // Groups 0 .. num_groups-1 exist (the router's --groups). With
  // `internal_token`, every call must carry it (common/security.h) or is
  // refused with InternalTokenRefusal before anything else is looked at.
  explicit RendezvousService(uint32_t num_groups = 1, std::string internal_token = "");
  static constexpr size_t kMaxWaiters = 4096;
  // The keys of all waiting Gets together (real groups wait on a few short
  // keys per rank).
  static constexpr size_t kMaxWaitingKeyBytes = size_t{4} << 20;
  ~RendezvousService() override;

  // Moves `group` to `generation` (must not go back): its keys and counters
  // of older generations are dropped and their waiters fail. `tickets`:
  // each rank's ticket for the generation (Welcome's rendezvous_ticket);
  // none, for tests, lets any caller in.
  void AdvanceGeneration(uint32_t group, uint64_t generation,
                         std::map<uint32_t, std::string> tickets = {});

  grpc::ServerUnaryReactor* Set(grpc::CallbackServerContext* ctx,
                                const v1::internal::SetRequest* request,
                                v1::internal::SetResponse* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx,
                                const v1::internal::GetRequest* request,
                                v1::internal::GetResponse* response) override;
  grpc::ServerUnaryReactor* Add(grpc::CallbackServerContext* ctx,
                                const v1::internal::AddRequest* request,
                                v1::internal::AddResponse* response) override;
  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* ctx,
                                  const v1::internal::CheckRequest* request,
                                  v1::internal::CheckResponse* response) override;

 private:
  // A reactor finished with InternalTokenRefusal when the call lacks the
  // token; nullptr when it has it.
  grpc::ServerUnaryReactor* Refused(grpc::CallbackServerContext* ctx);

  const std::string internal_token_;
  class GetReactor;
  struct Scope {
    uint64_t generation = 0;
    absl::flat_hash_map<std::string, std::string> values;
    absl::flat_hash_map<std::string, int64_t> counters;
    std::map<uint32_t, std::string> tickets;             // rank -> its ticket; empty: no check
    absl::flat_hash_map<std::string, uint32_t> writers;  // value key -> the rank that set it
  };

  // OK, or FAILED_PRECONDITION for a generation older than the group's,
  // NOT_FOUND for a group the router does not have, PERMISSION_DENIED
  // without a ticket of the generation. `rank`: the ticket's rank (or none).
  grpc::Status Enter(const v1::internal::StoreScope& scope, std::optional<uint32_t>* rank = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Enter, then checks a write of `key` (with a value of `value_bytes`)
  // against the bounds and, for a value, its writer.
  grpc::Status EnterWrite(const v1::internal::StoreScope& scope, const std::string& key,
                          size_t value_bytes, bool counter, std::optional<uint32_t>* rank)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Finishes waiters whose keys all exist (or whose scope went stale).
  void WakeWaiters(uint32_t group) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Forget(GetReactor* waiter) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpireLoop();

  const uint32_t num_groups_;
  absl::Mutex mu_;
  std::map<uint32_t, Scope> groups_ ABSL_GUARDED_BY(mu_);
  std::vector<GetReactor*> waiters_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread expirer_;
};

}  // namespace shift
