#include "common/model_schema.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace shift {

int64_t TensorSpec::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<TensorSpec> ModelTensorSpecs(const ModelConfig& c) {
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size;
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  std::vector<TensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {c.vocab_size, hidden}, TensorRole::kEmbedding});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    specs.push_back({p + "input_layernorm.weight", {hidden}, TensorRole::kNorm});
    specs.push_back({p + "self_attn.q_proj.weight", {q, hidden}, TensorRole::kProjection});
    specs.push_back({p + "self_attn.k_proj.weight", {kv, hidden}, TensorRole::kProjection});
    specs.push_back({p + "self_attn.v_proj.weight", {kv, hidden}, TensorRole::kProjection});
    if (c.attention_bias) {
      specs.push_back({p + "self_attn.q_proj.bias", {q}, TensorRole::kBias});
      specs.push_back({p + "self_attn.k_proj.bias", {kv}, TensorRole::kBias});
      specs.push_back({p + "self_attn.v_proj.bias", {kv}, TensorRole::kBias});
    }
    specs.push_back({p + "self_attn.o_proj.weight", {hidden, q}, TensorRole::kProjection});
    if (c.qk_norm) {
      specs.push_back({p + "self_attn.q_norm.weight", {c.head_dim}, TensorRole::kNorm});
      specs.push_back({p + "self_attn.k_norm.weight", {c.head_dim}, TensorRole::kNorm});
    }
    specs.push_back({p + "post_attention_layernorm.weight", {hidden}, TensorRole::kNorm});
    specs.push_back({p + "mlp.gate_proj.weight", {inter, hidden}, TensorRole::kProjection});
    specs.push_back({p + "mlp.up_proj.weight", {inter, hidden}, TensorRole::kProjection});
    specs.push_back({p + "mlp.down_proj.weight", {hidden, inter}, TensorRole::kProjection});
  }
  specs.push_back({"model.norm.weight", {hidden}, TensorRole::kNorm});
  if (!c.tie_word_embeddings) {
    specs.push_back({"lm_head.weight", {c.vocab_size, hidden}, TensorRole::kLmHead});
  }
  return specs;
}

std::string WeightScaleName(const ModelConfig& config, const std::string& weight_name) {
  return weight_name + (config.quantization ? config.quantization->scale_suffix : "_scale");
}

namespace {

// The scale of each of an F8_E4M3 tensor's `rows` rows, from its
// weight_scale (one per row, or one for the tensor).
absl::StatusOr<std::vector<float>> RowScales(const Checkpoint& checkpoint,
                                             const ModelConfig& config, const TensorView& view,
                                             const std::string& name, int64_t rows) {
  if (!config.quantization) {
    return absl::InvalidArgumentError(absl::StrCat(
        *view.file, ": tensor \"", name,
        "\" is F8_E4M3 but config.json has no quantization_config saying how it is scaled"));
  }
  const std::string scale_name = WeightScaleName(config, name);
  std::vector<float> scale;
  for (const std::vector<int64_t>& scale_shape :
       std::vector<std::vector<int64_t>>{{rows, 1}, {rows}, {1}, {}}) {
    if (!checkpoint.Get(scale_name, scale_shape).ok()) continue;
    scale.resize(scale_shape.empty() ? 1 : scale_shape[0]);
    SHIFT_RETURN_IF_ERROR(checkpoint.ReadAsF32(scale_name, scale_shape, scale.data()));
    break;
  }
  if (scale.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(*view.file, ": F8_E4M3 tensor \"", name,
                                                   "\" needs \"", scale_name, "\" of shape [", rows,
                                                   ", 1] (per channel) or [1] (per tensor)"));
  }
  scale.resize(rows, scale[0]);  // one for the tensor: the same for every row
  return scale;
}

// The block scales of an F8_E4M3 tensor of `rows` x `cols`: one fp32 (or
// bf16) value per block x block tile, [ceil(rows / block), ceil(cols /
// block)], row-major.
absl::StatusOr<std::vector<float>> BlockScales(const Checkpoint& checkpoint,
                                               const ModelConfig& config, const TensorView& view,
                                               const std::string& name, int64_t rows,
                                               int64_t cols) {
  const int64_t block = config.quantization->block;
  const std::vector<int64_t> shape = {(rows + block - 1) / block, (cols + block - 1) / block};
  const std::string scale_name = WeightScaleName(config, name);
  const TensorView* scale = checkpoint.Find(scale_name);
  const std::string what =
      absl::StrCat("F8_E4M3 tensor \"", name, "\" needs \"", scale_name, "\" of shape ",
                   ShapeToString(shape), " (one scale per ", block, " x ", block, " block)");
  if (scale == nullptr) return absl::InvalidArgumentError(absl::StrCat(*view.file, ": ", what));
  if (scale->shape != shape) {
    return absl::InvalidArgumentError(
        absl::StrCat(*scale->file, ": ", what, ", not ", ShapeToString(scale->shape)));
  }
  if (scale->dtype != DType::kF32 && scale->dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(
        *scale->file, ": ", what, " in F32 (or BF16), not ", std::string(DTypeName(scale->dtype))));
  }
  std::vector<float> scales(static_cast<size_t>(shape[0] * shape[1]));
  SHIFT_RETURN_IF_ERROR(checkpoint.ReadAsF32(scale_name, shape, scales.data()));
  for (float s : scales) {
    if (!std::isfinite(s)) {
      return absl::InvalidArgumentError(absl::StrCat(*scale->file, ": tensor \"", scale_name,
                                                     "\" holds a scale that is not finite"));
    }
  }
  return scales;
}

bool HasBlockScales(const ModelConfig& config) {
  return config.quantization && config.quantization->block > 0;
}

}  // namespace

absl::Status ReadWeightAsF32(const Checkpoint& checkpoint, const ModelConfig& config,
                             const std::string& name, int64_t rows, int64_t cols, float* out) {
  const std::vector<int64_t> shape =
      rows == 1 ? std::vector<int64_t>{cols} : std::vector<int64_t>{rows, cols};
  SHIFT_ASSIGN_OR_RETURN(const TensorView* view, checkpoint.Get(name, shape));
  SHIFT_RETURN_IF_ERROR(checkpoint.ReadAsF32(name, shape, out));
  if (view->dtype != DType::kF8E4M3) return absl::OkStatus();
  if (HasBlockScales(config)) {
    SHIFT_ASSIGN_OR_RETURN(const std::vector<float> scale,
                           BlockScales(checkpoint, config, *view, name, rows, cols));
    const int64_t block = config.quantization->block, tiles = (cols + block - 1) / block;
    for (int64_t r = 0; r < rows; ++r) {
      const float* tile_row = scale.data() + r / block * tiles;
      for (int64_t c = 0; c < cols; ++c) out[r * cols + c] *= tile_row[c / block];
    }
    return absl::OkStatus();
  }
  SHIFT_ASSIGN_OR_RETURN(const std::vector<float> scale,
                         RowScales(checkpoint, config, *view, name, rows));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] *= scale[r];
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<Fp8Weight>> ReadFp8Weight(const Checkpoint& checkpoint,
                                                       const ModelConfig& config,
                                                       const std::string& name, int64_t rows,
                                                       int64_t cols) {
  SHIFT_ASSIGN_OR_RETURN(const TensorView* view, checkpoint.Get(name, {rows, cols}));
  if (view->dtype != DType::kF8E4M3) return std::nullopt;
  Fp8Weight weight;
  weight.codes = view->data;
  if (HasBlockScales(config)) {
    weight.block = config.quantization->block;
    SHIFT_ASSIGN_OR_RETURN(weight.block_scales,
                           BlockScales(checkpoint, config, *view, name, rows, cols));
    return weight;
  }
  SHIFT_ASSIGN_OR_RETURN(weight.row_scales, RowScales(checkpoint, config, *view, name, rows));
  return weight;
}

absl::Status CheckCheckpointAgainstSchema(const Checkpoint& checkpoint, const ModelConfig& config) {
  for (const TensorSpec& spec : ModelTensorSpecs(config)) {
    SHIFT_ASSIGN_OR_RETURN(const TensorView* view, checkpoint.Get(spec.name, spec.shape));
    if (view->dtype != DType::kF8E4M3) continue;
    // An FP8 matrix's scales are checked now, not when a rank reads them.
    if (spec.shape.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(*view->file, ": tensor \"", spec.name,
                                                     "\" is F8_E4M3; only matrices may be FP8"));
    }
    const int64_t rows = spec.shape[0], cols = spec.shape[1];
    if (HasBlockScales(config)) {
      SHIFT_RETURN_IF_ERROR(BlockScales(checkpoint, config, *view, spec.name, rows, cols).status());
    } else {
      SHIFT_RETURN_IF_ERROR(RowScales(checkpoint, config, *view, spec.name, rows).status());
    }
  }
  return absl::OkStatus();
}

RankWeights WeightsOfRank(const ModelConfig& c, const GroupLayout& layout, int rank,
                          int64_t panel) {
  const double d = c.hidden_size, hd = c.head_dim, hq = c.num_attention_heads,
               hkv = c.num_key_value_heads, layers = c.num_hidden_layers, tp = layout.tp();
  const double layer = d * hq * hd / tp + 2 * d * std::max(1.0, hkv / tp) * hd + hq * hd * d / tp +
                       3 * d * c.intermediate_size / tp;
  const auto [lm_begin, lm_end] =
      VocabPart(c.vocab_size, layout.tp_index(rank), layout.tp(), panel);
  RankWeights w;
  w.projections = layers * layer;
  w.other = c.vocab_size * d + static_cast<double>(lm_end - lm_begin) * d + (2 * layers + 1) * d +
            (c.attention_bias ? layers * (hq + 2 * hkv) * hd : 0) +
            (c.qk_norm ? layers * 2 * hd : 0);
  return w;
}

}  // namespace shift
