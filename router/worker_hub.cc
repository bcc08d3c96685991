#include "router/worker_hub.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/defaults.h"
#include "common/log.h"
#include "common/peer_socket.h"
#include "common/security.h"
#include "common/status.h"

namespace shift {

namespace rpc = v1::internal;

namespace {
// A rank's last generation is taken up to this (no wrap-around to 0).
constexpr uint64_t kMaxStartGeneration = uint64_t{1} << 62;
// Bounds on a weights report's tensors (a checkpoint's name is short).
constexpr size_t kMaxTensorName = 1024;
constexpr uint64_t kMaxTensorBytes = uint64_t{1} << 48;

// A rank's weights report, checked to be well formed, or why not: a forged
// one costs the router no more than its own size.
absl::StatusOr<WeightsReport> ParseWeightsReport(const rpc::WeightsReport& in) {
  if (in.piece_bytes() == 0) {
    return absl::InvalidArgumentError(
        "it sent no weights report (is its shift-worker older than the router?)");
  }
  if (in.piece_bytes() != kWeightsPieceBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("its weights report cuts tensors into ", in.piece_bytes(),
                     "-byte pieces, the router's into ", kWeightsPieceBytes,
                     " (run one shift version on the router and the ranks)"));
  }
  if (in.tensors().empty()) return absl::InvalidArgumentError("it reports reading no weights");
  WeightsReport out;
  out.config_digest = in.config_digest();
  out.headers_digest = in.headers_digest();
  out.piece_bytes = in.piece_bytes();
  for (const rpc::TensorPieces& t : in.tensors()) {
    auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat("its weights report is malformed: tensor \"",
                                                     t.name().substr(0, 64), "\" ", why));
    };
    if (t.name().empty() || t.name().size() > kMaxTensorName) {
      return bad(absl::StrCat("has a name of ", t.name().size(), " bytes"));
    }
    if (t.nbytes() > kMaxTensorBytes) return bad(absl::StrCat("claims ", t.nbytes(), " bytes"));
    if (t.index_size() != t.digest_size() || t.index().empty()) {
      return bad("has no pieces, or not one digest per piece");
    }
    const uint64_t count = PieceCount(t.nbytes(), kWeightsPieceBytes);
    auto [it, fresh] = out.tensors.try_emplace(t.name());
    if (!fresh) return bad("is reported twice");
    it->second.nbytes = t.nbytes();
    for (int i = 0; i < t.index_size(); ++i) {
      if (t.index(i) >= count || (i > 0 && t.index(i) <= t.index(i - 1))) {
        return bad(absl::StrCat("names piece ", t.index(i), " out of order or of ", count));
      }
      it->second.pieces.emplace_hint(it->second.pieces.end(), t.index(i), t.digest(i));
    }
  }
  return out;
}
}  // namespace

// One rank's stream: reads until the rank goes away; writes are queued with
// one in flight. Deletes itself when gRPC is done with it.
class WorkerHub::Stream final
    : public grpc::ServerBidiReactor<rpc::WorkerMessage, rpc::RouterMessage> {
 public:
  Stream(WorkerHub* hub, std::string peer) : peer(std::move(peer)), hub_(hub) {
    StartRead(&incoming_);
  }

  void Send(rpc::RouterMessage message) {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    outbox_.push_back(std::move(message));
    if (!writing_) WriteNext();
  }
  // Ends the stream from the router's side.
  void Close(const grpc::Status& status) {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    closed_ = true;
    Finish(status);
  }

  const std::string peer;  // as gRPC names it ("ipv4:127.0.0.1:41202")
  uint32_t group = 0, rank = 0;
  bool registered = false;
  // What the kernel has received from the rank, read or not, and when that
  // last grew (the watchdog's, under the hub's lock).
  int fd_hint = -1;
  uint64_t received = 0;
  absl::Time received_at = absl::InfinitePast();

  void OnReadDone(bool ok) override {
    if (!ok) {
      Close(grpc::Status::OK);
      return;
    }
    if (incoming_.has_register_()) {
      hub_->OnRegister(this, incoming_.register_());
    } else {
      hub_->OnMessage(this, incoming_);
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

  WorkerHub* hub_;
  rpc::WorkerMessage incoming_;
  absl::Mutex mu_;
  std::deque<rpc::RouterMessage> outbox_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

WorkerHub::WorkerHub(GenerationHook on_generation, WorkerHubOptions options)
    : on_generation_(std::move(on_generation)), options_(options) {
  watchdog_ = std::thread([this] { Watchdog(); });
}

WorkerHub::~WorkerHub() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  watchdog_.join();
}

namespace {
// A control stream without the internal token: ended at once, unread.
class RefusedStream final : public grpc::ServerBidiReactor<rpc::WorkerMessage, rpc::RouterMessage> {
 public:
  RefusedStream() { Finish(InternalTokenRefusal()); }
  void OnDone() override { delete this; }
};
}  // namespace

grpc::ServerBidiReactor<rpc::WorkerMessage, rpc::RouterMessage>* WorkerHub::Connect(
    grpc::CallbackServerContext* ctx) {
  if (!HasInternalToken(*ctx, options_.internal_token)) return new RefusedStream();
  return new Stream(this, ctx->peer());
}

void WorkerHub::OnRegister(Stream* stream, const rpc::Register& reg) {
  absl::MutexLock lock(&mu_);
  if (options_.num_groups != 0 && reg.group() >= options_.num_groups) {
    stream->Close(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                               absl::StrCat("group ", reg.group(),
                                            " does not exist (the router "
                                            "serves ",
                                            options_.num_groups, ")")));
    return;
  }
  Group& group = groups_[reg.group()];
  // What the group must match: the router's own values where it gave them,
  // else what its first rank registered with.
  const uint32_t world_size = options_.world_size != 0 ? options_.world_size : group.world_size;
  const uint32_t block_size = options_.block_size != 0 ? options_.block_size : group.block_size;
  // A rank that names no layout (0) runs pure SP.
  const uint32_t rank_sp = reg.sp_degree() != 0 ? reg.sp_degree() : reg.world_size();
  const uint32_t sp_degree = options_.sp_degree != 0 ? options_.sp_degree : group.sp_degree;
  std::string refusal;
  absl::StatusOr<WeightsReport> weights = ParseWeightsReport(reg.weights());
  if (reg.world_size() == 0 || reg.rank() >= reg.world_size()) {
    refusal = absl::StrCat("rank ", reg.rank(), " is outside a group of ", reg.world_size());
  } else if (world_size != 0 && reg.world_size() != world_size) {
    refusal =
        absl::StrCat("world size ", reg.world_size(), " differs from the group's ", world_size);
  } else if (!weights.ok()) {
    refusal = std::string(weights.status().message());
  } else if (std::string why = WeightsRefusal(*weights); !why.empty()) {
    // Names the first tensor that differs; no digest the router expects is
    // echoed (a refusal must not teach a caller what to register with).
    refusal = std::move(why);
  } else if (block_size != 0 && reg.block_size() != block_size) {
    refusal =
        absl::StrCat("block size ", reg.block_size(), " differs from the group's ", block_size);
  } else if (reg.kv_blocks() < 1 || reg.kv_blocks() > defaults::kMaxKvBlocks) {
    // The router holds state per block: an absurd count would exhaust it.
    refusal =
        absl::StrCat("kv_blocks ", reg.kv_blocks(), " is outside 1..", defaults::kMaxKvBlocks);
  } else if (sp_degree != 0 && rank_sp != sp_degree) {
    // Its shard of the weights is another layout's: every rank of a group
    // must be started with the router's --sp_degree.
    refusal = absl::StrCat("--sp_degree ", rank_sp, " differs from the group's ", sp_degree,
                           " (start every rank with the router's --sp_degree)");
  }
  if (!refusal.empty()) {
    stream->Close(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                               absl::StrCat("group ", reg.group(), ": ", refusal)));
    return;
  }
  auto old = group.ranks.find(reg.rank());
  if (old != group.ranks.end() &&
      absl::Now() - group.last_seen[reg.rank()] < options_.heartbeat_timeout) {
    // A rank that is connected and on time is never replaced: a restarted
    // rank gets in once its old connection closes or falls silent, and its
    // retries (this is not a refusal) bring it in then.
    stream->Close(grpc::Status(
        grpc::StatusCode::ALREADY_EXISTS,
        absl::StrCat("group ", reg.group(), " rank ", reg.rank(), " is registered and alive")));
    return;
  }
  group.world_size = reg.world_size();
  group.block_size = reg.block_size();
  group.sp_degree = rank_sp;
  if (old != group.ranks.end()) {
    // Registered but silent past the heartbeat timeout (the watchdog has not
    // come round yet): the newcomer takes its place.
    old->second->Close(
        grpc::Status(grpc::StatusCode::ABORTED, "replaced by a newer registration of this rank"));
    Lose(reg.group(), group, reg.rank(), "replaced by a newer registration");
  }
  stream->group = reg.group();
  stream->rank = reg.rank();
  stream->registered = true;
  group.ranks[reg.rank()] = stream;
  group.registrations[reg.rank()] = reg;
  group.registrations[reg.rank()].clear_weights();
  group.weights[reg.rank()] = *std::move(weights);
  group.last_seen[reg.rank()] = absl::Now();
  group.lost.erase(reg.rank());
  // A rank that formed under an earlier router (this one restarted): the
  // next generation is newer than any it knew (bounded: no wrap-around).
  group.generation =
      std::max(group.generation, std::min(reg.last_generation(), kMaxStartGeneration));
  Log(LogLevel::kInfo, "router",
      absl::StrCat("group ", reg.group(), " rank ", reg.rank(), " registered"),
      {{"event", "rank_registered"}, {"group", reg.group()}, {"rank", reg.rank()}});
  // Generation 0: registered, waiting for the rest of the group.
  rpc::RouterMessage ack;
  ack.mutable_welcome()->set_heartbeat_interval_seconds(
      absl::ToDoubleSeconds(options_.heartbeat_interval));
  stream->Send(std::move(ack));
  if (group.ranks.size() < group.world_size) return;
  absl::StatusOr<uint64_t> digest = GroupWeightsDigest(group);
  if (!digest.ok()) {
    // Every rank agreed with the others, but together they do not make the
    // model the router serves: none of them serves.
    const std::string why(digest.status().message());
    Log(LogLevel::kWarning, "router", absl::StrCat("group ", reg.group(), " refused: ", why),
        {{"event", "group_refused"}, {"group", reg.group()}, {"reason", why}});
    for (auto& [rank, member] : group.ranks) {
      member->Close(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                 absl::StrCat("group ", reg.group(), ": ", why)));
      group.lost[rank] = why;
      group.weights.erase(rank);
    }
    group.ranks.clear();
    return;
  }
  group.weights_digest = *digest;
  Reform(reg.group(), group);
}

std::string WorkerHub::WeightsRefusal(const WeightsReport& report) {
  if (options_.config_digest && report.config_digest != *options_.config_digest) {
    return "its config.json differs from the router's: every rank must load the model the router "
           "serves";
  }
  // Every registered rank of every group serves the same model (a rank that
  // restarts with it agrees with its own registration, if that lingers).
  for (const auto& [other_group, group] : groups_) {
    for (const auto& [other_rank, stream] : group.ranks) {
      auto theirs = group.weights.find(other_rank);
      if (theirs == group.weights.end()) continue;
      std::string why = WeightsDifference(
          report, theirs->second, absl::StrCat("group ", other_group, " rank ", other_rank));
      if (!why.empty()) return why;
    }
  }
  return "";
}

absl::StatusOr<uint64_t> WorkerHub::GroupWeightsDigest(const Group& group) const {
  std::vector<const WeightsReport*> reports;
  for (const auto& [rank, stream] : group.ranks) reports.push_back(&group.weights.at(rank));
  SHIFT_ASSIGN_OR_RETURN(uint64_t digest, CombinedWeightsDigest(reports));
  if (options_.expected_weights_digest && digest != *options_.expected_weights_digest) {
    return absl::FailedPreconditionError(
        absl::StrCat("its ranks' weights digest is ", DigestHex(digest),
                     ", not the one the router's --expected_weights_digest pins"));
  }
  return digest;
}

std::string WorkerHub::WeightsDigest(uint32_t group) {
  absl::MutexLock lock(&mu_);
  const std::optional<uint64_t>& digest = groups_[group].weights_digest;
  return digest ? DigestHex(*digest) : "";
}

void WorkerHub::Reform(uint32_t group_id, Group& group) {
  ++group.generation;
  group.formed.clear();
  group.formation_error.clear();
  group.reform_at.reset();
  // Each rank's ticket to the generation's rendezvous: the store answers
  // only these, so no other holder of the internal token can read or
  // replace what the ranks publish there.
  std::map<uint32_t, std::string> tickets;
  for (auto& [rank, stream] : group.ranks) {
    absl::StatusOr<std::string> ticket = RandomHex(16);
    tickets[rank] = ticket.ok() ? *ticket : "";
  }
  if (on_generation_) on_generation_(group_id, group.generation, tickets);
  for (auto& [rank, stream] : group.ranks) {
    rpc::RouterMessage welcome;
    welcome.mutable_welcome()->set_generation(group.generation);
    welcome.mutable_welcome()->set_heartbeat_interval_seconds(
        absl::ToDoubleSeconds(options_.heartbeat_interval));
    welcome.mutable_welcome()->set_rendezvous_ticket(tickets[rank]);
    stream->Send(welcome);
  }
}

void WorkerHub::OnMessage(Stream* stream, const rpc::WorkerMessage& message) {
  absl::MutexLock lock(&mu_);
  if (!stream->registered) return;
  Group& group = groups_[stream->group];
  auto it = group.ranks.find(stream->rank);
  if (it == group.ranks.end() || it->second != stream) return;  // lost or replaced
  group.last_seen[stream->rank] = absl::Now();
  group.unread_logged.erase(stream->rank);
  if (message.has_formed() && message.formed().generation() == group.generation) {
    if (message.formed().error().empty()) {
      group.formed.insert(stream->rank);
    } else if (group.formation_error.empty()) {
      group.formation_error =
          absl::StrCat("rank ", stream->rank, ": ", message.formed().error().substr(0, 1024));
      Log(LogLevel::kWarning, "router",
          absl::StrCat("group ", stream->group, " generation ", group.generation, " did not form (",
                       group.formation_error, "); re-forming in 1 s"),
          {{"event", "group_not_formed"},
           {"group", stream->group},
           {"generation", group.generation},
           {"reason", group.formation_error}});
      group.reform_at = absl::Now() + absl::Seconds(1);
    }
  }
  if (message.has_result()) {
    const uint64_t step = message.result().step_id();
    if (std::find(group.steps_in_flight.begin(), group.steps_in_flight.end(), step) !=
        group.steps_in_flight.end()) {
      group.results[step][stream->rank] = message.result();
      group.last_result[step] = group.last_seen[stream->rank];
    }
  }
}

void WorkerHub::Lose(uint32_t group_id, Group& group, uint32_t rank, const std::string& why) {
  group.ranks.erase(rank);
  group.lost[rank] = why;
  Log(LogLevel::kWarning, "router",
      absl::StrCat("group ", group_id, " lost rank ", rank, ": ", why),
      {{"event", "rank_lost"},
       {"group", group_id},
       {"rank", rank},
       {"generation", group.generation},
       {"reason", why}});
}

void WorkerHub::OnGone(Stream* stream) {
  absl::MutexLock lock(&mu_);
  if (!stream->registered) return;
  Group& group = groups_[stream->group];
  auto it = group.ranks.find(stream->rank);
  if (it != group.ranks.end() && it->second == stream) {
    Lose(stream->group, group, stream->rank, "its control stream closed");
  }
}

void WorkerHub::Watchdog() {
  absl::MutexLock lock(&mu_);
  auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
  const absl::Duration tick = std::min(options_.heartbeat_interval, options_.heartbeat_timeout / 4);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping), tick)) {
    const absl::Time now = absl::Now();
    for (auto& [group_id, group] : groups_) {
      // A generation that did not form is retried while the group is whole.
      if (group.reform_at && now >= *group.reform_at && group.steps_in_flight.empty() &&
          group.ranks.size() >= group.world_size) {
        Reform(group_id, group);
      }
      std::vector<uint32_t> silent;
      for (auto& [rank, stream] : group.ranks) {
        // A rank is silent when neither the router read anything from it nor
        // the kernel received anything from it for the timeout: its
        // heartbeats can wait unread while a flood of the public port holds
        // gRPC's threads (they serve both ports), and then the router is
        // behind, not the rank.
        if (std::optional<uint64_t> received = ReceivedBytes(stream->peer, &stream->fd_hint);
            received && *received != stream->received) {
          stream->received = *received;
          stream->received_at = now;
        }
        const absl::Time read_at = group.last_seen[rank];
        if (now - std::max(read_at, stream->received_at) > options_.heartbeat_timeout) {
          silent.push_back(rank);
        } else if (now - read_at > options_.heartbeat_timeout &&
                   group.unread_logged.insert(rank).second) {
          Log(LogLevel::kWarning, "router",
              absl::StrCat("group ", group_id, " rank ", rank,
                           ": its messages arrive but wait unhandled; the router is behind"),
              {{"event", "router_behind"},
               {"group", group_id},
               {"rank", rank},
               {"seconds_unhandled", absl::ToDoubleSeconds(now - read_at)}});
        }
      }
      for (uint32_t rank : silent) {
        const std::string why = absl::StrFormat("no heartbeat for %.1f s",
                                                absl::ToDoubleSeconds(now - group.last_seen[rank]));
        group.ranks[rank]->Close(grpc::Status(grpc::StatusCode::UNAVAILABLE, why));
        Lose(group_id, group, rank, why);
      }
    }
  }
}

std::string WorkerHub::Missing(const Group& group) const {
  std::vector<std::string> missing;
  for (uint32_t r = 0; r < group.world_size; ++r) {
    if (group.ranks.count(r)) continue;
    auto why = group.lost.find(r);
    missing.push_back(absl::StrCat(
        "rank ", r, " (", why == group.lost.end() ? "never registered" : why->second, ")"));
  }
  return absl::StrJoin(missing, ", ");
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

absl::Status WorkerHub::WaitFormed(uint32_t group_id, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  Group& group = groups_[group_id];
  auto settled = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !group.formation_error.empty() || (group.generation > 0 && group.world_size > 0 &&
                                              group.formed.size() >= group.world_size);
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&settled), timeout)) {
    std::vector<std::string> waiting;
    for (uint32_t r = 0; r < group.world_size; ++r) {
      if (!group.formed.count(r)) waiting.push_back(absl::StrCat(r));
    }
    return absl::DeadlineExceededError(
        absl::StrCat("group ", group_id, " generation ", group.generation, ": rank(s) ",
                     absl::StrJoin(waiting, ", "), " have not formed yet"));
  }
  return Formation(group_id, group);
}

absl::Status WorkerHub::FormationError(uint32_t group_id) {
  absl::MutexLock lock(&mu_);
  return Formation(group_id, groups_[group_id]);
}

absl::Status WorkerHub::Formation(uint32_t group_id, const Group& group) const {
  if (group.formation_error.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("group ", group_id, " generation ",
                                                    group.generation,
                                                    " did not form: ", group.formation_error));
}

absl::StatusOr<rpc::Register> WorkerHub::Registration(uint32_t group, uint32_t rank) {
  absl::MutexLock lock(&mu_);
  auto& regs = groups_[group].registrations;
  if (!regs.count(rank)) return absl::NotFoundError(absl::StrCat("rank ", rank, " not registered"));
  return regs[rank];
}

uint64_t WorkerHub::Generation(uint32_t group) {
  absl::MutexLock lock(&mu_);
  return groups_[group].generation;
}

std::vector<uint32_t> WorkerHub::ConnectedRanks(uint32_t group) {
  absl::MutexLock lock(&mu_);
  std::vector<uint32_t> ranks;
  for (const auto& [rank, stream] : groups_[group].ranks) ranks.push_back(rank);
  return ranks;
}

absl::Status WorkerHub::StartStep(uint32_t group_id, rpc::StepPlan plan) {
  // Streams are only used under mu_: OnGone (under mu_) runs before one is
  // deleted.
  absl::MutexLock lock(&mu_);
  Group& group = groups_[group_id];
  if (group.world_size == 0 || group.ranks.size() < group.world_size) {
    return absl::UnavailableError(
        absl::StrCat("group ", group_id, " step ", plan.step_id(), ": the group is incomplete: ",
                     group.world_size == 0 ? "no rank registered" : Missing(group)));
  }
  plan.set_generation(group.generation);
  rpc::RouterMessage message;
  *message.mutable_plan() = std::move(plan);
  if (group.steps_in_flight.size() >= 2) {
    return absl::FailedPreconditionError(absl::StrCat(
        "group ", group_id, " step ", message.plan().step_id(), ": two steps are in flight"));
  }
  group.steps_in_flight.push_back(message.plan().step_id());
  group.results.erase(message.plan().step_id());
  for (auto& [rank, stream] : group.ranks) stream->Send(message);
  return absl::OkStatus();
}

absl::StatusOr<WorkerHub::StepOutcome> WorkerHub::WaitStep(uint32_t group_id,
                                                           absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  Group& group = groups_[group_id];
  if (group.steps_in_flight.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("group ", group_id, ": no step started"));
  }
  const uint64_t step = group.steps_in_flight.front();
  const std::string where = absl::StrCat("group ", group_id, " step ", step);
  const size_t world = group.world_size;
  auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return group.results[step].size() >= world || group.ranks.size() < world;
  };
  const bool in_time = mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  std::map<uint32_t, rpc::StepResult> results = std::move(group.results[step]);
  const absl::Time completed = group.last_result[step];
  group.steps_in_flight.pop_front();
  group.results.erase(step);
  group.last_result.erase(step);
  // A failure voids the step started after this one: the group re-forms.
  auto void_the_rest = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    group.steps_in_flight.clear();
    group.results.clear();
    group.last_result.clear();
  };
  if (group.ranks.size() < world) {
    void_the_rest();
    return absl::UnavailableError(absl::StrCat(where, ": lost ", Missing(group)));
  }
  if (!in_time) {
    std::vector<std::string> late;
    for (auto& [rank, stream] : group.ranks) {
      if (!results.count(rank)) late.push_back(absl::StrCat(rank));
    }
    void_the_rest();
    Reform(group_id, group);
    return absl::DeadlineExceededError(absl::StrCat(where, ": rank(s) ", absl::StrJoin(late, ", "),
                                                    " did not answer within ",
                                                    absl::FormatDuration(timeout)));
  }
  std::vector<std::string> errors;
  StepOutcome outcome;
  outcome.completed = completed;
  for (auto& [rank, result] : results) {
    if (!result.error().empty())
      errors.push_back(absl::StrCat("rank ", rank, ": ", result.error()));
    if (rank == 0 && result.error().empty()) {
      if (std::string wrong = CheckSampled(result); !wrong.empty()) {
        errors.push_back(absl::StrCat("rank 0 returned ", wrong));
      }
    }
    outcome.results.push_back(std::move(result));
  }
  if (!errors.empty()) {
    void_the_rest();
    Reform(group_id, group);
    return absl::InternalError(absl::StrCat(where, " failed: ", absl::StrJoin(errors, "; ")));
  }
  return outcome;
}

void WorkerHub::AbandonSteps(uint32_t group_id) {
  absl::MutexLock lock(&mu_);
  Group& group = groups_[group_id];
  group.steps_in_flight.clear();
  group.results.clear();
  group.last_result.clear();
}

std::string WorkerHub::CheckSampled(const rpc::StepResult& result) const {
  const int64_t vocab = options_.vocab_size;
  auto bad_logprob = [](float logprob) { return !(logprob <= 1e-3f); };  // NaN included
  for (const rpc::SampledToken& t : result.sampled()) {
    if (vocab > 0 && (t.token_id() < 0 || t.token_id() >= vocab)) {
      return absl::StrCat("token id ", t.token_id(), " outside the vocabulary of ", vocab);
    }
    if (bad_logprob(t.logprob())) return absl::StrCat("log-probability ", t.logprob());
    for (const v1::TopLogprob& alt : t.top()) {
      if (vocab > 0 && (alt.token_id() < 0 || alt.token_id() >= vocab)) {
        return absl::StrCat("alternative id ", alt.token_id(), " outside the vocabulary of ",
                            vocab);
      }
      if (bad_logprob(alt.logprob())) return absl::StrCat("log-probability ", alt.logprob());
    }
  }
  return "";
}

void WorkerHub::Shutdown(uint32_t group_id, const std::string& reason, bool reconnect) {
  rpc::RouterMessage message;
  message.mutable_shutdown()->set_reason(reason);
  message.mutable_shutdown()->set_reconnect(reconnect);
  absl::MutexLock lock(&mu_);
  for (auto& [rank, stream] : groups_[group_id].ranks) stream->Send(message);
}

}  // namespace shift
