// Every default a user can change, written once: the flags of each binary
// and the option structs (EngineOptions, SchedulerConfig, RouterOptions,
// RankOptions) read them from here, so a binary and a library never
// disagree about what "unset" means.
#pragma once

#include <cstdint>

namespace shift::defaults {

// KV cache.
inline constexpr int64_t kKvCacheBytes = int64_t{256} << 20;  // per rank, all layers
inline constexpr int64_t kBlockSize = 16;                     // tokens per KV block
// Scheduling (vLLM's names and meanings).
inline constexpr int64_t kMaxNumBatchedTokens = 2048;  // tokens per step, all sequences
inline constexpr int64_t kMaxNumSeqs = 256;            // sequences per step
inline constexpr int64_t kMaxModelLen = 4096;          // prompt + max_tokens per request
inline constexpr int64_t kMaxQueuedRequests = 1024;    // waiting requests before RESOURCE_EXHAUSTED
// The shift policy: SP above this many scheduled tokens (CPU builds).
inline constexpr int64_t kShiftThreshold = 256;
// The compute device of a rank (--device): cpu, the deterministic reference.
inline constexpr char kDevice[] = "cpu";
// Compute threads per rank; results do not depend on it.
inline constexpr int kThreads = 2;
// Timeouts, in seconds.
inline constexpr double kStepTimeoutSeconds = 120;      // a step before its group re-forms
inline constexpr double kHeartbeatTimeoutSeconds = 5;   // worker silence before a rank is lost
inline constexpr double kDrainTimeoutSeconds = 30;      // open requests at SIGTERM
inline constexpr int64_t kRendezvousTimeoutMs = 60000;  // a group's other ranks
// A worker without a router waits this long for one; 0: until its own signal
// (a rollout restarts the router while the ranks keep their weights).
inline constexpr double kReconnectTimeoutSeconds = 0;
// Moves of a request to another group (its own lost a rank) before it
// fails with UNAVAILABLE.
inline constexpr int kRequeueLimit = 3;
// A stream whose client stops reading: deltas queued before its request
// pauses, and seconds paused before it is cancelled with RESOURCE_EXHAUSTED.
inline constexpr int64_t kMaxUndeliveredDeltas = 64;
inline constexpr int kOutputThreads = 4;  // the router's output side
inline constexpr double kStalledStreamTimeoutSeconds = 30;
// Concurrent calls per HTTP/2 connection to a gRPC port: above what one
// router admits from a client at the defaults (1,024 waiting + 256 running
// per group), so only a connection that holds streams it does not use meets it.
inline constexpr int32_t kMaxStreamsPerConnection = 2048;
// Free heap the router keeps before giving the rest back to the system.
inline constexpr uint64_t kFreeHeapKeptBytes = 64ull << 20;
// What one request may carry (the router's memory is bounded by these
// times the requests it holds; README "Memory bounds").
inline constexpr int64_t kMaxRequestBytes = int64_t{4} << 20;  // a Generate message
// Requests being validated and tokenized, off gRPC's threads, in two lanes
// so that large prompts never delay small ones: the threads of each, and
// how many may wait in all and per client (tenant, or peer address).
inline constexpr int64_t kLargePromptBytes = 64 << 10;  // text from here takes the large lane
inline constexpr int kAdmissionThreads = 2;
inline constexpr int64_t kMaxAdmissionsWaiting = 1024;
inline constexpr int64_t kMaxAdmissionsPerClient = 256;
inline constexpr int kLargeAdmissionThreads = 1;
inline constexpr int64_t kMaxLargeAdmissionsWaiting = 16;
inline constexpr int64_t kMaxLargeAdmissionsPerClient = 4;
inline constexpr int64_t kMaxStopStrings = 16;   // sampling.stop entries
inline constexpr int64_t kMaxStopBytes = 4096;   // their bytes together
inline constexpr int64_t kMaxStopTokenIds = 64;  // sampling.stop_token_ids
inline constexpr int64_t kMaxRequestIdBytes = 256;
// Data-parallel worker groups one router serves at most (each has its own
// scheduler, step loop thread and per-group metric series).
inline constexpr uint32_t kMaxGroups = 1024;
inline constexpr uint32_t kMaxTopLogprobs = 20;  // alternatives per token
// The rendezvous store, per group: keys, bytes of one key, bytes of one
// value (a Gloo address list is 136 bytes a rank).
// KV blocks a rank may register: the router keeps about 4·block_size + 80
// bytes per block (README's memory formula), 600 MiB at this bound.
inline constexpr int64_t kMaxKvBlocks = int64_t{1} << 22;
inline constexpr int64_t kMaxRendezvousKeys = 256;
inline constexpr int64_t kMaxRendezvousKeyBytes = 256;
inline constexpr int64_t kMaxRendezvousValueBytes = 64 << 10;

}  // namespace shift::defaults
