#include "worker/model_executor.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "common/model_schema.h"
#include "common/status.h"

namespace shift {

using kernels::Buffer;
using kernels::GemmRange;
using kernels::Tensor;

namespace {

std::optional<kernels::Llama3Scaling> Scaling(const ModelConfig& c) {
  if (!c.rope_scaling) return std::nullopt;
  return kernels::Llama3Scaling{c.rope_scaling->factor, c.rope_scaling->low_freq_factor,
                                c.rope_scaling->high_freq_factor,
                                c.rope_scaling->original_max_position_embeddings};
}

// Why a group of p ranks cannot split this model; empty when it can. Any
// layout of the group then splits it too: each TP shard is a union of
// ranks' slices (docs/architecture.md, The hybrid layout).
std::string SplitProblem(const ModelConfig& c, const GroupLayout& layout) {
  const int64_t kv = c.num_key_value_heads, panel = kernels::kPanelWidth, p = layout.world_size;
  if (std::string why = layout.Problem(); !why.empty()) return why;
  if (p == 1) return "";
  if (p != 2 && p != 4 && p != 8) return "deterministic TP needs 1, 2, 4 or 8 ranks";
  if (c.num_attention_heads % p != 0) {
    return absl::StrCat(c.num_attention_heads, " query heads cannot be split over ", p, " ranks");
  }
  if (kv % p != 0 && p % kv != 0) {
    return absl::StrCat(kv, " kv heads cannot be split over (or replicated on) ", p, " ranks");
  }
  if (c.head_dim % panel != 0 || c.intermediate_size % (panel * p) != 0) {
    return absl::StrCat("TP slices must align to ", panel,
                        "-column panels: head_dim and intermediate_size / ranks must be "
                        "multiples of ",
                        panel);
  }
  return "";
}

// Device bytes of the weights rank `rank` of `layout` loads: its
// projections as FP8 codes in an FP8 checkpoint with per-row scales, every
// other value `element` bytes (the backend's; block-scaled FP8 weights are
// dequantized on load).
double ShardBytes(const ModelConfig& c, const GroupLayout& layout, int rank, double element) {
  const RankWeights w = WeightsOfRank(c, layout, rank, kernels::kPanelWidth);
  const bool fp8_codes = c.quantization && c.quantization->block == 0;
  return w.projections * (fp8_codes ? 1.0 : element) + w.other * element;
}

// Why this rank's weights and KV cache do not fit in the device's free
// memory, naming the layout that would; empty when they fit or the device
// has no bound.
std::string MemoryProblem(const ModelConfig& c, const GroupLayout& layout, int rank,
                          int64_t kv_cache_bytes, const kernels::Backend& backend) {
  const int64_t free = backend.free_memory();
  if (free < 0) return "";
  const double element = static_cast<double>(DTypeSize(backend.activation_dtype()));
  auto need = [&](const GroupLayout& l) {
    return ShardBytes(c, l, rank, element) + static_cast<double>(kv_cache_bytes);
  };
  if (need(layout) <= static_cast<double>(free)) return "";
  const double gib = 1024.0 * 1024 * 1024;
  std::string advice =
      absl::StrCat("no layout of ", layout.world_size,
                   " ranks fits: use more ranks per group or a smaller --kv_cache_bytes");
  // The most Ulysses ranks (the least sharding) that fits.
  for (int sp = layout.sp / 2; sp >= 1; sp /= 2) {
    const GroupLayout smaller{layout.world_size, sp};
    if (smaller.Problem().empty() && need(smaller) <= static_cast<double>(free)) {
      advice = absl::StrFormat(
          "--sp_degree=%d fits (each rank then holds 1/%d of the weights: %.2f GiB)", sp,
          smaller.tp(), ShardBytes(c, smaller, rank, element) / gib);
      break;
    }
  }
  return absl::StrFormat(
      "rank %d of (sp %d, tp %d) needs %.2f GiB for its weights (1/%d of them) and %.2f GiB for "
      "its KV cache, but the %s has %.2f GiB free; %s",
      rank, layout.sp, layout.tp(), ShardBytes(c, layout, rank, element) / gib, layout.tp(),
      kv_cache_bytes / gib, backend.description(), free / gib, advice);
}

// Block tables of a decode graph hold this many blocks, or a power of two
// times it: a few widths serve every context.
constexpr int64_t kMinTableWidth = 64;

// The rows and groups `part` names of W [n][k], row-major.
template <typename T>
std::vector<T> PartOf(const T* w, const kernels::WeightPart& part) {
  std::vector<T> out;
  out.reserve(static_cast<size_t>(part.rows() * part.cols()));
  const int64_t first = part.k / kernels::kReductionGroups * part.group_begin;
  for (int64_t r = part.row_begin; r < part.row_end; ++r) {
    const T* row = w + r * part.k + first;
    out.insert(out.end(), row, row + part.cols());
  }
  return out;
}

}  // namespace

std::vector<int64_t> DecodeBuckets(int64_t max_batch) {
  std::vector<int64_t> buckets;
  for (int64_t b : {1, 2, 4}) {
    if (b < max_batch) buckets.push_back(b);
  }
  for (int64_t power = 8; power < max_batch; power *= 2) {
    for (int64_t b = power; b < 2 * power && b < max_batch; b += power / 4) buckets.push_back(b);
  }
  if (max_batch >= 1) buckets.push_back(max_batch);
  return buckets;
}

ModelExecutor::ModelExecutor(ModelConfig config, kernels::Backend* backend, int rank,
                             GroupLayout layout, DecodeGraphs graphs)
    : config_(std::move(config)),
      backend_(backend),
      rank_(rank),
      world_size_(layout.world_size),
      layout_(layout),
      graphs_(graphs) {
  shard_ = ShardOf(rank_);
  weight_heads_ = HeadsOf(layout_.tp_index(rank_), layout_.tp());
  if (graphs_.max_batch < 1) graphs_.mode = DecodeGraphs::kOff;
  if (graphs_.mode != DecodeGraphs::kOff) buckets_ = DecodeBuckets(graphs_.max_batch);
}

HeadShard ModelExecutor::HeadsOf(int64_t index, int64_t parts) const {
  const int64_t heads = config_.num_attention_heads, kv = config_.num_key_value_heads;
  HeadShard shard;
  shard.q_begin = index * heads / parts;
  shard.q_count = heads / parts;
  // With fewer kv heads than parts, a kv head is replicated on parts / kv.
  shard.kv_begin = index * kv / parts;
  shard.kv_count = kv >= parts ? kv / parts : 1;
  return shard;
}

std::pair<int64_t, int64_t> ModelExecutor::VocabOf(int64_t index, int64_t parts) const {
  return VocabPart(config_.vocab_size, index, parts, kernels::kPanelWidth);
}

absl::StatusOr<std::unique_ptr<ModelExecutor>> ModelExecutor::Create(
    const std::string& dir, const ModelConfig& c, const Checkpoint& checkpoint,
    kernels::Backend* backend, int rank, GroupLayout layout, int64_t kv_cache_bytes,
    int64_t block_size, DecodeGraphs graphs) {
  if (std::string why = SplitProblem(c, layout); !why.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": this model cannot run on a group of ",
                                                   layout.world_size, " ranks: ", why));
  }
  for (int64_t k : {c.hidden_size, c.intermediate_size, c.head_dim}) {
    if (k % kernels::kReductionGroups != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir,
                       ": every GEMM reduction length must be a multiple of 8 (hidden_size, "
                       "intermediate_size, head_dim); got ",
                       k));
    }
  }
  if (block_size <= 0) return absl::InvalidArgumentError("block size must be positive");
  if (graphs.mode == DecodeGraphs::kCaptured && !backend->SupportsGraphs()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ", kernels::DeviceName(backend->device()), " backend records no graphs"));
  }
  if (std::string why = MemoryProblem(c, layout, rank, kv_cache_bytes, *backend); !why.empty()) {
    return absl::ResourceExhaustedError(absl::StrCat(dir, ": ", why));
  }
  std::unique_ptr<ModelExecutor> executor(new ModelExecutor(c, backend, rank, layout, graphs));
  SHIFT_RETURN_IF_ERROR(executor->Load(checkpoint));
  SHIFT_RETURN_IF_ERROR(executor->AllocateKv(kv_cache_bytes, block_size));
  return executor;
}

absl::StatusOr<Buffer> ModelExecutor::Allocate(int64_t rows, int64_t cols, bool zero) {
  return backend_->Allocate(backend_->activation_dtype(), rows, cols, zero);
}

absl::Status ModelExecutor::Load(const Checkpoint& checkpoint) {
  using kernels::WeightPart;
  std::vector<float> host;
  auto vector = [&](const std::string& name, int64_t n, Buffer* out) -> absl::Status {
    host.resize(n);
    weight_bytes_ += n * sizeof(float);
    SHIFT_RETURN_IF_ERROR(checkpoint.ReadAsF32(name, {n}, host.data()));
    SHIFT_ASSIGN_OR_RETURN(*out, Allocate(1, n));
    return backend_->CopyFromHost(host.data(), *out);
  };
  // This rank's part of a GEMM weight W [n][k] (all of it unless sharded).
  auto weight = [&](const std::string& name, const WeightPart& part,
                    std::unique_ptr<kernels::Weight>* out) -> absl::Status {
    weight_bytes_ += part.rows() * part.cols() * sizeof(float);
    // FP8 weights go to the backend as they are stored (it may keep them).
    SHIFT_ASSIGN_OR_RETURN(std::optional<Fp8Weight> fp8,
                           ReadFp8Weight(checkpoint, config_, name, part.n, part.k));
    if (fp8) {
      // The codes are read in place: from the part's first byte to its last.
      const int64_t first_col = part.k / kernels::kReductionGroups * part.group_begin;
      checkpoint.NoteRead(
          *checkpoint.Find(name), static_cast<size_t>(part.row_begin * part.k + first_col),
          static_cast<size_t>((part.row_end - 1) * part.k + first_col + part.cols()));
      const std::vector<unsigned char> codes = PartOf(fp8->codes, part);
      fp8_weight_bytes_ += codes.size();
      if (fp8->block > 0) {
        // The tiles the part's rows and K columns touch, cut or whole.
        const int64_t b = fp8->block, first = part.k / kernels::kReductionGroups * part.group_begin;
        const int64_t tile_rows = (part.row_end + b - 1) / b - part.row_begin / b;
        const int64_t tile_cols = (first + part.cols() + b - 1) / b - first / b;
        fp8_weight_bytes_ += tile_rows * tile_cols * sizeof(float);
        SHIFT_ASSIGN_OR_RETURN(
            *out, backend_->UploadWeightFp8Blocks(codes.data(), fp8->block_scales.data(), b, part));
        return absl::OkStatus();
      }
      const std::vector<float> scales(fp8->row_scales.begin() + part.row_begin,
                                      fp8->row_scales.begin() + part.row_end);
      fp8_weight_bytes_ += scales.size() * sizeof(float);
      SHIFT_ASSIGN_OR_RETURN(*out, backend_->UploadWeightFp8(codes.data(), scales.data(), part));
      return absl::OkStatus();
    }
    host.resize(part.n * part.k);
    SHIFT_RETURN_IF_ERROR(ReadWeightAsF32(checkpoint, config_, name, part.n, part.k, host.data()));
    if (part.whole()) {
      SHIFT_ASSIGN_OR_RETURN(*out, backend_->UploadWeight(host.data(), part));
    } else {
      SHIFT_ASSIGN_OR_RETURN(*out, backend_->UploadWeight(PartOf(host.data(), part).data(), part));
    }
    return absl::OkStatus();
  };
  const ModelConfig& c = config_;
  const int64_t d = c.hidden_size, q = c.num_attention_heads * c.head_dim,
                kv = c.num_key_value_heads * c.head_dim, inter = c.intermediate_size,
                hd = c.head_dim;
  // The TP shard this rank holds (docs/architecture.md, The hybrid layout):
  // column-parallel weights by rows, row-parallel ones by reduction groups.
  const int64_t j = layout_.tp_index(rank_), tp = layout_.tp();
  const HeadShard& heads = weight_heads_;
  auto rows = [](int64_t n, int64_t k, int64_t begin, int64_t end) {
    return WeightPart{n, k, begin, end, 0, kernels::kReductionGroups};
  };
  auto groups = [&](int64_t n, int64_t k) {
    const int count = static_cast<int>(kernels::kReductionGroups / tp);
    return WeightPart{n, k, 0, n, static_cast<int>(j) * count, count};
  };
  const auto [vocab_begin, vocab_end] = VocabOf(j, tp);
  const WeightPart lm_part = rows(c.vocab_size, d, vocab_begin, vocab_end);
  SHIFT_ASSIGN_OR_RETURN(rope_, backend_->UploadRope({c.head_dim, c.rope_theta, Scaling(c)}));
  host.resize(c.vocab_size * d);
  weight_bytes_ += c.vocab_size * d * sizeof(float);
  SHIFT_RETURN_IF_ERROR(ReadWeightAsF32(checkpoint, config_, "model.embed_tokens.weight",
                                        c.vocab_size, d, host.data()));
  SHIFT_ASSIGN_OR_RETURN(embedding_, Allocate(c.vocab_size, d));
  SHIFT_RETURN_IF_ERROR(backend_->CopyFromHost(host.data(), embedding_));
  if (c.tie_word_embeddings) {
    weight_bytes_ += lm_part.rows() * d * sizeof(float);
    SHIFT_ASSIGN_OR_RETURN(lm_head_,
                           backend_->UploadWeight(PartOf(host.data(), lm_part).data(), lm_part));
  } else {
    SHIFT_RETURN_IF_ERROR(weight("lm_head.weight", lm_part, &lm_head_));
  }
  SHIFT_RETURN_IF_ERROR(vector("model.norm.weight", d, &final_norm_));
  layers_.resize(c.num_hidden_layers);
  const WeightPart q_part = rows(q, d, heads.q_begin * hd, (heads.q_begin + heads.q_count) * hd);
  const WeightPart kv_part =
      rows(kv, d, heads.kv_begin * hd, (heads.kv_begin + heads.kv_count) * hd);
  const WeightPart mlp_part = rows(inter, d, j * inter / tp, (j + 1) * inter / tp);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    Layer& l = layers_[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    SHIFT_RETURN_IF_ERROR(vector(p + "input_layernorm.weight", d, &l.input_norm));
    SHIFT_RETURN_IF_ERROR(vector(p + "post_attention_layernorm.weight", d, &l.post_norm));
    SHIFT_RETURN_IF_ERROR(weight(p + "self_attn.q_proj.weight", q_part, &l.q));
    SHIFT_RETURN_IF_ERROR(weight(p + "self_attn.k_proj.weight", kv_part, &l.k));
    SHIFT_RETURN_IF_ERROR(weight(p + "self_attn.v_proj.weight", kv_part, &l.v));
    SHIFT_RETURN_IF_ERROR(weight(p + "self_attn.o_proj.weight", groups(d, q), &l.o));
    SHIFT_RETURN_IF_ERROR(weight(p + "mlp.gate_proj.weight", mlp_part, &l.gate));
    SHIFT_RETURN_IF_ERROR(weight(p + "mlp.up_proj.weight", mlp_part, &l.up));
    SHIFT_RETURN_IF_ERROR(weight(p + "mlp.down_proj.weight", groups(d, inter), &l.down));
    if (c.qk_norm) {
      SHIFT_RETURN_IF_ERROR(vector(p + "self_attn.q_norm.weight", hd, &l.q_norm));
      SHIFT_RETURN_IF_ERROR(vector(p + "self_attn.k_norm.weight", hd, &l.k_norm));
    }
    if (c.attention_bias) {
      SHIFT_RETURN_IF_ERROR(vector(p + "self_attn.q_proj.bias", q, &l.q_bias));
      SHIFT_RETURN_IF_ERROR(vector(p + "self_attn.k_proj.bias", kv, &l.k_bias));
      SHIFT_RETURN_IF_ERROR(vector(p + "self_attn.v_proj.bias", kv, &l.v_bias));
    }
  }
  return absl::OkStatus();
}

absl::Status ModelExecutor::AllocateKv(int64_t kv_cache_bytes, int64_t block_size) {
  // Each rank caches only its kv-head shard.
  const ModelConfig& c = config_;
  const int64_t width = shard_.kv_count * c.head_dim;
  const int64_t element = static_cast<int64_t>(DTypeSize(backend_->activation_dtype()));
  const int64_t block_bytes = 2 * c.num_hidden_layers * block_size * width * element;
  const int64_t blocks = kv_cache_bytes / block_bytes;
  // With decode graphs the last block is the padding rows' own.
  const int64_t scratch = graphs_.mode != DecodeGraphs::kOff ? 1 : 0;
  num_blocks_ = blocks - scratch;
  if (num_blocks_ < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv-cache-bytes ", kv_cache_bytes, " is below ",
        scratch ? "two KV blocks (one is the decode graphs' padding block; " : "one KV block (",
        block_bytes, " bytes", scratch ? " each)" : ")"));
  }
  if (scratch) scratch_block_ = static_cast<int32_t>(num_blocks_);
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& l = layers_[i];
    SHIFT_ASSIGN_OR_RETURN(l.k_cache, Allocate(blocks * block_size, width, /*zero=*/true));
    SHIFT_ASSIGN_OR_RETURN(l.v_cache, Allocate(blocks * block_size, width, /*zero=*/true));
    // A window no shorter than the context a sequence can reach changes
    // nothing: the layer attends as if it had none. Blocks that fall out of
    // every layer's window stay allocated (the router frees a sequence's
    // blocks when it ends).
    int64_t window = c.AttentionWindow(static_cast<int64_t>(i));
    if (window >= c.max_position_embeddings) window = 0;
    l.kv = {l.k_cache, l.v_cache, block_size, shard_.kv_count, c.head_dim, window};
  }
  return absl::OkStatus();
}

absl::Status ModelExecutor::Project(const Layer& l, const Tensor& x, const HeadShard& shard,
                                    const kernels::StepData& step, int64_t first, const Tensor& q,
                                    const Tensor& k, const Tensor& v) {
  const int64_t hd = config_.head_dim;
  const GemmRange q_cols{shard.q_begin * hd, (shard.q_begin + shard.q_count) * hd};
  const GemmRange kv_cols{shard.kv_begin * hd, (shard.kv_begin + shard.kv_count) * hd};
  // Biases, where the model has them, start at the slice's first column.
  const bool bias = config_.attention_bias;
  const Tensor q_bias = bias ? l.q_bias.Cols(q_cols.n_begin, q_cols.n_end) : Tensor{};
  const Tensor k_bias = bias ? l.k_bias.Cols(kv_cols.n_begin, kv_cols.n_end) : Tensor{};
  const Tensor v_bias = bias ? l.v_bias.Cols(kv_cols.n_begin, kv_cols.n_end) : Tensor{};
  // K and V have their own calls, so a rank's slice is a plain column range.
  SHIFT_RETURN_IF_ERROR(backend_->Gemm(x, *l.q, q_cols, bias ? &q_bias : nullptr, q));
  SHIFT_RETURN_IF_ERROR(backend_->Gemm(x, *l.k, kv_cols, bias ? &k_bias : nullptr, k));
  SHIFT_RETURN_IF_ERROR(backend_->Gemm(x, *l.v, kv_cols, bias ? &v_bias : nullptr, v));
  if (config_.qk_norm) {
    // Qwen 3: an RMSNorm over each head of q and of k, in place, before RoPE.
    const float eps = static_cast<float>(config_.rms_norm_eps);
    const Tensor q_heads = q.Reshape(q.rows * shard.q_count, hd);
    const Tensor k_heads = k.Reshape(k.rows * shard.kv_count, hd);
    SHIFT_RETURN_IF_ERROR(backend_->RmsNorm(q_heads, nullptr, l.q_norm, eps, q_heads));
    SHIFT_RETURN_IF_ERROR(backend_->RmsNorm(k_heads, nullptr, l.k_norm, eps, k_heads));
  }
  SHIFT_RETURN_IF_ERROR(backend_->Rope(q, shard.q_count, *rope_, step, first));
  return backend_->Rope(k, shard.kv_count, *rope_, step, first);
}

absl::Status ModelExecutor::Attend(const Layer& l, const kernels::StepData& step, const Tensor& q,
                                   const Tensor& k, const Tensor& v, const Tensor& out) {
  // Each sequence's new K/V go in first, so its tokens attend to each other
  // (causally) and to its cached context in one operation.
  SHIFT_RETURN_IF_ERROR(backend_->WriteKv(l.kv, k, v, step));
  const float scale = 1.0f / std::sqrt(static_cast<float>(config_.head_dim));
  return backend_->Attention(q, shard_.q_count, l.kv, step, scale, out);
}

absl::Status ModelExecutor::LayersTp(const StepContext& ctx, const Tensor& h, const Tensor& delta) {
  const ModelConfig& c = config_;
  const int64_t n = h.rows, d = c.hidden_size, hd = c.head_dim, p = world_size_, r = rank_;
  const float eps = static_cast<float>(c.rms_norm_eps);
  // Row-parallel layers: this rank owns the subtree of groups r·8/P...
  GemmRange subtree;
  subtree.group_count = static_cast<int>(kernels::kReductionGroups / p);
  subtree.group_begin = static_cast<int>(r) * subtree.group_count;
  const int64_t inter = c.intermediate_size / p;
  const GemmRange mlp_cols{r * inter, (r + 1) * inter};
  SHIFT_ASSIGN_OR_RETURN(Buffer x, Allocate(n, d));
  SHIFT_ASSIGN_OR_RETURN(Buffer q, Allocate(n, shard_.q_count * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer k, Allocate(n, shard_.kv_count * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer v, Allocate(n, shard_.kv_count * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer attn, Allocate(n, shard_.q_count * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer gate, Allocate(n, inter));
  SHIFT_ASSIGN_OR_RETURN(Buffer up, Allocate(n, inter));
  SHIFT_ASSIGN_OR_RETURN(Buffer act, Allocate(n, inter));
  // A row-parallel output is this rank's subtree of each sum: the group
  // joins the subtrees, then the residual add is fused into the next norm.
  auto all_reduce = [&]() -> absl::Status {
    return p > 1 ? ctx.comm->DeterministicAllReduce(delta) : absl::OkStatus();
  };
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    SHIFT_RETURN_IF_ERROR(backend_->RmsNorm(h, i == 0 ? nullptr : &delta, l.input_norm, eps, x));
    SHIFT_RETURN_IF_ERROR(Project(l, x, shard_, *ctx.step, 0, q, k, v));
    SHIFT_RETURN_IF_ERROR(Attend(l, *ctx.step, q, k, v, attn));
    SHIFT_RETURN_IF_ERROR(backend_->Gemm(attn, *l.o, subtree, nullptr, delta));
    SHIFT_RETURN_IF_ERROR(all_reduce());
    SHIFT_RETURN_IF_ERROR(backend_->RmsNorm(h, &delta, l.post_norm, eps, x));
    SHIFT_RETURN_IF_ERROR(backend_->Gemm(x, *l.gate, mlp_cols, nullptr, gate));
    SHIFT_RETURN_IF_ERROR(backend_->Gemm(x, *l.up, mlp_cols, nullptr, up));
    SHIFT_RETURN_IF_ERROR(backend_->SiluMul(gate, up, act));
    SHIFT_RETURN_IF_ERROR(backend_->Gemm(act, *l.down, subtree, nullptr, delta));
    SHIFT_RETURN_IF_ERROR(all_reduce());
  }
  return absl::OkStatus();
}

absl::Status ModelExecutor::LayersSp(const StepContext& ctx, const Tensor& h, const Tensor& delta) {
  const ModelConfig& c = config_;
  const int64_t n = ctx.step->layout().num_tokens(), local = ctx.end - ctx.begin, d = c.hidden_size,
                hd = c.head_dim, sp = layout_.sp, tp = layout_.tp(), j = layout_.tp_index(rank_);
  const float eps = static_cast<float>(c.rms_norm_eps);
  // This Ulysses group's heads: its TP shard's (all of them in pure SP).
  const HeadShard& all = weight_heads_;
  const HeadShard& mine = shard_;
  const int64_t inter = c.intermediate_size / tp;
  const GemmRange mlp_cols{j * inter, (j + 1) * inter};
  // Row-parallel layers: this shard's subtree (the whole tree when tp = 1),
  // joined across the TP subgroup.
  GemmRange subtree;
  subtree.group_count = static_cast<int>(kernels::kReductionGroups / tp);
  subtree.group_begin = static_cast<int>(j) * subtree.group_count;
  auto all_reduce = [&]() -> absl::Status {
    return ctx.tp != nullptr ? ctx.tp->DeterministicAllReduce(delta) : absl::OkStatus();
  };
  const int64_t slice = (n + sp - 1) / sp;  // tokens per Ulysses rank, the last ones padded
  auto tokens_of = [&](int64_t i) {
    const int64_t b = std::min(i * slice, n);
    return std::min(b + slice, n) - b;
  };
  // Ulysses member s is the group's rank j·sp + s.
  auto member = [&](int64_t s) { return ShardOf(static_cast<int>(j * sp + s)); };
  // Per token, what member s receives of it after all-to-all 1: its query
  // heads, then its K and V heads.
  auto width_of = [&](const HeadShard& s) { return (s.q_count + 2 * s.kv_count) * hd; };
  int64_t send_total = 0;
  for (int64_t s = 0; s < sp; ++s) send_total += local * width_of(member(s));
  SHIFT_ASSIGN_OR_RETURN(Buffer x, Allocate(local, d));
  SHIFT_ASSIGN_OR_RETURN(Buffer q, Allocate(local, all.q_count * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer k, Allocate(local, all.kv_count * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer v, Allocate(local, all.kv_count * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer send, Allocate(1, send_total));
  SHIFT_ASSIGN_OR_RETURN(Buffer received, Allocate(n, width_of(mine)));
  SHIFT_ASSIGN_OR_RETURN(Buffer q_mine, Allocate(n, mine.q_count * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer k_mine, Allocate(n, mine.kv_count * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer v_mine, Allocate(n, mine.kv_count * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer attn_mine, Allocate(n, mine.q_count * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer attn_back, Allocate(1, local * all.q_count * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer attn, Allocate(local, all.q_count * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer gate, Allocate(local, inter));
  SHIFT_ASSIGN_OR_RETURN(Buffer up, Allocate(local, inter));
  SHIFT_ASSIGN_OR_RETURN(Buffer act, Allocate(local, inter));
  std::vector<int64_t> send_counts(sp), recv_counts(sp);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    SHIFT_RETURN_IF_ERROR(backend_->RmsNorm(h, i == 0 ? nullptr : &delta, l.input_norm, eps, x));
    SHIFT_RETURN_IF_ERROR(Project(l, x, all, *ctx.step, ctx.begin, q, k, v));
    // All-to-all 1 within the Ulysses group: "my tokens, the shard's heads"
    // -> "all tokens, my heads". A kv head held by several ranks is sent to
    // each of them.
    for (int64_t s = 0, at = 0; s < sp; ++s) {
      const HeadShard to = member(s);
      const int64_t w = width_of(to), qw = to.q_count * hd, kw = to.kv_count * hd;
      const int64_t q_at = (to.q_begin - all.q_begin) * hd,
                    kv_at = (to.kv_begin - all.kv_begin) * hd;
      const Tensor part = send.tensor().Cols(at, at + local * w).Reshape(local, w);
      SHIFT_RETURN_IF_ERROR(backend_->Copy(q.Cols(q_at, q_at + qw), part.Cols(0, qw)));
      SHIFT_RETURN_IF_ERROR(backend_->Copy(k.Cols(kv_at, kv_at + kw), part.Cols(qw, qw + kw)));
      SHIFT_RETURN_IF_ERROR(backend_->Copy(v.Cols(kv_at, kv_at + kw), part.Cols(qw + kw, w)));
      send_counts[s] = local * w;
      recv_counts[s] = tokens_of(s) * width_of(mine);
      at += local * w;
    }
    SHIFT_RETURN_IF_ERROR(ctx.ulysses->AllToAllV(send, send_counts, received, recv_counts));
    // Sources come in token order.
    const int64_t qw = mine.q_count * hd, kw = mine.kv_count * hd;
    SHIFT_RETURN_IF_ERROR(backend_->Copy(received.Cols(0, qw), q_mine));
    SHIFT_RETURN_IF_ERROR(backend_->Copy(received.Cols(qw, qw + kw), k_mine));
    SHIFT_RETURN_IF_ERROR(backend_->Copy(received.Cols(qw + kw, qw + 2 * kw), v_mine));
    SHIFT_RETURN_IF_ERROR(Attend(l, *ctx.step, q_mine, k_mine, v_mine, attn_mine));
    // All-to-all 2: back to "my tokens, the shard's heads".
    for (int64_t s = 0; s < sp; ++s) {
      send_counts[s] = tokens_of(s) * qw;
      recv_counts[s] = local * member(s).q_count * hd;
    }
    SHIFT_RETURN_IF_ERROR(ctx.ulysses->AllToAllV(attn_mine, send_counts, attn_back, recv_counts));
    for (int64_t s = 0, at = 0; s < sp; ++s) {
      const HeadShard from = member(s);
      const int64_t w = from.q_count * hd, q_at = (from.q_begin - all.q_begin) * hd;
      SHIFT_RETURN_IF_ERROR(
          backend_->Copy(attn_back.tensor().Cols(at, at + local * w).Reshape(local, w),
                         attn.Cols(q_at, q_at + w)));
      at += local * w;
    }
    SHIFT_RETURN_IF_ERROR(backend_->Gemm(attn, *l.o, subtree, nullptr, delta));
    SHIFT_RETURN_IF_ERROR(all_reduce());
    SHIFT_RETURN_IF_ERROR(backend_->RmsNorm(h, &delta, l.post_norm, eps, x));
    SHIFT_RETURN_IF_ERROR(backend_->Gemm(x, *l.gate, mlp_cols, nullptr, gate));
    SHIFT_RETURN_IF_ERROR(backend_->Gemm(x, *l.up, mlp_cols, nullptr, up));
    SHIFT_RETURN_IF_ERROR(backend_->SiluMul(gate, up, act));
    SHIFT_RETURN_IF_ERROR(backend_->Gemm(act, *l.down, subtree, nullptr, delta));
    SHIFT_RETURN_IF_ERROR(all_reduce());
  }
  return absl::OkStatus();
}

absl::StatusOr<Buffer> ModelExecutor::Logits(const StepContext& ctx, const Tensor& h,
                                             const Tensor& delta,
                                             absl::Span<const int64_t> sample_tokens) {
  const ModelConfig& c = config_;
  const int64_t d = c.hidden_size, vocab = c.vocab_size, p = world_size_, r = rank_;
  const int64_t n = ctx.step->layout().num_tokens(), total = sample_tokens.size();
  // Logits only for the rows that sample. TP: each rank computes its slice
  // of the vocabulary (a panel range) for every row; the base mode: the
  // ranks holding a row compute their TP shard's slice of it (all of it in
  // pure SP). Either way the leader gathers them.
  std::vector<int64_t> rows;  // local rows this rank computes
  for (int64_t g : sample_tokens) {
    if (g >= ctx.begin && g < ctx.end) rows.push_back(g - ctx.begin);
  }
  const int64_t m = static_cast<int64_t>(rows.size());
  SHIFT_ASSIGN_OR_RETURN(Buffer normed, Allocate(m, d));
  // When every row samples (decodes), the rows are the streams themselves.
  bool every_row = m == h.rows;
  for (int64_t i = 0; every_row && i < m; ++i) every_row = rows[i] == i;
  Buffer picked_rows, picked_delta_rows;
  Tensor picked = h, picked_delta = delta;
  if (!every_row) {
    SHIFT_ASSIGN_OR_RETURN(picked_rows, Allocate(m, d));
    SHIFT_RETURN_IF_ERROR(backend_->GatherRows(h, rows, picked_rows));
    picked = picked_rows.tensor();
  }
  const float eps = static_cast<float>(c.rms_norm_eps);
  if (layers_.empty()) {
    SHIFT_RETURN_IF_ERROR(backend_->RmsNorm(picked, nullptr, final_norm_, eps, normed));
  } else {
    // The last layer's output, not yet added to the residual stream (the
    // norm adds it to `picked` in place: h is not read again).
    if (!every_row) {
      SHIFT_ASSIGN_OR_RETURN(picked_delta_rows, Allocate(m, d));
      SHIFT_RETURN_IF_ERROR(backend_->GatherRows(delta, rows, picked_delta_rows));
      picked_delta = picked_delta_rows.tensor();
    }
    SHIFT_RETURN_IF_ERROR(backend_->RmsNorm(picked, &picked_delta, final_norm_, eps, normed));
  }
  const DType f32 = DType::kF32;
  if (p == 1) {
    SHIFT_ASSIGN_OR_RETURN(Buffer all, backend_->Allocate(f32, total, vocab));
    SHIFT_RETURN_IF_ERROR(backend_->Gemm(normed, *lm_head_, {}, nullptr, all));
    return all;
  }
  // Group rank s computes the rows of token slice s % row_parts (all rows
  // in TP) for vocabulary part s / row_parts of vocab_parts (TP over P: its
  // own; the base mode: its TP shard's), padded to the most rows a slice
  // holds and the widest part; the leader gathers them.
  const int64_t row_parts = ctx.sp ? layout_.sp : 1, vocab_parts = ctx.sp ? layout_.tp() : p;
  const int64_t panels = (vocab + kernels::kPanelWidth - 1) / kernels::kPanelWidth;
  const int64_t width =
      vocab_parts == 1 ? vocab : (panels + vocab_parts - 1) / vocab_parts * kernels::kPanelWidth;
  const int64_t slice = (n + row_parts - 1) / row_parts;
  auto slice_of = [&](int64_t g) { return row_parts == 1 ? 0 : g / slice; };
  int64_t most = 0;
  for (int64_t a = 0; a < row_parts; ++a) {
    most = std::max<int64_t>(most, std::count_if(sample_tokens.begin(), sample_tokens.end(),
                                                 [&](int64_t g) { return slice_of(g) == a; }));
  }
  const auto [cb, ce] = VocabOf(r / row_parts, vocab_parts);
  SHIFT_ASSIGN_OR_RETURN(Buffer padded, backend_->Allocate(f32, most, width, /*zero=*/true));
  SHIFT_RETURN_IF_ERROR(
      backend_->Gemm(normed, *lm_head_, {cb, ce}, nullptr, padded.Rows(0, m).Cols(0, ce - cb)));
  Buffer all, gathered;
  if (r == 0) {
    SHIFT_ASSIGN_OR_RETURN(all, backend_->Allocate(f32, total, vocab));
    SHIFT_ASSIGN_OR_RETURN(gathered, backend_->Allocate(f32, p * most, width));
  }
  SHIFT_RETURN_IF_ERROR(ctx.comm->Gather(padded, gathered, 0));
  if (r != 0) return all;
  // Each sampled row's place among its slice's rows.
  std::vector<int64_t> index(total);
  for (int64_t i = 0; i < total; ++i) {
    for (int64_t k = 0; k < i; ++k)
      index[i] += slice_of(sample_tokens[k]) == slice_of(sample_tokens[i]);
  }
  for (int64_t b = 0; b < vocab_parts; ++b) {
    const auto [sb, se] = VocabOf(b, vocab_parts);
    if (row_parts == 1) {  // every rank holds every row, in order
      SHIFT_RETURN_IF_ERROR(backend_->Copy(
          gathered.Rows(b * most, b * most + total).Cols(0, se - sb), all.Cols(sb, se)));
      continue;
    }
    std::vector<int64_t> from(total);  // each sampled row's row in `gathered`
    for (int64_t i = 0; i < total; ++i) {
      from[i] = (b * row_parts + slice_of(sample_tokens[i])) * most + index[i];
    }
    SHIFT_RETURN_IF_ERROR(
        backend_->GatherRows(gathered.tensor().Cols(0, se - sb), from, all.Cols(sb, se)));
  }
  return all;
}

absl::StatusOr<Buffer> ModelExecutor::Forward(const kernels::StepData& step,
                                              absl::Span<const int64_t> sample_tokens,
                                              StepMode mode, Communicator* comm) {
  const int64_t n = step.layout().num_tokens(), p = world_size_, r = rank_, d = config_.hidden_size;
  // The base mode with sp = 1 is TP over all ranks.
  const bool sp = mode == StepMode::kSequenceParallel && p > 1 && layout_.sp > 1;
  StepContext ctx;
  ctx.comm = comm;
  ctx.ulysses = comm;
  ctx.tp = nullptr;
  ctx.sp = sp;
  // The base mode's subgroups: views that run their collectives as the
  // group's (and so inside a piecewise capture's stand-in too).
  std::unique_ptr<Communicator> ulysses, tp;
  if (sp && layout_.tp() > 1) {
    ulysses = comm->Subgroup(layout_.UlyssesGroupOf(rank_));
    tp = comm->Subgroup(layout_.TpGroupOf(rank_));
    ctx.ulysses = ulysses.get();
    ctx.tp = tp.get();
  }
  const int64_t slice = sp ? (n + layout_.sp - 1) / layout_.sp : n;
  ctx.begin = sp ? std::min(layout_.ulysses_index(r) * slice, n) : 0;
  ctx.end = sp ? std::min(ctx.begin + slice, n) : n;
  ctx.step = &step;
  const int64_t local = ctx.end - ctx.begin;
  SHIFT_ASSIGN_OR_RETURN(Buffer h, Allocate(local, d));
  SHIFT_ASSIGN_OR_RETURN(Buffer delta, Allocate(local, d));
  SHIFT_RETURN_IF_ERROR(backend_->Embedding(embedding_, step, ctx.begin, h));
  // Each collective group's traffic: a view counts only its own; the
  // group's communicator, around the calls that are its alone.
  const CollectiveTraffic before = comm != nullptr ? comm->traffic() : CollectiveTraffic{};
  SHIFT_RETURN_IF_ERROR(sp ? LayersSp(ctx, h, delta) : LayersTp(ctx, h, delta));
  if (comm != nullptr) {
    if (tp != nullptr) {
      CountTraffic(kUlyssesGroup, {}, ulysses->traffic());
      CountTraffic(kTpGroup, {}, tp->traffic());
    } else {
      CountTraffic(sp ? kUlyssesGroup : kTpGroup, before, comm->traffic());
    }
  }
  const CollectiveTraffic gather_before = comm != nullptr ? comm->traffic() : CollectiveTraffic{};
  absl::StatusOr<Buffer> logits = Logits(ctx, h, delta, sample_tokens);
  if (comm != nullptr) CountTraffic(kGatherGroup, gather_before, comm->traffic());
  return logits;
}

void ModelExecutor::CountTraffic(CollectiveGroup group, const CollectiveTraffic& then,
                                 const CollectiveTraffic& now) {
  traffic_[group].bytes_sent += now.bytes_sent - then.bytes_sent;
  traffic_[group].bytes_received += now.bytes_received - then.bytes_received;
  traffic_[group].seconds += now.seconds - then.seconds;
}

const char* ModelExecutor::CollectiveGroupName(CollectiveGroup group) {
  switch (group) {
    case kUlyssesGroup:
      return "ulysses";
    case kTpGroup:
      return "tp";
    default:
      return "gather";
  }
}

bool ModelExecutor::IsGraphDecode(const kernels::StepLayout& layout,
                                  absl::Span<const int64_t> sample_tokens) const {
  const int64_t n = layout.num_tokens();
  if (graphs_.mode == DecodeGraphs::kOff || n < 1 || n > buckets_.back() ||
      static_cast<int64_t>(layout.sequences.size()) != n ||
      static_cast<int64_t>(sample_tokens.size()) != n) {
    return false;
  }
  for (int64_t i = 0; i < n; ++i) {
    if (layout.sequences[i].num_tokens != 1 || sample_tokens[i] != i) return false;
  }
  return true;
}

absl::StatusOr<std::vector<kernels::SampleResult>> ModelExecutor::DecodeStep(
    kernels::StepLayout layout, absl::Span<const kernels::SampleRequest> requests, StepMode mode,
    Communicator* comm) {
  // One rank, or a base mode that is TP over all ranks: the same step.
  if (world_size_ == 1 || layout_.sp == 1) mode = StepMode::kTensorParallel;
  const int64_t n = layout.num_tokens();
  const int64_t bucket = *std::lower_bound(buckets_.begin(), buckets_.end(), n);
  // Block tables as wide as a power of two times the smallest width, the
  // positions past a sequence's end pointing at the scratch block.
  int64_t widest = 1;
  for (const auto& s : layout.sequences) {
    widest = std::max<int64_t>(widest, static_cast<int64_t>(s.block_table.size()));
  }
  int64_t width = kMinTableWidth;
  while (width < widest) width *= 2;
  for (auto& s : layout.sequences) s.block_table.resize(width, scratch_block_);
  // Padding rows: token 0 at position 0 of the scratch block.
  for (int64_t i = n; i < bucket; ++i) {
    layout.sequences.push_back({i, 1, 0, std::vector<int32_t>(width, scratch_block_)});
    layout.token_ids.push_back(0);
    layout.positions.push_back(0);
    layout.sequence_of_token.push_back(static_cast<int32_t>(i));
  }
  std::vector<int64_t> rows(bucket);
  for (int64_t i = 0; i < bucket; ++i) rows[i] = i;
  bool captured = graphs_.mode == DecodeGraphs::kCaptured;
  auto [it, made] = decode_.try_emplace({mode, bucket, width});
  DecodeGraph& g = it->second;
  Buffer fresh;  // the logits of a step run uncaptured
  if (made) {
    absl::StatusOr<std::unique_ptr<kernels::StepData>> step =
        backend_->PrepareFixedStep(std::move(layout));
    if (!step.ok()) {
      decode_.erase(it);
      return step.status();
    }
    g.step = *std::move(step);
    if (captured) {
      absl::Status status = Record(g, rows, mode, comm);
      if (status.ok()) {
        // Recorded in pieces: the step has run already.
        if (!g.pieces.empty()) return Sample(g.logits, n, requests);
      } else {
        // A graph that cannot be recorded must not stop serving: this and
        // every later decode step runs padded and eager.
        Log(LogLevel::kWarning, "worker",
            "recording a decode step as a CUDA graph failed; decode steps run eagerly from now on",
            {{"reason", std::string(status.message())}});
        graphs_.mode = DecodeGraphs::kPadded;
        captured = false;
      }
    }
  } else {
    SHIFT_RETURN_IF_ERROR(backend_->UpdateFixedStep(*g.step, std::move(layout)));
  }
  Tensor logits;
  if (captured) {
    SHIFT_RETURN_IF_ERROR(g.graph ? backend_->Replay(*g.graph) : ReplayPieces(*backend_, g.pieces));
    logits = g.logits;
  } else {
    SHIFT_ASSIGN_OR_RETURN(fresh, Forward(*g.step, rows, mode, comm));
    logits = fresh.tensor();
  }
  return Sample(logits, n, requests);
}

absl::StatusOr<std::vector<kernels::SampleResult>> ModelExecutor::Sample(
    const Tensor& logits, int64_t n, absl::Span<const kernels::SampleRequest> requests) {
  if (rank_ != 0) return std::vector<kernels::SampleResult>{};
  return backend_->Sample(logits.Rows(0, n), requests);
}

absl::Status ModelExecutor::Record(DecodeGraph& g, absl::Span<const int64_t> rows, StepMode mode,
                                   Communicator* comm) {
  // One rank, or a group whose collectives record into graphs (and asked
  // to): the whole step, recorded, not run (the caller replays it).
  if (world_size_ == 1 || (graphs_.with_collectives && comm->records_into_graphs())) {
    SHIFT_RETURN_IF_ERROR(backend_->BeginCapture());
    absl::StatusOr<Buffer> logits = Forward(*g.step, rows, mode, comm);
    absl::StatusOr<std::unique_ptr<kernels::Graph>> graph = backend_->EndCapture();
    SHIFT_RETURN_IF_ERROR(logits.status());
    SHIFT_RETURN_IF_ERROR(graph.status());
    g.graph = *std::move(graph);
    // The graphs' own memory: valid while any graph is kept.
    g.logits = logits->tensor();
    return absl::OkStatus();
  }
  // Pieces between collectives, each run as it is recorded.
  PiecewiseCapture pieces(comm, backend_);
  SHIFT_RETURN_IF_ERROR(pieces.Begin());
  SHIFT_ASSIGN_OR_RETURN(Buffer logits, Forward(*g.step, rows, mode, &pieces));
  SHIFT_ASSIGN_OR_RETURN(g.pieces, pieces.Finish());
  g.logits = logits.tensor();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<kernels::SampleResult>> ModelExecutor::Step(
    kernels::StepLayout layout, absl::Span<const int64_t> sample_tokens,
    absl::Span<const kernels::SampleRequest> requests, StepMode mode, Communicator* comm) {
  const int64_t p = world_size_, r = rank_;
  if (p > 1 && comm == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("rank ", r, " of ", p, " has no communicator: its group is not formed"));
  }
  if (IsGraphDecode(layout, sample_tokens)) {
    return DecodeStep(std::move(layout), requests, mode, comm);
  }
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<kernels::StepData> step,
                         backend_->PrepareStep(std::move(layout)));
  SHIFT_ASSIGN_OR_RETURN(Buffer logits, Forward(*step, sample_tokens, mode, comm));
  if (r != 0) return std::vector<kernels::SampleResult>{};
  return backend_->Sample(logits, requests);
}

}  // namespace shift
