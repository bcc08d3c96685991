#include "worker/engine.h"

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

Engine::Engine(ModelConfig config, EngineOptions options)
    : config_(std::move(config)),
      options_(options),
      rope_(config_.head_dim, config_.rope_theta, Scaling(config_)) {}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const ModelFiles& files,
                                                       const EngineOptions& options) {
  const ModelConfig& c = files.config;
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
  std::unique_ptr<Engine> engine(new Engine(c, options));
  SHIFT_RETURN_IF_ERROR(engine->Load(*files.checkpoint));
  const int64_t block_bytes = 2 * c.num_hidden_layers * options.block_size * c.num_key_value_heads *
                              c.head_dim * sizeof(float);
  engine->num_blocks_ = options.kv_cache_bytes / block_bytes;
  if (engine->num_blocks_ < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--kv-cache-bytes ", options.kv_cache_bytes,
                                                   " is below one KV block (", block_bytes,
                                                   " bytes)"));
  }
  const int64_t layer_floats =
      engine->num_blocks_ * options.block_size * c.num_key_value_heads * c.head_dim;
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

void Engine::Gemm(const std::vector<float>& x, int64_t rows, const PackedWeight& w,
                  std::vector<float>* y) const {
  y->resize(rows * w.n());
  kernels::cpu::Gemm(x.data(), rows, w.k(), w, {}, y->data(), w.n(), options_.threads);
}

absl::StatusOr<std::vector<SampledToken>> Engine::Step(const std::vector<SequenceStep>& batch) {
  SHIFT_RETURN_IF_ERROR(Validate(batch));
  const ModelConfig& c = config_;
  const int64_t d = c.hidden_size, heads = c.num_attention_heads, kv_heads = c.num_key_value_heads,
                hd = c.head_dim;
  // Flatten the batch: token t belongs to sequence seq_of[t] at pos[t].
  std::vector<int32_t> ids;
  std::vector<int64_t> pos;
  std::vector<size_t> seq_of;
  for (size_t s = 0; s < batch.size(); ++s) {
    for (size_t i = 0; i < batch[s].token_ids.size(); ++i) {
      ids.push_back(batch[s].token_ids[i]);
      pos.push_back(batch[s].start_position + static_cast<int64_t>(i));
      seq_of.push_back(s);
    }
  }
  const int64_t n = static_cast<int64_t>(ids.size());
  std::vector<float> h(n * d), x(n * d), q, k, v, attn(n * heads * hd), o, gate, up, act;
  kernels::cpu::Embedding(embedding_.data(), d, ids, h.data());
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  int64_t max_pos = 0, attention_work = 0;
  for (int64_t p : pos) {
    max_pos = std::max(max_pos, p);
    attention_work += (p + 1) * heads;
  }

  for (Layer& l : layers_) {
    kernels::cpu::RmsNorm(h.data(), n, d, l.input_norm.data(), static_cast<float>(c.rms_norm_eps),
                          x.data());
    Gemm(x, n, l.q, &q);
    Gemm(x, n, l.k, &k);
    Gemm(x, n, l.v, &v);
    if (c.attention_bias) {
      kernels::cpu::AddBias(q.data(), n, heads * hd, l.q_bias.data());
      kernels::cpu::AddBias(k.data(), n, kv_heads * hd, l.k_bias.data());
      kernels::cpu::AddBias(v.data(), n, kv_heads * hd, l.v_bias.data());
    }
    for (int64_t t = 0; t < n; ++t) {
      rope_.Apply(q.data() + t * heads * hd, heads, pos[t]);
      rope_.Apply(k.data() + t * kv_heads * hd, kv_heads, pos[t]);
    }
    const KvView cache{l.k_cache.data(), l.v_cache.data(), options_.block_size, kv_heads, hd};
    // Each sequence's new K/V go in first, so its tokens attend to each
    // other (causally) and to its cached context in one kernel.
    for (int64_t t = 0, s = 0; s < static_cast<int64_t>(batch.size()); ++s) {
      const int64_t count = static_cast<int64_t>(batch[s].token_ids.size());
      kernels::cpu::WriteKv(cache, batch[s].block_table, batch[s].start_position, count,
                            k.data() + t * kv_heads * hd, v.data() + t * kv_heads * hd);
      t += count;
    }
    // Tokens are independent here; spread them over the threads when the
    // step attends to enough context to pay for them.
    const int64_t workers = attention_work > (1 << 16) ? options_.threads : 1;
    kernels::cpu::ParallelFor(n, workers, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(max_pos + 1);
      for (int64_t t = begin; t < end; ++t) {
        kernels::cpu::AttendOne(cache, batch[seq_of[t]].block_table, pos[t],
                                q.data() + t * heads * hd, heads, scale,
                                attn.data() + t * heads * hd, scratch.data());
      }
    });
    Gemm(attn, n, l.o, &o);
    for (int64_t i = 0; i < n * d; ++i) h[i] = h[i] + o[i];
    kernels::cpu::RmsNorm(h.data(), n, d, l.post_norm.data(), static_cast<float>(c.rms_norm_eps),
                          x.data());
    Gemm(x, n, l.gate, &gate);
    Gemm(x, n, l.up, &up);
    act.resize(gate.size());
    kernels::cpu::SiluMul(gate.data(), up.data(), n, c.intermediate_size, act.data());
    Gemm(act, n, l.down, &o);
    for (int64_t i = 0; i < n * d; ++i) h[i] = h[i] + o[i];
  }

  // Logits only for the rows that sample.
  std::vector<size_t> sampling;
  std::vector<float> rows;
  for (int64_t t = 0, s = 0; s < static_cast<int64_t>(batch.size()); ++s) {
    t += static_cast<int64_t>(batch[s].token_ids.size());
    if (!batch[s].sample) continue;
    sampling.push_back(s);
    rows.insert(rows.end(), h.begin() + (t - 1) * d, h.begin() + t * d);
  }
  std::vector<SampledToken> out;
  if (sampling.empty()) return out;
  const int64_t m = static_cast<int64_t>(sampling.size());
  std::vector<float> normed(m * d), logits;
  kernels::cpu::RmsNorm(rows.data(), m, d, final_norm_.data(), static_cast<float>(c.rms_norm_eps),
                        normed.data());
  Gemm(normed, m, lm_head_, &logits);
  const int64_t vocab = c.vocab_size;
  for (int64_t r = 0; r < m; ++r) {
    const SequenceStep& s = batch[sampling[r]];
    const float* row = logits.data() + r * vocab;
    // The sampled token will sit at the position after the last one computed.
    const int64_t next = s.start_position + static_cast<int64_t>(s.token_ids.size());
    SampledToken token;
    token.seq_id = s.seq_id;
    token.token_id = kernels::cpu::Sample(row, vocab, s.sampling, next);
    token.logprob = kernels::cpu::LogProb(row, vocab, token.token_id);
    if (s.return_logits) token.logits.assign(row, row + vocab);
    out.push_back(std::move(token));
  }
  return out;
}

}  // namespace shift
