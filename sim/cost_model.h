// What a step costs on a hardware profile: the simulator's stand-in for
// running the model. A step is priced per rank from the model's shapes in
// the mode it runs in — (sp, tp) with sp·tp = P: TP is (1, P), SP (P, 1) or
// a hybrid base (k, P/k) — as GEMMs (FLOPs over the peak at an efficiency
// that grows with rows, or weight bytes over bandwidth, whichever binds),
// attention (FLOPs and KV bytes), elementwise traffic, TP's two all-reduces
// and SP's two all-to-alls per layer (latency plus bytes over bus
// bandwidth), the logits' gather, and fixed per-step and per-layer costs.
// With a compute profile (per-rank step times measured on one device,
// shift-generate --compute_profile) the compute part comes from a law
// fitted to it instead. Memory left after the weights bounds the KV cache.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/model_config.h"
#include "common/step_mode.h"
#include "core/scheduler.h"
#include "sim/hardware_profile.h"

namespace shift::sim {

// How a step's work is split: sp slices of the tokens, tp slices of the
// weights and heads.
struct ParallelMode {
  int sp = 1;
  int tp = 1;
};

// One sequence's part of a step, as far as cost goes.
struct Chunk {
  int64_t start = 0;   // position of its first new token
  int64_t tokens = 0;  // new tokens
  bool sample = false;
};
std::vector<Chunk> ChunksOf(const SchedulerOutput& step);

struct StepCost {
  double compute_s = 0;     // GEMMs, attention, elementwise, logits
  double collective_s = 0;  // all-reduces, all-to-alls, the logits' gather
  double overhead_s = 0;    // per step and per layer
  double collective_bytes = 0;
  double total_s() const { return compute_s + collective_s + overhead_s; }
};

// The quantities a step's time is linear in when compute and memory do not
// overlap (a CPU): calibration fits one coefficient to each.
enum Feature {
  kOne,              // the step itself (step overhead)
  kGemmFlops,        // over peak × gemm efficiency
  kGemmFlopsPerRow,  // GEMM FLOPs / rows: the efficiency curve's half-rows term
  kAttentionFlops,
  kBytes,           // all memory traffic
  kAllReduces,      // count (latency)
  kAllReduceBytes,  // 2(n-1)/n · bytes
  kAllToAlls,       // all-to-alls and gathers: count
  kAllToAllBytes,   // (n-1)/n · bytes
  kNumFeatures
};
using Features = std::array<double, kNumFeatures>;

// Per-rank compute seconds from a measured compute profile: per mode, a law
// c0 + c1·tokens + c2·attention + c3·sequences fitted (non-negative,
// relative errors) to the profile's steps.
struct ComputeLaw {
  int world_size = 0;
  std::array<std::array<double, 4>, 2> coefficients{};  // [tp, sp]
  int64_t steps = 0;
  double Seconds(StepMode mode, double tokens, double attention, double sequences) const;
};
// Reads shift-generate --compute_profile JSONL lines (all one world size).
absl::StatusOr<ComputeLaw> LoadComputeProfile(const std::string& path);

class CostModel {
 public:
  // `sp_degree`: the sp of SP mode (P: pure Ulysses; k < P: the hybrid
  // (k, P/k)). `replicated_weights`: every rank holds the weights SP needs
  // (shift's one copy); false: a TP-only server holding 1/P of them.
  static absl::StatusOr<CostModel> Make(const ModelConfig& model, const HardwareProfile& hardware,
                                        int world_size, int sp_degree, bool replicated_weights);

  ParallelMode ModeOf(StepMode mode) const;
  StepCost Price(absl::Span<const Chunk> chunks, StepMode mode) const;
  Features FeaturesOf(absl::Span<const Chunk> chunks, StepMode mode) const;
  // The coefficients that make Σ features × θ the profile's price when it
  // does not overlap compute and memory.
  Features Coefficients() const;

  // Weight bytes one rank holds, and the KV blocks of `block_size` tokens
  // the group has room for (INVALID_ARGUMENT when the weights leave none).
  double weight_bytes_per_rank() const { return weight_bytes_per_rank_; }
  absl::StatusOr<int64_t> NumBlocks(int64_t block_size) const;
  int world_size() const { return world_size_; }
  const std::string& gemm_type() const { return gemm_type_; }

  void set_compute_law(std::optional<ComputeLaw> law) { law_ = std::move(law); }

 private:
  struct Shape;
  // The step's per-rank work, split into the quantities it is priced from.
  struct Work;
  Work WorkOf(absl::Span<const Chunk> chunks, StepMode mode) const;

  ModelConfig model_;
  HardwareProfile hw_;
  int world_size_ = 1;
  int sp_degree_ = 1;
  double weight_bytes_ = 2;  // per weight element of the layers
  double head_bytes_ = 2;    // per element of the embedding and LM head
  double weight_bytes_per_rank_ = 0;
  double gemm_peak_ = 0;
  std::string gemm_type_;
  std::optional<ComputeLaw> law_;
};

}  // namespace shift::sim
