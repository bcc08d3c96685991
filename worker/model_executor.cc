#include "worker/model_executor.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
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

// Why a group of p ranks cannot split this model; empty when it can.
std::string SplitProblem(const ModelConfig& c, int64_t p) {
  const int64_t kv = c.num_key_value_heads, panel = kernels::kPanelWidth;
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

// Block tables of a decode graph hold this many blocks, or a power of two
// times it: a few widths serve every context.
constexpr int64_t kMinTableWidth = 64;

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
                             int world_size, DecodeGraphs graphs)
    : config_(std::move(config)),
      backend_(backend),
      rank_(rank),
      world_size_(world_size),
      graphs_(graphs) {
  shard_ = ShardOf(rank_);
  if (graphs_.max_batch < 1) graphs_.mode = DecodeGraphs::kOff;
  if (graphs_.mode != DecodeGraphs::kOff) buckets_ = DecodeBuckets(graphs_.max_batch);
}

HeadShard ModelExecutor::ShardOf(int r) const {
  const int64_t p = world_size_, heads = config_.num_attention_heads,
                kv = config_.num_key_value_heads;
  HeadShard shard;
  shard.q_begin = r * heads / p;
  shard.q_count = heads / p;
  // With fewer kv heads than ranks, a kv head is replicated on p / kv ranks.
  shard.kv_begin = r * kv / p;
  shard.kv_count = kv >= p ? kv / p : 1;
  return shard;
}

absl::StatusOr<std::unique_ptr<ModelExecutor>> ModelExecutor::Create(
    const std::string& dir, const ModelConfig& c, const Checkpoint& checkpoint,
    kernels::Backend* backend, int rank, int world_size, int64_t kv_cache_bytes, int64_t block_size,
    DecodeGraphs graphs) {
  if (std::string why = SplitProblem(c, world_size); !why.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": this model cannot run on a group of ", world_size, " ranks: ", why));
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
  std::unique_ptr<ModelExecutor> executor(new ModelExecutor(c, backend, rank, world_size, graphs));
  SHIFT_RETURN_IF_ERROR(executor->Load(checkpoint));
  SHIFT_RETURN_IF_ERROR(executor->AllocateKv(kv_cache_bytes, block_size));
  return executor;
}

absl::StatusOr<Buffer> ModelExecutor::Allocate(int64_t rows, int64_t cols, bool zero) {
  return backend_->Allocate(backend_->activation_dtype(), rows, cols, zero);
}

absl::Status ModelExecutor::Load(const Checkpoint& checkpoint) {
  std::vector<float> host;
  auto read = [&](const std::string& name, int64_t rows, int64_t cols) -> absl::Status {
    host.resize(rows * cols);
    weight_bytes_ += rows * cols * sizeof(float);
    return ReadWeightAsF32(checkpoint, config_, name, rows, cols, host.data());
  };
  auto vector = [&](const std::string& name, int64_t n, Buffer* out) -> absl::Status {
    host.resize(n);
    weight_bytes_ += n * sizeof(float);
    SHIFT_RETURN_IF_ERROR(checkpoint.ReadAsF32(name, {n}, host.data()));
    SHIFT_ASSIGN_OR_RETURN(*out, Allocate(1, n));
    return backend_->CopyFromHost(host.data(), *out);
  };
  auto weight = [&](const std::string& name, int64_t n, int64_t k,
                    std::unique_ptr<kernels::Weight>* out) -> absl::Status {
    // FP8 weights go to the backend as they are stored (it may keep them).
    SHIFT_ASSIGN_OR_RETURN(std::optional<Fp8Weight> fp8,
                           ReadFp8Weight(checkpoint, config_, name, n, k));
    if (fp8) {
      weight_bytes_ += n * k * sizeof(float);
      SHIFT_ASSIGN_OR_RETURN(*out,
                             backend_->UploadWeightFp8(fp8->codes, fp8->row_scales.data(), n, k));
      return absl::OkStatus();
    }
    SHIFT_RETURN_IF_ERROR(read(name, n, k));
    SHIFT_ASSIGN_OR_RETURN(*out, backend_->UploadWeight(host.data(), n, k));
    return absl::OkStatus();
  };
  const ModelConfig& c = config_;
  const int64_t d = c.hidden_size, q = c.num_attention_heads * c.head_dim,
                kv = c.num_key_value_heads * c.head_dim, inter = c.intermediate_size;
  SHIFT_ASSIGN_OR_RETURN(rope_, backend_->UploadRope({c.head_dim, c.rope_theta, Scaling(c)}));
  SHIFT_RETURN_IF_ERROR(read("model.embed_tokens.weight", c.vocab_size, d));
  SHIFT_ASSIGN_OR_RETURN(embedding_, Allocate(c.vocab_size, d));
  SHIFT_RETURN_IF_ERROR(backend_->CopyFromHost(host.data(), embedding_));
  if (c.tie_word_embeddings) {
    SHIFT_ASSIGN_OR_RETURN(lm_head_, backend_->UploadWeight(host.data(), c.vocab_size, d));
  } else {
    SHIFT_RETURN_IF_ERROR(weight("lm_head.weight", c.vocab_size, d, &lm_head_));
  }
  SHIFT_RETURN_IF_ERROR(vector("model.norm.weight", d, &final_norm_));
  layers_.resize(c.num_hidden_layers);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    Layer& l = layers_[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    SHIFT_RETURN_IF_ERROR(vector(p + "input_layernorm.weight", d, &l.input_norm));
    SHIFT_RETURN_IF_ERROR(vector(p + "post_attention_layernorm.weight", d, &l.post_norm));
    SHIFT_RETURN_IF_ERROR(weight(p + "self_attn.q_proj.weight", q, d, &l.q));
    SHIFT_RETURN_IF_ERROR(weight(p + "self_attn.k_proj.weight", kv, d, &l.k));
    SHIFT_RETURN_IF_ERROR(weight(p + "self_attn.v_proj.weight", kv, d, &l.v));
    SHIFT_RETURN_IF_ERROR(weight(p + "self_attn.o_proj.weight", d, q, &l.o));
    SHIFT_RETURN_IF_ERROR(weight(p + "mlp.gate_proj.weight", inter, d, &l.gate));
    SHIFT_RETURN_IF_ERROR(weight(p + "mlp.up_proj.weight", inter, d, &l.up));
    SHIFT_RETURN_IF_ERROR(weight(p + "mlp.down_proj.weight", d, inter, &l.down));
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
  for (Layer& l : layers_) {
    SHIFT_ASSIGN_OR_RETURN(l.k_cache, Allocate(blocks * block_size, width, /*zero=*/true));
    SHIFT_ASSIGN_OR_RETURN(l.v_cache, Allocate(blocks * block_size, width, /*zero=*/true));
    l.kv = {l.k_cache, l.v_cache, block_size, shard_.kv_count, c.head_dim};
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
                hd = c.head_dim, p = world_size_;
  const int64_t heads = c.num_attention_heads, kv_heads = c.num_key_value_heads;
  const int64_t inter = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const HeadShard all{0, kv_heads, 0, heads};
  const HeadShard& mine = shard_;
  const int64_t slice = (n + p - 1) / p;  // tokens per rank, the last ones padded
  auto tokens_of = [&](int64_t rank) {
    const int64_t b = std::min(rank * slice, n);
    return std::min(b + slice, n) - b;
  };
  // Per token, what rank s receives of it after all-to-all 1: its query
  // heads, then its K and V heads.
  auto width_of = [&](const HeadShard& s) { return (s.q_count + 2 * s.kv_count) * hd; };
  int64_t send_total = 0;
  for (int64_t s = 0; s < p; ++s) send_total += local * width_of(ShardOf(static_cast<int>(s)));
  SHIFT_ASSIGN_OR_RETURN(Buffer x, Allocate(local, d));
  SHIFT_ASSIGN_OR_RETURN(Buffer q, Allocate(local, heads * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer k, Allocate(local, kv_heads * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer v, Allocate(local, kv_heads * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer send, Allocate(1, send_total));
  SHIFT_ASSIGN_OR_RETURN(Buffer received, Allocate(n, width_of(mine)));
  SHIFT_ASSIGN_OR_RETURN(Buffer q_mine, Allocate(n, mine.q_count * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer k_mine, Allocate(n, mine.kv_count * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer v_mine, Allocate(n, mine.kv_count * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer attn_mine, Allocate(n, mine.q_count * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer attn_back, Allocate(1, local * heads * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer attn, Allocate(local, heads * hd));
  SHIFT_ASSIGN_OR_RETURN(Buffer gate, Allocate(local, inter));
  SHIFT_ASSIGN_OR_RETURN(Buffer up, Allocate(local, inter));
  SHIFT_ASSIGN_OR_RETURN(Buffer act, Allocate(local, inter));
  std::vector<int64_t> send_counts(p), recv_counts(p);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    SHIFT_RETURN_IF_ERROR(backend_->RmsNorm(h, i == 0 ? nullptr : &delta, l.input_norm, eps, x));
    SHIFT_RETURN_IF_ERROR(Project(l, x, all, *ctx.step, ctx.begin, q, k, v));
    // All-to-all 1: "my tokens, all heads" -> "all tokens, my heads". A kv
    // head held by several ranks is sent to each of them.
    for (int64_t s = 0, at = 0; s < p; ++s) {
      const HeadShard to = ShardOf(static_cast<int>(s));
      const int64_t w = width_of(to), qw = to.q_count * hd, kw = to.kv_count * hd;
      const Tensor part = send.tensor().Cols(at, at + local * w).Reshape(local, w);
      SHIFT_RETURN_IF_ERROR(
          backend_->Copy(q.Cols(to.q_begin * hd, to.q_begin * hd + qw), part.Cols(0, qw)));
      SHIFT_RETURN_IF_ERROR(
          backend_->Copy(k.Cols(to.kv_begin * hd, to.kv_begin * hd + kw), part.Cols(qw, qw + kw)));
      SHIFT_RETURN_IF_ERROR(
          backend_->Copy(v.Cols(to.kv_begin * hd, to.kv_begin * hd + kw), part.Cols(qw + kw, w)));
      send_counts[s] = local * w;
      recv_counts[s] = tokens_of(s) * width_of(mine);
      at += local * w;
    }
    SHIFT_RETURN_IF_ERROR(ctx.comm->AllToAllV(send, send_counts, received, recv_counts));
    // Sources come in token order.
    const int64_t qw = mine.q_count * hd, kw = mine.kv_count * hd;
    SHIFT_RETURN_IF_ERROR(backend_->Copy(received.Cols(0, qw), q_mine));
    SHIFT_RETURN_IF_ERROR(backend_->Copy(received.Cols(qw, qw + kw), k_mine));
    SHIFT_RETURN_IF_ERROR(backend_->Copy(received.Cols(qw + kw, qw + 2 * kw), v_mine));
    SHIFT_RETURN_IF_ERROR(Attend(l, *ctx.step, q_mine, k_mine, v_mine, attn_mine));
    // All-to-all 2: back to "my tokens, all heads".
    for (int64_t s = 0; s < p; ++s) {
      send_counts[s] = tokens_of(s) * qw;
      recv_counts[s] = local * ShardOf(static_cast<int>(s)).q_count * hd;
    }
    SHIFT_RETURN_IF_ERROR(ctx.comm->AllToAllV(attn_mine, send_counts, attn_back, recv_counts));
    for (int64_t s = 0, at = 0; s < p; ++s) {
      const HeadShard from = ShardOf(static_cast<int>(s));
      const int64_t w = from.q_count * hd;
      SHIFT_RETURN_IF_ERROR(
          backend_->Copy(attn_back.tensor().Cols(at, at + local * w).Reshape(local, w),
                         attn.Cols(from.q_begin * hd, from.q_begin * hd + w)));
      at += local * w;
    }
    SHIFT_RETURN_IF_ERROR(backend_->Gemm(attn, *l.o, {}, nullptr, delta));
    SHIFT_RETURN_IF_ERROR(backend_->RmsNorm(h, &delta, l.post_norm, eps, x));
    SHIFT_RETURN_IF_ERROR(backend_->Gemm(x, *l.gate, {}, nullptr, gate));
    SHIFT_RETURN_IF_ERROR(backend_->Gemm(x, *l.up, {}, nullptr, up));
    SHIFT_RETURN_IF_ERROR(backend_->SiluMul(gate, up, act));
    SHIFT_RETURN_IF_ERROR(backend_->Gemm(act, *l.down, {}, nullptr, delta));
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
  // of the vocabulary (a panel range) for every row; SP: the rank holding a
  // row computes all of it. Either way the leader gathers them.
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
  const int64_t panels = (vocab + kernels::kPanelWidth - 1) / kernels::kPanelWidth;
  auto vocab_of = [&](int64_t rank) {
    return std::make_pair(std::min(rank * panels / p * kernels::kPanelWidth, vocab),
                          std::min((rank + 1) * panels / p * kernels::kPanelWidth, vocab));
  };
  const DType f32 = DType::kF32;
  if (p == 1) {
    SHIFT_ASSIGN_OR_RETURN(Buffer all, backend_->Allocate(f32, total, vocab));
    SHIFT_RETURN_IF_ERROR(backend_->Gemm(normed, *lm_head_, {}, nullptr, all));
    return all;
  }
  Buffer all;
  if (r == 0) {
    SHIFT_ASSIGN_OR_RETURN(all, backend_->Allocate(f32, total, vocab));
  }
  if (!ctx.sp) {
    // Each rank sends [rows][its columns], padded to the widest slice.
    const int64_t width = (panels + p - 1) / p * kernels::kPanelWidth;
    const auto [cb, ce] = vocab_of(r);
    SHIFT_ASSIGN_OR_RETURN(Buffer padded, backend_->Allocate(f32, total, width, /*zero=*/true));
    SHIFT_RETURN_IF_ERROR(
        backend_->Gemm(normed, *lm_head_, {cb, ce}, nullptr, padded.Cols(0, ce - cb)));
    Buffer gathered;
    if (r == 0) {
      SHIFT_ASSIGN_OR_RETURN(gathered, backend_->Allocate(f32, p * total, width));
    }
    SHIFT_RETURN_IF_ERROR(ctx.comm->Gather(padded, gathered, 0));
    for (int64_t s = 0; r == 0 && s < p; ++s) {
      const auto [sb, se] = vocab_of(s);
      SHIFT_RETURN_IF_ERROR(backend_->Copy(
          gathered.Rows(s * total, (s + 1) * total).Cols(0, se - sb), all.Cols(sb, se)));
    }
    return all;
  }
  // Each rank sends its rows' full logits, padded to the most rows any rank
  // holds; rows arrive in token order.
  const int64_t slice = (n + p - 1) / p;
  int64_t most = 0;
  for (int64_t s = 0; s < p; ++s) {
    const int64_t b = std::min(s * slice, n), e = std::min(b + slice, n);
    most = std::max<int64_t>(most, std::count_if(sample_tokens.begin(), sample_tokens.end(),
                                                 [&](int64_t g) { return g >= b && g < e; }));
  }
  SHIFT_ASSIGN_OR_RETURN(Buffer padded, backend_->Allocate(f32, most, vocab, /*zero=*/true));
  SHIFT_RETURN_IF_ERROR(backend_->Gemm(normed, *lm_head_, {}, nullptr, padded.Rows(0, m)));
  Buffer gathered;
  if (r == 0) {
    SHIFT_ASSIGN_OR_RETURN(gathered, backend_->Allocate(f32, p * most, vocab));
  }
  SHIFT_RETURN_IF_ERROR(ctx.comm->Gather(padded, gathered, 0));
  if (r != 0) return all;
  std::vector<int64_t> from(total);  // each sampled row's row in `gathered`
  for (int64_t i = 0; i < total; ++i) {
    const int64_t owner = sample_tokens[i] / slice;
    int64_t index = 0;  // position of this row among its owner's rows
    for (int64_t j = 0; j < i; ++j) index += sample_tokens[j] / slice == owner;
    from[i] = owner * most + index;
  }
  SHIFT_RETURN_IF_ERROR(backend_->GatherRows(gathered, from, all));
  return all;
}

absl::StatusOr<Buffer> ModelExecutor::Forward(const kernels::StepData& step,
                                              absl::Span<const int64_t> sample_tokens,
                                              StepMode mode, Communicator* comm) {
  const int64_t n = step.layout().num_tokens(), p = world_size_, r = rank_, d = config_.hidden_size;
  const bool sp = mode == StepMode::kSequenceParallel && p > 1;
  const int64_t slice = (n + p - 1) / p;
  StepContext ctx;
  ctx.comm = comm;
  ctx.sp = sp;
  ctx.begin = sp ? std::min(r * slice, n) : 0;
  ctx.end = sp ? std::min(ctx.begin + slice, n) : n;
  ctx.step = &step;
  const int64_t local = ctx.end - ctx.begin;
  SHIFT_ASSIGN_OR_RETURN(Buffer h, Allocate(local, d));
  SHIFT_ASSIGN_OR_RETURN(Buffer delta, Allocate(local, d));
  SHIFT_RETURN_IF_ERROR(backend_->Embedding(embedding_, step, ctx.begin, h));
  SHIFT_RETURN_IF_ERROR(sp ? LayersSp(ctx, h, delta) : LayersTp(ctx, h, delta));
  return Logits(ctx, h, delta, sample_tokens);
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
  if (world_size_ == 1) mode = StepMode::kTensorParallel;  // one rank: the same step
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
        std::fprintf(stderr,
                     "shift: recording a decode step as a CUDA graph failed (%s); decode steps "
                     "run eagerly from now on\n",
                     std::string(status.message()).c_str());
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
