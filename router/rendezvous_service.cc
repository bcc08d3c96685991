#include "router/rendezvous_service.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/defaults.h"
#include "common/security.h"

namespace shift {

using v1::internal::StoreScope;

namespace {

// The first keys of `keys`, for a status message: gRPC refuses trailing
// metadata over 8 KiB, so 256 keys of 256 bytes named in full reached the
// client as RESOURCE_EXHAUSTED instead of the status sent.
std::string NameKeys(const std::vector<std::string>& keys) {
  constexpr size_t kNamed = 8;
  std::vector<std::string> named(keys.begin(), keys.begin() + std::min(keys.size(), kNamed));
  std::string out = absl::StrJoin(named, ", ");
  if (keys.size() > kNamed) absl::StrAppend(&out, " and ", keys.size() - kNamed, " more");
  return out;
}

}  // namespace

// A Get waiting for keys: parked in waiters_ until they exist, its deadline
// passes, its scope goes stale, or the client cancels. Finished exactly once,
// always under mu_ and after leaving waiters_.
class RendezvousService::GetReactor final : public grpc::ServerUnaryReactor {
 public:
  GetReactor(RendezvousService* service, const v1::internal::GetRequest* request,
             v1::internal::GetResponse* response)
      : service_(service),
        request_(request),
        response_(response),
        deadline_(absl::Now() + absl::Milliseconds(request->timeout_ms())) {
    for (const std::string& key : request->keys()) key_bytes_ += key.size();
  }

  void OnCancel() override {
    absl::MutexLock lock(&service_->mu_);
    if (finished_) return;
    service_->Forget(this);
    Done(grpc::Status(grpc::StatusCode::CANCELLED, "client cancelled the rendezvous wait"));
  }
  void OnDone() override { delete this; }

  const StoreScope& scope() const { return request_->scope(); }
  // What this Get holds while it waits: its keys.
  size_t key_bytes() const { return key_bytes_; }
  absl::Time deadline() const { return deadline_; }

  // Keys of the request not set in `scope`.
  std::vector<std::string> Missing(const Scope& scope) const {
    std::vector<std::string> missing;
    for (const std::string& key : request_->keys()) {
      if (!scope.values.contains(key)) missing.push_back(key);
    }
    return missing;
  }
  void Answer(const Scope& scope) {
    for (const std::string& key : request_->keys()) response_->add_values(scope.values.at(key));
    Done(grpc::Status::OK);
  }
  void Done(const grpc::Status& status) {
    finished_ = true;
    Finish(status);
  }

 private:
  RendezvousService* service_;
  const v1::internal::GetRequest* request_;
  v1::internal::GetResponse* response_;
  absl::Time deadline_;
  size_t key_bytes_ = 0;
  bool finished_ = false;
};

RendezvousService::RendezvousService(uint32_t num_groups, std::string internal_token)
    : internal_token_(std::move(internal_token)),
      num_groups_(num_groups),
      expirer_([this] { ExpireLoop(); }) {}

grpc::ServerUnaryReactor* RendezvousService::Refused(grpc::CallbackServerContext* ctx) {
  if (HasInternalToken(*ctx, internal_token_)) return nullptr;
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(InternalTokenRefusal());
  return reactor;
}

RendezvousService::~RendezvousService() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  expirer_.join();
}

void RendezvousService::Forget(GetReactor* waiter) {
  waiters_.erase(std::remove(waiters_.begin(), waiters_.end(), waiter), waiters_.end());
}

grpc::Status RendezvousService::Enter(const StoreScope& scope, std::optional<uint32_t>* rank) {
  if (scope.group() >= num_groups_) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("group ", scope.group(), " does not exist"));
  }
  Scope& group = groups_[scope.group()];
  if (scope.generation() < group.generation) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("generation ", scope.generation(), " of group ", scope.group(),
                     " is stale (the group is at generation ", group.generation, ")"));
  }
  if (scope.generation() > group.generation) {
    // Generations move only by the router's rule (AdvanceGeneration, when a
    // group re-forms): a caller's value never moves one.
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("generation ", scope.generation(), " of group ", scope.group(),
                     " has not been issued (the group is at generation ", group.generation, ")"));
  }
  if (!group.tickets.empty()) {
    std::optional<uint32_t> holder;
    for (const auto& [r, ticket] : group.tickets) {
      if (ConstantTimeEqual(ticket, scope.ticket())) holder = r;
    }
    if (!holder) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          absl::StrCat("the rendezvous of group ", scope.group(), " generation ",
                                       scope.generation(),
                                       " answers only its ranks (the ticket each was welcomed "
                                       "with)"));
    }
    if (rank != nullptr) *rank = holder;
  }
  return grpc::Status::OK;
}

grpc::Status RendezvousService::EnterWrite(const StoreScope& scope, const std::string& key,
                                           size_t value_bytes, bool counter,
                                           std::optional<uint32_t>* rank) {
  grpc::Status status = Enter(scope, rank);
  if (!status.ok()) return status;
  if (key.size() > static_cast<size_t>(defaults::kMaxRendezvousKeyBytes) ||
      value_bytes > static_cast<size_t>(defaults::kMaxRendezvousValueBytes)) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("keys hold at most ", defaults::kMaxRendezvousKeyBytes,
                                     " bytes and values ", defaults::kMaxRendezvousValueBytes));
  }
  const Scope& group = groups_[scope.group()];
  if (!counter && rank->has_value()) {
    // A rank's published address or id is its own: no other rank replaces it.
    auto writer = group.writers.find(key);
    if (writer != group.writers.end() && writer->second != **rank) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          absl::StrCat("rendezvous key ", key, " of group ", scope.group(),
                                       " was set by rank ", writer->second));
    }
  }
  const bool exists = counter ? group.counters.contains(key) : group.values.contains(key);
  if (!exists && static_cast<int64_t>(group.values.size() + group.counters.size()) >=
                     defaults::kMaxRendezvousKeys) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("group ", scope.group(), " already holds ",
                                     defaults::kMaxRendezvousKeys, " keys"));
  }
  return grpc::Status::OK;
}

void RendezvousService::AdvanceGeneration(uint32_t group_id, uint64_t generation,
                                          std::map<uint32_t, std::string> tickets) {
  absl::MutexLock lock(&mu_);
  Scope& group = groups_[group_id];
  if (generation <= group.generation) return;
  group.generation = generation;
  group.values.clear();
  group.counters.clear();
  group.writers.clear();
  group.tickets = std::move(tickets);
  WakeWaiters(group_id);
}

void RendezvousService::WakeWaiters(uint32_t group) {
  const Scope& scope = groups_[group];
  std::vector<GetReactor*> still;
  for (GetReactor* waiter : waiters_) {
    if (waiter->scope().group() != group) {
      still.push_back(waiter);
    } else if (waiter->scope().generation() < scope.generation) {
      waiter->Done(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                absl::StrCat("group ", group, " moved to generation ",
                                             scope.generation, " while waiting")));
    } else if (waiter->Missing(scope).empty()) {
      waiter->Answer(scope);
    } else {
      still.push_back(waiter);
    }
  }
  waiters_.swap(still);
}

void RendezvousService::ExpireLoop() {
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(10))) {
    const absl::Time now = absl::Now();
    std::vector<GetReactor*> still;
    for (GetReactor* waiter : waiters_) {
      if (waiter->deadline() > now) {
        still.push_back(waiter);
        continue;
      }
      const auto missing = waiter->Missing(groups_[waiter->scope().group()]);
      waiter->Done(
          grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                       absl::StrCat("rendezvous keys never set in group ", waiter->scope().group(),
                                    " generation ", waiter->scope().generation(), ": ",
                                    NameKeys(missing), " (a rank did not show up)")));
    }
    waiters_.swap(still);
  }
  for (GetReactor* waiter : waiters_) {
    waiter->Done(grpc::Status(grpc::StatusCode::UNAVAILABLE, "rendezvous store shutting down"));
  }
  waiters_.clear();
}

grpc::ServerUnaryReactor* RendezvousService::Set(grpc::CallbackServerContext* ctx,
                                                 const v1::internal::SetRequest* request,
                                                 v1::internal::SetResponse*) {
  if (grpc::ServerUnaryReactor* refused = Refused(ctx)) return refused;
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  absl::MutexLock lock(&mu_);
  std::optional<uint32_t> rank;
  grpc::Status status =
      EnterWrite(request->scope(), request->key(), request->value().size(), false, &rank);
  if (status.ok()) {
    Scope& group = groups_[request->scope().group()];
    group.values[request->key()] = request->value();
    if (rank) group.writers[request->key()] = *rank;
    WakeWaiters(request->scope().group());
  }
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* RendezvousService::Get(grpc::CallbackServerContext* ctx,
                                                 const v1::internal::GetRequest* request,
                                                 v1::internal::GetResponse* response) {
  if (grpc::ServerUnaryReactor* refused = Refused(ctx)) return refused;
  auto* reactor = new GetReactor(this, request, response);
  absl::MutexLock lock(&mu_);
  grpc::Status status = Enter(request->scope());
  if (!status.ok()) {
    reactor->Done(status);
    return reactor;
  }
  // A key Set would refuse can never exist: such a Get is refused at once,
  // as Set refuses it, before it could wait holding it.
  for (const std::string& key : request->keys()) {
    if (key.size() > static_cast<size_t>(defaults::kMaxRendezvousKeyBytes)) {
      reactor->Done(grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat("keys hold at most ", defaults::kMaxRendezvousKeyBytes, " bytes")));
      return reactor;
    }
  }
  size_t waiting_bytes = reactor->key_bytes();
  for (const GetReactor* waiter : waiters_) waiting_bytes += waiter->key_bytes();
  const Scope& scope = groups_[request->scope().group()];
  const auto missing = reactor->Missing(scope);
  if (missing.empty()) {
    reactor->Answer(scope);
  } else if (request->timeout_ms() == 0) {
    reactor->Done(grpc::Status(grpc::StatusCode::NOT_FOUND,
                               absl::StrCat("keys not set: ", NameKeys(missing))));
  } else if (waiters_.size() >= kMaxWaiters ||
             request->keys_size() > defaults::kMaxRendezvousKeys ||
             waiting_bytes > kMaxWaitingKeyBytes) {
    reactor->Done(grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("at most ", kMaxWaiters, " Gets of at most ", defaults::kMaxRendezvousKeys,
                     " keys, ", kMaxWaitingKeyBytes, " bytes of keys in all, wait at once")));
  } else {
    waiters_.push_back(reactor);
  }
  return reactor;
}

grpc::ServerUnaryReactor* RendezvousService::Add(grpc::CallbackServerContext* ctx,
                                                 const v1::internal::AddRequest* request,
                                                 v1::internal::AddResponse* response) {
  if (grpc::ServerUnaryReactor* refused = Refused(ctx)) return refused;
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  absl::MutexLock lock(&mu_);
  std::optional<uint32_t> rank;
  grpc::Status status = EnterWrite(request->scope(), request->key(), 0, true, &rank);
  if (status.ok()) {
    int64_t& counter = groups_[request->scope().group()].counters[request->key()];
    counter += request->delta();
    response->set_value(counter);
  }
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* RendezvousService::Check(grpc::CallbackServerContext* ctx,
                                                   const v1::internal::CheckRequest* request,
                                                   v1::internal::CheckResponse* response) {
  if (grpc::ServerUnaryReactor* refused = Refused(ctx)) return refused;
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  absl::MutexLock lock(&mu_);
  grpc::Status status = Enter(request->scope());
  if (status.ok()) {
    const Scope& scope = groups_[request->scope().group()];
    for (const std::string& key : request->keys()) response->add_exists(scope.values.contains(key));
  }
  reactor->Finish(status);
  return reactor;
}

}  // namespace shift
