// How a step is split over a worker group's ranks (docs/architecture.md,
// Modes and the KV layout). The one place a mode is named: the policy picks
// one, the engine runs it, and the router maps it to the wire.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace shift {

enum class StepMode {
  kTensorParallel,    // TP over all P ranks: all tokens, its heads and MLP slice
  kSequenceParallel,  // the base mode (sp, tp): its slice of the tokens, its TP shard
};

// "tp" or "sp": metrics labels, traces, policy names.
inline const char* StepModeName(StepMode mode) {
  return mode == StepMode::kSequenceParallel ? "sp" : "tp";
}

// How a group of P ranks is laid out (docs/architecture.md, The hybrid
// layout): the base mode (kSequenceParallel) runs `sp` Ulysses groups of
// tp = P / sp ranks' shards each, pure SP when sp = P (the default) and TP
// over all ranks when sp = 1; the shifted mode (kTensorParallel) is TP over
// all P ranks, on views into the same shards. Rank r = j·sp + i is Ulysses
// index i (its token slice in the base mode) of TP index j (its shard j of
// tp of every sharded weight).
struct GroupLayout {
  int world_size = 1;
  int sp = 1;

  // Pure SP: every rank holds the whole model.
  static GroupLayout PureSp(int world_size) { return {world_size, world_size}; }
  int tp() const { return world_size / sp; }
  int ulysses_index(int rank) const { return rank % sp; }
  int tp_index(int rank) const { return rank / sp; }
  // The ranks that exchange tokens for heads with `rank` in the base mode
  // (the same shard: same j), in Ulysses order.
  std::vector<int> UlyssesGroupOf(int rank) const {
    std::vector<int> ranks;
    for (int i = 0; i < sp; ++i) ranks.push_back(tp_index(rank) * sp + i);
    return ranks;
  }
  // The ranks whose shards make one whole model with `rank`'s (the same
  // token slice: same i), in TP order: member j holds shard j.
  std::vector<int> TpGroupOf(int rank) const {
    std::vector<int> ranks;
    for (int j = 0; j < tp(); ++j) ranks.push_back(j * sp + ulysses_index(rank));
    return ranks;
  }
  // Why this is not a layout; empty when it is.
  std::string Problem() const {
    if (world_size < 1 || sp < 1 || sp > world_size || world_size % sp != 0) {
      return "--sp_degree must divide the group's world size (sp_degree x tp = ranks); got "
             "sp_degree " +
             std::to_string(sp) + " for " + std::to_string(world_size) + " ranks";
    }
    return "";
  }
};

// The rows [begin, end) of a `vocab`-row LM head that part `index` of
// `parts` computes: whole panels of `panel` rows, the last part clamped.
// TP over P ranks (parts = P) views into the base mode's shards (parts =
// tp): floor(j·sp·panels / P) = floor(j·panels / tp).
inline std::pair<int64_t, int64_t> VocabPart(int64_t vocab, int64_t index, int64_t parts,
                                             int64_t panel) {
  const int64_t panels = (vocab + panel - 1) / panel;
  return {std::min(index * panels / parts * panel, vocab),
          std::min((index + 1) * panels / parts * panel, vocab)};
}

}  // namespace shift
