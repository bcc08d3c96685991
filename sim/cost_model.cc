#include "sim/cost_model.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/model_schema.h"
#include "kernels/op_params.h"  // the panel width TP slices align to: constants only
#include "nlohmann/json.hpp"
#include "sim/fit.h"

namespace shift::sim {

std::vector<Chunk> ChunksOf(const SchedulerOutput& step) {
  std::vector<Chunk> chunks;
  chunks.reserve(step.sequences.size());
  for (const ScheduledSequence& s : step.sequences) {
    chunks.push_back({s.start_position, static_cast<int64_t>(s.token_ids.size()), s.sample});
  }
  return chunks;
}

double ComputeLaw::Seconds(StepMode mode, double tokens, double attention, double sequences) const {
  const auto& c = coefficients[mode == StepMode::kSequenceParallel ? 1 : 0];
  return c[0] + c[1] * tokens + c[2] * attention + c[3] * sequences;
}

absl::StatusOr<ComputeLaw> LoadComputeProfile(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    return absl::NotFoundError(absl::StrCat("--compute_profile: cannot read \"", path, "\""));
  ComputeLaw law;
  std::array<std::vector<std::vector<double>>, 2> rows;
  std::array<std::vector<double>, 2> seconds;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const std::string where = absl::StrCat(path, ":", n, ": ");
    if (!j.is_object()) return absl::InvalidArgumentError(where + "not a JSON object");
    try {
      const int world = j.at("world_size").get<int>();
      if (law.world_size != 0 && world != law.world_size) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "world_size ", world, " after ", law.world_size));
      }
      law.world_size = world;
      const int m = j.at("mode").get<std::string>() == "sp" ? 1 : 0;
      rows[m].push_back({1.0, j.at("tokens").get<double>(), j.at("attention").get<double>(),
                         j.at("sequences").get<double>()});
      seconds[m].push_back(j.at("compute_s").get<double>());
    } catch (const nlohmann::json::exception& e) {
      return absl::InvalidArgumentError(where + e.what());
    }
  }
  for (int m = 0; m < 2; ++m) {
    if (rows[m].size() < 4) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": needs at least 4 steps in ",
                                                     m ? "sp" : "tp", " mode to fit its law, has ",
                                                     rows[m].size()));
    }
    const std::vector<double> c = FitNonNegative(rows[m], seconds[m], /*relative=*/true);
    std::copy(c.begin(), c.end(), law.coefficients[m].begin());
    law.steps += static_cast<int64_t>(rows[m].size());
  }
  return law;
}

struct CostModel::Work {
  ParallelMode mode;
  double rows = 0;                        // GEMM rows per rank
  double gemm_flops = 0, gemm_bytes = 0;  // all layers
  double attention_flops = 0, attention_bytes = 0, elementwise_bytes = 0;
  double head_rows = 0, head_flops = 0, head_bytes = 0;
  // Collectives: count and bytes per rank of each, all layers, and those
  // bytes times NCCL's bus factor (what the bus bandwidth divides).
  double all_reduces = 0, all_reduce_bytes = 0, all_reduce_bus = 0;
  double all_to_alls = 0, all_to_all_bytes = 0, all_to_all_bus = 0;
  double gathers = 0, gather_bytes = 0, gather_bus = 0;
  double tokens = 0, attention = 0, sequences = 0;
};

absl::StatusOr<CostModel> CostModel::Make(const ModelConfig& model, const HardwareProfile& hardware,
                                          int world_size, int sp_degree, bool replicated_weights) {
  if (world_size < 1 || world_size > hardware.gpus) {
    return absl::InvalidArgumentError(absl::StrCat("world size ", world_size, " needs 1..",
                                                   hardware.gpus, " devices of ", hardware.name));
  }
  if (sp_degree < 1 || world_size % sp_degree != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--sp_degree ", sp_degree, " must divide the world size ", world_size));
  }
  if (model.num_attention_heads % world_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        model.num_attention_heads, " attention heads do not split over ", world_size, " ranks"));
  }
  CostModel c;
  c.model_ = model;
  c.hw_ = hardware;
  c.world_size_ = world_size;
  c.sp_degree_ = sp_degree;
  const bool fp8 = model.quantization.has_value();
  const double model_bytes = fp8 ? 1 : (model.torch_dtype == "float32" ? 4 : 2);
  c.weight_bytes_ = hardware.weight_bytes > 0 ? hardware.weight_bytes : model_bytes;
  c.head_bytes_ = hardware.weight_bytes > 0 ? hardware.weight_bytes : std::max(2.0, model_bytes);
  c.gemm_type_ = c.weight_bytes_ == 1 ? "fp8" : (hardware.activation_bytes >= 4 ? "f32" : "bf16");
  auto peak = hardware.peak_flops.find(c.gemm_type_);
  if (peak == hardware.peak_flops.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(hardware.name, " has no peak_flops.", c.gemm_type_, " for this model"));
  }
  c.gemm_peak_ = peak->second;
  if (!hardware.peak_flops.contains("bf16") && !hardware.peak_flops.contains("f32")) {
    return absl::InvalidArgumentError(
        absl::StrCat(hardware.name, " needs peak_flops.bf16 or .f32 for attention"));
  }
  const double d = model.hidden_size, hd = model.head_dim, layers = model.num_hidden_layers;
  const double hq = model.num_attention_heads, hkv = model.num_key_value_heads;
  if (!replicated_weights) {
    // A TP-only server (vLLM): 1/P of every weight, embedding included.
    const double layer =
        d * (hq + 2.0 * hkv) * hd + hq * hd * d + 3.0 * d * model.intermediate_size;
    const double embeddings =
        (model.tie_word_embeddings ? 1.0 : 2.0) * model.vocab_size * d * c.head_bytes_;
    c.weight_bytes_per_rank_ = (layers * layer * c.weight_bytes_ + embeddings) / world_size;
    return c;
  }
  // What rank 0 of shift's layout loads (worker/model_executor.h).
  const RankWeights w =
      WeightsOfRank(model, GroupLayout{world_size, sp_degree}, 0, kernels::kPanelWidth);
  c.weight_bytes_per_rank_ = w.projections * c.weight_bytes_ + w.other * c.head_bytes_;
  return c;
}

ParallelMode CostModel::ModeOf(StepMode mode) const {
  if (mode == StepMode::kSequenceParallel) return {sp_degree_, world_size_ / sp_degree_};
  return {1, world_size_};
}

CostModel::Work CostModel::WorkOf(absl::Span<const Chunk> chunks, StepMode step_mode) const {
  const ModelConfig& m = model_;
  Work w;
  w.mode = ModeOf(step_mode);
  const double sp = w.mode.sp, tp = w.mode.tp, n = world_size_;
  const double d = m.hidden_size, hd = m.head_dim, inter = m.intermediate_size;
  const double hq = m.num_attention_heads, hkv = m.num_key_value_heads;
  const double layers = m.num_hidden_layers, ab = hw_.activation_bytes;
  double tokens = 0, samples = 0;
  for (const Chunk& c : chunks) {
    tokens += c.tokens;
    samples += c.sample ? 1 : 0;
  }
  // Each new token attends every position up to its own, or, in a layer
  // with a sliding window, the last `window` of them; a sequence's KV is
  // read once per layer, its window's part of it. Per layer, on average
  // over the layers (the layers of each window at once).
  std::map<int64_t, int64_t> layers_of_window;
  for (int64_t l = 0; l < m.num_hidden_layers; ++l) {
    const int64_t window = m.AttentionWindow(l);
    ++layers_of_window[window >= m.max_position_embeddings ? 0 : window];  // as the executor
  }
  double attention = 0, context = 0;
  for (const auto& [window, count] : layers_of_window) {
    const double share = static_cast<double>(count) / static_cast<double>(m.num_hidden_layers);
    double positions = 0, read = 0;
    for (const Chunk& c : chunks) {
      // Σ min(p + 1, window) over the chunk's positions p: an arithmetic
      // series up to the window, then `window` a token.
      const double first = c.start + 1.0, last = static_cast<double>(c.start + c.tokens);
      const double below = window > 0 ? std::clamp(window - first + 1, 0.0, 1.0 * c.tokens)
                                      : static_cast<double>(c.tokens);
      positions += below * (2 * first + below - 1) / 2 + (c.tokens - below) * window;
      read += window > 0 ? std::min(last, window + c.tokens - 1.0) : last;
    }
    attention += share * positions;
    context += share * read;
  }
  w.tokens = tokens;
  w.attention = attention;
  w.sequences = static_cast<double>(chunks.size());
  const double rows = std::ceil(tokens / sp);  // SP pads the tokens to a multiple of sp
  w.rows = rows;
  const double layer = d * (hq + 2 * hkv) * hd + hq * hd * d + 3 * d * inter;
  w.gemm_flops = layers * 2 * rows * layer / tp;
  w.gemm_bytes = layers * (layer / tp * weight_bytes_ +
                           ab * rows * (4 * d + (2 * hq + 2 * hkv) * hd / tp + 3 * inter / tp));
  w.elementwise_bytes = layers * ab * rows * (10 * d + 2 * (hq + hkv) * hd / tp + 3 * inter / tp);
  // Attention: every rank its 1/P of the heads over all tokens (a kv head
  // is shared when there are fewer than P).
  const double q_heads = hq / n, kv_heads = std::max(1.0, hkv / n);
  w.attention_flops = layers * 4 * hd * q_heads * attention;
  w.attention_bytes =
      layers * ab * (2 * kv_heads * hd * (context + tokens) + 2 * q_heads * hd * tokens);
  // Logits for the sampling rows, the LM head split by tp.
  const double head_rows = std::ceil(samples / sp);
  w.head_rows = head_rows;
  if (head_rows > 0) {
    w.head_flops = 2 * head_rows * d * m.vocab_size / tp;
    w.head_bytes = d * m.vocab_size / tp * head_bytes_ + ab * head_rows * m.vocab_size / tp;
  }
  if (tp > 1) {
    w.all_reduces = 2 * layers;
    w.all_reduce_bytes = w.all_reduces * rows * d * ab;
    w.all_reduce_bus = 2 * (tp - 1) / tp * w.all_reduce_bytes;
  }
  if (sp > 1) {
    w.all_to_alls = 2 * layers;
    // Q out and back, and each Ulysses member's kv heads (replicated ones
    // sent to each rank that holds them), as the executor sends them.
    w.all_to_all_bytes = layers * rows * (2 * hq / tp + 2 * sp * std::max(1.0, hkv / n)) * hd * ab;
    w.all_to_all_bus = (sp - 1) / sp * w.all_to_all_bytes;
  }
  if (n > 1 && samples > 0) {
    w.gathers = 1;
    w.gather_bytes = samples * m.vocab_size * 4 / n;  // f32 logits; each rank its share
    w.gather_bus = (n - 1) / n * w.gather_bytes;
  }
  return w;
}

Features CostModel::FeaturesOf(absl::Span<const Chunk> chunks, StepMode mode) const {
  const Work w = WorkOf(chunks, mode);
  Features f{};
  f[kOne] = 1;
  f[kGemmFlops] = w.gemm_flops + w.head_flops;
  f[kGemmFlopsPerRow] =
      (w.rows > 0 ? w.gemm_flops / w.rows : 0) + (w.head_rows > 0 ? w.head_flops / w.head_rows : 0);
  f[kAttentionFlops] = w.attention_flops;
  f[kBytes] = w.gemm_bytes + w.elementwise_bytes + w.attention_bytes + w.head_bytes;
  f[kAllReduces] = w.all_reduces;
  f[kAllReduceBytes] = w.all_reduce_bus;
  f[kAllToAlls] = w.all_to_alls + w.gathers;
  f[kAllToAllBytes] = w.all_to_all_bus + w.gather_bus;
  return f;
}

Features CostModel::Coefficients() const {
  Features t{};
  const double gemm = gemm_peak_ * hw_.gemm_efficiency.at(gemm_type_);
  t[kOne] = hw_.step_overhead_s + model_.num_hidden_layers * hw_.layer_overhead_s;
  t[kGemmFlops] = 1 / gemm;
  t[kGemmFlopsPerRow] = hw_.gemm_half_rows / gemm;
  const double attention_peak =
      hw_.peak_flops.contains("bf16") ? hw_.peak_flops.at("bf16") : hw_.peak_flops.at("f32");
  t[kAttentionFlops] = 1 / (attention_peak * hw_.attention_efficiency);
  t[kBytes] = 1 / (hw_.memory_bandwidth * hw_.bandwidth_efficiency);
  t[kAllReduces] = hw_.all_reduce.latency_s;
  t[kAllReduceBytes] = 1 / hw_.all_reduce.bus_bandwidth;
  t[kAllToAlls] = hw_.all_to_all.latency_s;
  t[kAllToAllBytes] = 1 / hw_.all_to_all.bus_bandwidth;
  return t;
}

StepCost CostModel::Price(absl::Span<const Chunk> chunks, StepMode mode) const {
  const Work w = WorkOf(chunks, mode);
  const Features t = Coefficients();
  StepCost cost;
  cost.overhead_s = t[kOne];
  auto collective = [](double count, double bus_bytes, const Collective& c) {
    return count * c.latency_s + bus_bytes / c.bus_bandwidth;
  };
  cost.collective_s = collective(w.all_reduces, w.all_reduce_bus, hw_.all_reduce) +
                      collective(w.all_to_alls, w.all_to_all_bus, hw_.all_to_all) +
                      collective(w.gathers, w.gather_bus, hw_.gather);
  cost.collective_bytes = w.all_reduce_bytes + w.all_to_all_bytes + w.gather_bytes;
  if (law_) {
    cost.compute_s = std::max(0.0, law_->Seconds(mode, w.tokens, w.attention, w.sequences));
    return cost;
  }
  // Compute: each kind of kernel takes its FLOPs over the achieved peak and
  // its bytes over the achieved bandwidth, the longer (overlap) or both.
  auto kernel = [&](double flops_s, double bytes) {
    const double bytes_s = bytes * t[kBytes];
    return hw_.overlap ? std::max(flops_s, bytes_s) : flops_s + bytes_s;
  };
  auto gemm_s = [&](double flops, double rows) {
    return rows > 0 ? flops * t[kGemmFlops] + flops / rows * t[kGemmFlopsPerRow] : 0.0;
  };
  cost.compute_s = kernel(gemm_s(w.gemm_flops, w.rows), w.gemm_bytes) +
                   kernel(w.attention_flops * t[kAttentionFlops], w.attention_bytes) +
                   w.elementwise_bytes * t[kBytes] +
                   kernel(gemm_s(w.head_flops, w.head_rows), w.head_bytes);
  return cost;
}

absl::StatusOr<int64_t> CostModel::NumBlocks(int64_t block_size) const {
  const ModelConfig& m = model_;
  const double kv_heads = std::max(1.0, static_cast<double>(m.num_key_value_heads) / world_size_);
  const double block_bytes =
      2.0 * m.num_hidden_layers * block_size * kv_heads * m.head_dim * hw_.activation_bytes;
  double room = hw_.kv_cache_bytes;
  if (room <= 0) {
    room = hw_.memory_bytes * hw_.memory_utilization - weight_bytes_per_rank_ -
           hw_.activation_reserve_bytes;
  }
  const int64_t blocks = static_cast<int64_t>(room / block_bytes);
  if (blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("the weights (", weight_bytes_per_rank_ / 1e9,
                                                   " GB per device) leave no room for a KV "
                                                   "block on ",
                                                   hw_.name));
  }
  return blocks;
}

}  // namespace shift::sim
