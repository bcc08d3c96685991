#include "worker/engine.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/model_schema.h"
#include "common/status.h"
#include "kernels/cpu/parallel.h"

namespace shift {
namespace {

using kernels::cpu::KvView;
using kernels::cpu::PackedWeight;

std::optional<kernels::cpu::Llama3Scaling> Scaling(const ModelConfig& c) {
  if (!c.rope_scaling) return std::nullopt;
  return kernels::cpu::Llama3Scaling{c.rope_scaling->factor, c.rope_scaling->low_freq_factor,
                                     c.rope_scaling->high_freq_factor,
                                     c.rope_scaling->original_max_position_embeddings};
}

}  // namespace

Engine::Engine(ModelConfig config, EngineOptions options, Communicator* comm)
    : config_(std::move(config)),
      options_(options),
      comm_(comm),
      rope_(config_.head_dim, config_.rope_theta, Scaling(config_)) {
  shard_ = ShardOf(rank());
}

absl::Status Engine::Attach(Communicator* comm) {
  if (comm != nullptr && (comm->rank() != rank() || comm->size() != world_size())) {
    return absl::InvalidArgumentError(absl::StrCat("a communicator for rank ", comm->rank(), " of ",
                                                   comm->size(), " cannot serve rank ", rank(),
                                                   " of ", world_size()));
  }
  comm_ = comm;
  return absl::OkStatus();
}

absl::Status Engine::RequireCommunicator() const {
  if (world_size() > 1 && comm_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "rank ", rank(), " of ", world_size(), " has no communicator: its group is not formed"));
  }
  return absl::OkStatus();
}

Engine::Shard Engine::ShardOf(int r) const {
  const int64_t p = world_size(), heads = config_.num_attention_heads,
                kv = config_.num_key_value_heads;
  Shard shard;
  shard.q_begin = r * heads / p;
  shard.q_count = heads / p;
  // With fewer kv heads than ranks, a kv head is replicated on p / kv ranks.
  shard.kv_begin = r * kv / p;
  shard.kv_count = kv >= p ? kv / p : 1;
  return shard;
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const ModelFiles& files,
                                                       const EngineOptions& options_in,
                                                       Communicator* comm_in) {
  const ModelConfig& c = files.config;
  EngineOptions options = options_in;
  if (comm_in != nullptr) {
    options.rank = comm_in->rank();
    options.world_size = comm_in->size();
  }
  const int64_t p = options.world_size;
  if (p < 1 || options.rank < 0 || options.rank >= p) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " is outside a group of ", p));
  }
  if (p > 1) {
    const int64_t kv = c.num_key_value_heads, panel = kernels::cpu::kPanelWidth;
    std::string why;
    if (p != 2 && p != 4 && p != 8) {
      why = "deterministic TP needs 1, 2, 4 or 8 ranks";
    } else if (c.num_attention_heads % p != 0) {
      why = absl::StrCat(c.num_attention_heads, " query heads cannot be split over ", p, " ranks");
    } else if (kv % p != 0 && p % kv != 0) {
      why = absl::StrCat(kv, " kv heads cannot be split over (or replicated on) ", p, " ranks");
    } else if (c.head_dim % panel != 0 || c.intermediate_size % (panel * p) != 0) {
      why = absl::StrCat("TP slices must align to ", panel,
                         "-column panels: head_dim and intermediate_size / ranks must be "
                         "multiples of ",
                         panel);
    }
    if (!why.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(files.dir, ": this model cannot run on a group of ", p, " ranks: ", why));
    }
  }
  for (int64_t k : {c.hidden_size, c.intermediate_size, c.head_dim}) {
    if (k % kernels::cpu::kReductionGroups != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(files.dir,
                       ": every GEMM reduction length must be a multiple of 8 (hidden_size, "
                       "intermediate_size, head_dim); got ",
                       k));
    }
  }
  if (options.block_size <= 0) return absl::InvalidArgumentError("block size must be positive");
  std::unique_ptr<Engine> engine(new Engine(c, options, comm_in));
  SHIFT_RETURN_IF_ERROR(engine->Load(*files.checkpoint));
  // Each rank caches only its kv-head shard.
  const int64_t kv_heads = engine->shard_.kv_count;
  const int64_t block_bytes =
      2 * c.num_hidden_layers * options.block_size * kv_heads * c.head_dim * sizeof(float);
  engine->num_blocks_ = options.kv_cache_bytes / block_bytes;
  if (engine->num_blocks_ < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--kv-cache-bytes ", options.kv_cache_bytes,
                                                   " is below one KV block (", block_bytes,
                                                   " bytes)"));
  }
  const int64_t layer_floats = engine->num_blocks_ * options.block_size * kv_heads * c.head_dim;
  for (Layer& layer : engine->layers_) {
    layer.k_cache.assign(layer_floats, 0.0f);
    layer.v_cache.assign(layer_floats, 0.0f);
  }
  return engine;
}

absl::Status Engine::Load(const Checkpoint& checkpoint) {
  std::vector<float> buffer;
  auto read = [&](const std::string& name, std::vector<int64_t> shape,
                  std::vector<float>* out) -> absl::Status {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    out->resize(n);
    weight_bytes_ += n * sizeof(float);
    return checkpoint.ReadAsF32(name, shape, out->data());
  };
  auto packed = [&](const std::string& name, int64_t n, int64_t k,
                    PackedWeight* out) -> absl::Status {
    SHIFT_RETURN_IF_ERROR(read(name, {n, k}, &buffer));
    *out = PackedWeight::Pack(buffer.data(), n, k);
    return absl::OkStatus();
  };
  const ModelConfig& c = config_;
  const int64_t d = c.hidden_size, q = c.num_attention_heads * c.head_dim,
                kv = c.num_key_value_heads * c.head_dim, inter = c.intermediate_size;
  SHIFT_RETURN_IF_ERROR(read("model.embed_tokens.weight", {c.vocab_size, d}, &embedding_));
  SHIFT_RETURN_IF_ERROR(read("model.norm.weight", {d}, &final_norm_));
  if (c.tie_word_embeddings) {
    lm_head_ = PackedWeight::Pack(embedding_.data(), c.vocab_size, d);
  } else {
    SHIFT_RETURN_IF_ERROR(packed("lm_head.weight", c.vocab_size, d, &lm_head_));
  }
  layers_.resize(c.num_hidden_layers);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    Layer& l = layers_[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    SHIFT_RETURN_IF_ERROR(read(p + "input_layernorm.weight", {d}, &l.input_norm));
    SHIFT_RETURN_IF_ERROR(read(p + "post_attention_layernorm.weight", {d}, &l.post_norm));
    SHIFT_RETURN_IF_ERROR(packed(p + "self_attn.q_proj.weight", q, d, &l.q));
    SHIFT_RETURN_IF_ERROR(packed(p + "self_attn.k_proj.weight", kv, d, &l.k));
    SHIFT_RETURN_IF_ERROR(packed(p + "self_attn.v_proj.weight", kv, d, &l.v));
    SHIFT_RETURN_IF_ERROR(packed(p + "self_attn.o_proj.weight", d, q, &l.o));
    SHIFT_RETURN_IF_ERROR(packed(p + "mlp.gate_proj.weight", inter, d, &l.gate));
    SHIFT_RETURN_IF_ERROR(packed(p + "mlp.up_proj.weight", inter, d, &l.up));
    SHIFT_RETURN_IF_ERROR(packed(p + "mlp.down_proj.weight", d, inter, &l.down));
    if (c.attention_bias) {
      SHIFT_RETURN_IF_ERROR(read(p + "self_attn.q_proj.bias", {q}, &l.q_bias));
      SHIFT_RETURN_IF_ERROR(read(p + "self_attn.k_proj.bias", {kv}, &l.k_bias));
      SHIFT_RETURN_IF_ERROR(read(p + "self_attn.v_proj.bias", {kv}, &l.v_bias));
    }
  }
  return absl::OkStatus();
}

absl::Status Engine::Validate(const std::vector<SequenceStep>& batch) const {
  for (const SequenceStep& s : batch) {
    if (s.token_ids.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, " has no tokens"));
    }
    const int64_t end = s.start_position + static_cast<int64_t>(s.token_ids.size());
    if (s.start_position < 0 || end > config_.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, " positions [",
                                                     s.start_position, ", ", end,
                                                     ") exceed the model's context"));
    }
    if (static_cast<int64_t>(s.block_table.size()) * options_.block_size < end) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sequence ", s.seq_id, " needs ", (end + options_.block_size - 1) / options_.block_size,
          " blocks, has ", s.block_table.size()));
    }
    for (int32_t b : s.block_table) {
      if (b < 0 || b >= num_blocks_) {
        return absl::InvalidArgumentError(
            absl::StrCat("sequence ", s.seq_id, " uses block ", b, " of ", num_blocks_));
      }
    }
    for (int32_t id : s.token_ids) {
      if (id < 0 || id >= config_.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("sequence ", s.seq_id, " has token id ", id, " outside the vocabulary"));
      }
    }
  }
  return absl::OkStatus();
}

void Engine::Gemm(const std::vector<float>& x, int64_t rows, int64_t ldx, const PackedWeight& w,
                  const kernels::cpu::GemmRange& range, std::vector<float>* y) const {
  const int64_t n_end = range.n_end < 0 ? w.n() : range.n_end;
  const int64_t cols = n_end - range.n_begin;
  y->resize(rows * cols);
  kernels::cpu::Gemm(x.data(), rows, ldx, w, range, y->data(), cols, options_.threads);
  gemm_flops_ += static_cast<uint64_t>(2 * rows * cols * (w.k() / kernels::cpu::kReductionGroups) *
                                       range.group_count);
}

void Engine::Project(const Layer& l, const std::vector<float>& x, int64_t rows,
                     const std::vector<int64_t>& pos, const Shard& shard, std::vector<float>* q,
                     std::vector<float>* k, std::vector<float>* v) const {
  const int64_t d = config_.hidden_size, hd = config_.head_dim;
  const kernels::cpu::GemmRange q_cols{shard.q_begin * hd, (shard.q_begin + shard.q_count) * hd};
  const kernels::cpu::GemmRange kv_cols{shard.kv_begin * hd,
                                        (shard.kv_begin + shard.kv_count) * hd};
  // K and V have their own calls, so a rank's slice is a plain column range.
  Gemm(x, rows, d, l.q, q_cols, q);
  Gemm(x, rows, d, l.k, kv_cols, k);
  Gemm(x, rows, d, l.v, kv_cols, v);
  if (config_.attention_bias) {
    kernels::cpu::AddBias(q->data(), rows, shard.q_count * hd, l.q_bias.data() + q_cols.n_begin);
    kernels::cpu::AddBias(k->data(), rows, shard.kv_count * hd, l.k_bias.data() + kv_cols.n_begin);
    kernels::cpu::AddBias(v->data(), rows, shard.kv_count * hd, l.v_bias.data() + kv_cols.n_begin);
  }
  for (int64_t t = 0; t < rows; ++t) {
    rope_.Apply(q->data() + t * shard.q_count * hd, shard.q_count, pos[t]);
    rope_.Apply(k->data() + t * shard.kv_count * hd, shard.kv_count, pos[t]);
  }
}

void Engine::Attend(Layer& l, const std::vector<SequenceStep>& batch, const Tokens& tokens,
                    const std::vector<float>& q, const std::vector<float>& k,
                    const std::vector<float>& v, std::vector<float>* attn) {
  const int64_t hd = config_.head_dim, qc = shard_.q_count, kc = shard_.kv_count;
  const int64_t n = static_cast<int64_t>(tokens.ids.size());
  const KvView cache{l.k_cache.data(), l.v_cache.data(), options_.block_size, kc, hd};
  // Each sequence's new K/V go in first, so its tokens attend to each other
  // (causally) and to its cached context in one kernel.
  for (int64_t t = 0, s = 0; s < static_cast<int64_t>(batch.size()); ++s) {
    const int64_t count = static_cast<int64_t>(batch[s].token_ids.size());
    kernels::cpu::WriteKv(cache, batch[s].block_table, batch[s].start_position, count,
                          k.data() + t * kc * hd, v.data() + t * kc * hd);
    t += count;
  }
  int64_t max_pos = 0, work = 0;
  for (int64_t p : tokens.pos) {
    max_pos = std::max(max_pos, p);
    work += (p + 1) * qc;
  }
  attn->resize(n * qc * hd);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // Tokens are independent here; spread them over the threads when the step
  // attends to enough context to pay for them.
  kernels::cpu::ParallelFor(
      n, work > (1 << 16) ? options_.threads : 1, [&](int64_t begin, int64_t end) {
        std::vector<float> scratch(max_pos + 1);
        for (int64_t t = begin; t < end; ++t) {
          kernels::cpu::AttendOne(cache, batch[tokens.seq[t]].block_table, tokens.pos[t],
                                  q.data() + t * qc * hd, qc, scale, attn->data() + t * qc * hd,
                                  scratch.data());
        }
      });
}

absl::Status Engine::LayersTp(const std::vector<SequenceStep>& batch, const Tokens& tokens,
                              std::vector<float>* h) {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(tokens.ids.size()), d = c.hidden_size, hd = c.head_dim,
                p = world_size(), r = rank();
  const float eps = static_cast<float>(c.rms_norm_eps);
  // Row-parallel layers: this rank owns the subtree of groups r·8/P...
  kernels::cpu::GemmRange subtree;
  subtree.group_count = static_cast<int>(kernels::cpu::kReductionGroups / p);
  subtree.group_begin = static_cast<int>(r) * subtree.group_count;
  const int64_t inter = c.intermediate_size / p;
  const kernels::cpu::GemmRange mlp_cols{r * inter, (r + 1) * inter};
  std::vector<float> x(n * d), q, k, v, attn, o, gate, up, act(n * inter);
  auto all_reduce_add = [&](std::vector<float>& partial) -> absl::Status {
    if (p > 1) SHIFT_RETURN_IF_ERROR(comm_->DeterministicAllReduce(partial.data(), n * d));
    for (int64_t i = 0; i < n * d; ++i) (*h)[i] = (*h)[i] + partial[i];
    return absl::OkStatus();
  };
  for (Layer& l : layers_) {
    kernels::cpu::RmsNorm(h->data(), n, d, l.input_norm.data(), eps, x.data());
    Project(l, x, n, tokens.pos, shard_, &q, &k, &v);
    Attend(l, batch, tokens, q, k, v, &attn);
    Gemm(attn, n, shard_.q_count * hd, l.o, subtree, &o);
    SHIFT_RETURN_IF_ERROR(all_reduce_add(o));
    kernels::cpu::RmsNorm(h->data(), n, d, l.post_norm.data(), eps, x.data());
    Gemm(x, n, d, l.gate, mlp_cols, &gate);
    Gemm(x, n, d, l.up, mlp_cols, &up);
    kernels::cpu::SiluMul(gate.data(), up.data(), n, inter, act.data());
    Gemm(act, n, inter, l.down, subtree, &o);
    SHIFT_RETURN_IF_ERROR(all_reduce_add(o));
  }
  return absl::OkStatus();
}

absl::Status Engine::LayersSp(const std::vector<SequenceStep>& batch, const Tokens& tokens,
                              int64_t begin, int64_t end, std::vector<float>* h) {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(tokens.ids.size()), local = end - begin, d = c.hidden_size,
                hd = c.head_dim, p = world_size();
  const int64_t heads = c.num_attention_heads, kv_heads = c.num_key_value_heads;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const Shard all{0, kv_heads, 0, heads};
  const int64_t slice = (n + p - 1) / p;  // tokens per rank, the last ones padded
  auto tokens_of = [&](int64_t rank) {
    const int64_t b = std::min(rank * slice, n);
    return std::make_pair(b, std::min(b + slice, n));
  };
  const std::vector<int64_t> local_pos(tokens.pos.begin() + begin, tokens.pos.begin() + end);
  std::vector<float> x(local * d), q, k, v, attn, o, gate, up, act;
  std::vector<float> send, received, q_mine, k_mine, v_mine, attn_mine;
  std::vector<int64_t> send_counts(p), recv_counts(p);
  const int64_t mine = (shard_.q_count + 2 * shard_.kv_count) * hd;  // floats per token
  for (Layer& l : layers_) {
    kernels::cpu::RmsNorm(h->data(), local, d, l.input_norm.data(), eps, x.data());
    Project(l, x, local, local_pos, all, &q, &k, &v);
    // All-to-all 1: "my tokens, all heads" -> "all tokens, my heads". A kv
    // head held by several ranks is sent to each of them.
    send.clear();
    for (int64_t s = 0; s < p; ++s) {
      const Shard to = ShardOf(static_cast<int>(s));
      for (int64_t t = 0; t < local; ++t) {
        const float* qt = q.data() + t * heads * hd + to.q_begin * hd;
        send.insert(send.end(), qt, qt + to.q_count * hd);
        const float* kt = k.data() + t * kv_heads * hd + to.kv_begin * hd;
        send.insert(send.end(), kt, kt + to.kv_count * hd);
        const float* vt = v.data() + t * kv_heads * hd + to.kv_begin * hd;
        send.insert(send.end(), vt, vt + to.kv_count * hd);
      }
      send_counts[s] = local * (to.q_count + 2 * to.kv_count) * hd;
      const auto [b, e] = tokens_of(s);
      recv_counts[s] = (e - b) * mine;
    }
    received.resize(n * mine);
    SHIFT_RETURN_IF_ERROR(comm_->AllToAllV(send.data(), send_counts, received.data(), recv_counts));
    q_mine.resize(n * shard_.q_count * hd);
    k_mine.resize(n * shard_.kv_count * hd);
    v_mine.resize(n * shard_.kv_count * hd);
    for (int64_t t = 0; t < n; ++t) {  // sources come in token order
      const float* row = received.data() + t * mine;
      std::copy(row, row + shard_.q_count * hd, q_mine.begin() + t * shard_.q_count * hd);
      row += shard_.q_count * hd;
      std::copy(row, row + shard_.kv_count * hd, k_mine.begin() + t * shard_.kv_count * hd);
      row += shard_.kv_count * hd;
      std::copy(row, row + shard_.kv_count * hd, v_mine.begin() + t * shard_.kv_count * hd);
    }
    Attend(l, batch, tokens, q_mine, k_mine, v_mine, &attn_mine);
    // All-to-all 2: back to "my tokens, all heads".
    for (int64_t s = 0; s < p; ++s) {
      const auto [b, e] = tokens_of(s);
      send_counts[s] = (e - b) * shard_.q_count * hd;
      recv_counts[s] = local * ShardOf(static_cast<int>(s)).q_count * hd;
    }
    received.resize(local * heads * hd);
    SHIFT_RETURN_IF_ERROR(
        comm_->AllToAllV(attn_mine.data(), send_counts, received.data(), recv_counts));
    attn.resize(local * heads * hd);
    for (int64_t s = 0, at = 0; s < p; ++s) {
      const Shard from = ShardOf(static_cast<int>(s));
      for (int64_t t = 0; t < local; ++t, at += from.q_count * hd) {
        std::copy(received.begin() + at, received.begin() + at + from.q_count * hd,
                  attn.begin() + t * heads * hd + from.q_begin * hd);
      }
    }
    Gemm(attn, local, heads * hd, l.o, {}, &o);
    for (int64_t i = 0; i < local * d; ++i) (*h)[i] = (*h)[i] + o[i];
    kernels::cpu::RmsNorm(h->data(), local, d, l.post_norm.data(), eps, x.data());
    Gemm(x, local, d, l.gate, {}, &gate);
    Gemm(x, local, d, l.up, {}, &up);
    act.resize(gate.size());
    kernels::cpu::SiluMul(gate.data(), up.data(), local, c.intermediate_size, act.data());
    Gemm(act, local, c.intermediate_size, l.down, {}, &o);
    for (int64_t i = 0; i < local * d; ++i) (*h)[i] = (*h)[i] + o[i];
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<EngineSample>> Engine::Step(const std::vector<SequenceStep>& batch,
                                                       StepMode mode) {
  SHIFT_RETURN_IF_ERROR(RequireCommunicator());
  SHIFT_RETURN_IF_ERROR(Validate(batch));
  const ModelConfig& c = config_;
  const int64_t d = c.hidden_size, vocab = c.vocab_size, p = world_size(), r = rank();
  Tokens tokens;
  std::vector<int64_t> sample_rows;  // global index of each sampling sequence's last token
  for (size_t s = 0; s < batch.size(); ++s) {
    for (size_t i = 0; i < batch[s].token_ids.size(); ++i) {
      tokens.ids.push_back(batch[s].token_ids[i]);
      tokens.pos.push_back(batch[s].start_position + static_cast<int64_t>(i));
      tokens.seq.push_back(s);
    }
    if (batch[s].sample) sample_rows.push_back(static_cast<int64_t>(tokens.ids.size()) - 1);
  }
  const int64_t n = static_cast<int64_t>(tokens.ids.size());
  const bool sp = mode == StepMode::kSequenceParallel && p > 1;
  const int64_t slice = (n + p - 1) / p;
  const int64_t begin = sp ? std::min(r * slice, n) : 0, end = sp ? std::min(begin + slice, n) : n;

  std::vector<float> h((end - begin) * d);
  kernels::cpu::Embedding(
      embedding_.data(), d,
      absl::MakeConstSpan(tokens.ids.data() + begin, static_cast<size_t>(end - begin)), h.data());
  SHIFT_RETURN_IF_ERROR(sp ? LayersSp(batch, tokens, begin, end, &h) : LayersTp(batch, tokens, &h));

  // Logits only for the rows that sample. TP: each rank computes its slice
  // of the vocabulary (a panel range) for every row; SP: the rank holding a
  // row computes all of it. Either way the leader gathers them.
  std::vector<int64_t> rows;  // local rows this rank computes
  for (int64_t g : sample_rows) {
    if (g >= begin && g < end) rows.push_back(g - begin);
  }
  const int64_t m = static_cast<int64_t>(rows.size());
  std::vector<float> picked(m * d), normed(m * d), logits;
  for (int64_t i = 0; i < m; ++i) {
    std::copy(h.begin() + rows[i] * d, h.begin() + (rows[i] + 1) * d, picked.begin() + i * d);
  }
  kernels::cpu::RmsNorm(picked.data(), m, d, final_norm_.data(), static_cast<float>(c.rms_norm_eps),
                        normed.data());
  const int64_t panels = lm_head_.num_panels();
  auto vocab_of = [&](int64_t rank) {
    return std::make_pair(std::min(rank * panels / p * kernels::cpu::kPanelWidth, vocab),
                          std::min((rank + 1) * panels / p * kernels::cpu::kPanelWidth, vocab));
  };
  kernels::cpu::GemmRange vocab_cols;
  if (!sp) std::tie(vocab_cols.n_begin, vocab_cols.n_end) = vocab_of(r);
  Gemm(normed, m, d, lm_head_, vocab_cols, &logits);

  const int64_t total = static_cast<int64_t>(sample_rows.size());
  std::vector<float> all(total * vocab);
  if (p == 1) {
    all = std::move(logits);
  } else if (!sp) {
    // Each rank sends [rows][its columns], padded to the widest slice.
    const int64_t width = (panels + p - 1) / p * kernels::cpu::kPanelWidth;
    std::vector<float> padded(total * width, 0.0f), gathered(r == 0 ? p * total * width : 0);
    const auto [cb, ce] = vocab_of(r);
    for (int64_t i = 0; i < total; ++i) {
      std::copy(logits.begin() + i * (ce - cb), logits.begin() + (i + 1) * (ce - cb),
                padded.begin() + i * width);
    }
    SHIFT_RETURN_IF_ERROR(comm_->Gather(padded.data(), total * width, gathered.data(), 0));
    for (int64_t s = 0; r == 0 && s < p; ++s) {
      const auto [sb, se] = vocab_of(s);
      for (int64_t i = 0; i < total; ++i) {
        const float* from = gathered.data() + (s * total + i) * width;
        std::copy(from, from + (se - sb), all.begin() + i * vocab + sb);
      }
    }
  } else {
    // Each rank sends its rows' full logits, padded to the most rows any
    // rank holds; rows arrive in token order.
    int64_t most = 0;
    for (int64_t s = 0; s < p; ++s) {
      const int64_t b = std::min(s * slice, n), e = std::min(b + slice, n);
      most = std::max<int64_t>(most, std::count_if(sample_rows.begin(), sample_rows.end(),
                                                   [&](int64_t g) { return g >= b && g < e; }));
    }
    std::vector<float> padded(most * vocab, 0.0f), gathered(r == 0 ? p * most * vocab : 0);
    std::copy(logits.begin(), logits.end(), padded.begin());
    SHIFT_RETURN_IF_ERROR(comm_->Gather(padded.data(), most * vocab, gathered.data(), 0));
    for (int64_t i = 0; r == 0 && i < total; ++i) {
      const int64_t owner = sample_rows[i] / slice;
      int64_t index = 0;  // position of this row among its owner's rows
      for (int64_t j = 0; j < i; ++j) index += sample_rows[j] / slice == owner;
      const float* from = gathered.data() + (owner * most + index) * vocab;
      std::copy(from, from + vocab, all.begin() + i * vocab);
    }
  }

  std::vector<EngineSample> out;
  if (r != 0) return out;
  for (int64_t i = 0, s = 0; s < static_cast<int64_t>(batch.size()); ++s) {
    if (!batch[s].sample) continue;
    const SequenceStep& seq = batch[s];
    const float* row = all.data() + i++ * vocab;
    // The sampled token will sit at the position after the last one computed.
    const int64_t next = seq.start_position + static_cast<int64_t>(seq.token_ids.size());
    EngineSample token;
    token.seq_id = seq.seq_id;
    token.token_id = kernels::cpu::Sample(row, vocab, seq.sampling, next);
    token.logprob = kernels::cpu::LogProb(row, vocab, token.token_id);
    if (seq.top_logprobs > 0) {
      // The most likely tokens, by logit then id, with their log-softmax.
      std::vector<int32_t> ids(vocab);
      for (int32_t v = 0; v < vocab; ++v) ids[v] = v;
      const int64_t k = std::min<int64_t>(seq.top_logprobs, vocab);
      std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [row](int32_t a, int32_t b) {
        return row[a] != row[b] ? row[a] > row[b] : a < b;
      });
      for (int64_t j = 0; j < k; ++j) {
        token.top.emplace_back(ids[j], kernels::cpu::LogProb(row, vocab, ids[j]));
      }
    }
    if (seq.return_logits) token.logits.assign(row, row + vocab);
    out.push_back(std::move(token));
  }
  return out;
}

}  // namespace shift
