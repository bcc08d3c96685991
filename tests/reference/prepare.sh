#!/bin/bash
# Makes the inputs of transformers_reference.py in OUT_DIR (default
# .reference): models of six shapes with the logits shift computes for a
# 300-token prompt and 16 greedy tokens, and the token ids shift's tokenizer
# gives for generated strings with the real tokenizers of ../shared/data.
#   tests/reference/prepare.sh [OUT_DIR]   (after building into build/)
# SHIFT_DEVICE=cuda computes the logits on the GPU (default: cpu).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${SHIFT_BINARY_DIR:-$ROOT/build}
OUT=${1:-$ROOT/.reference}
DATA=$ROOT/../shared/data/tokenizers
rm -rf "$OUT" && mkdir -p "$OUT/logits" "$OUT/tokens"

model() {  # name, then shift-mkmodel flags
  local name=$1; shift
  "$BIN/tools/shift-mkmodel" --out="$OUT/logits/$name" --seed=7 "$@" >/dev/null
  "$BIN/tools/shift-generate" --model="$OUT/logits/$name" --device="${SHIFT_DEVICE:-cpu}" \
    --prompt_tokens=300 --max_num_batched_tokens=64 \
    --max_tokens=16 --ignore_eos --print_ids --dump_logits="$OUT/logits/$name/logits.json" \
    >/dev/null 2>"$OUT/logits/$name.log" || { cat "$OUT/logits/$name.log" >&2; exit 1; }
  echo "made $name"
}
# Llama, bf16 weights, GQA 4/2, untied.
model llama-tiny --preset=tiny --vocab_size=2048
# Llama 3.1's rope scaling and theta, GQA 8/2, head_dim 32.
model llama3-rope-scaled --preset=llama3-8b --hidden_size=256 --intermediate_size=512 \
  --num_layers=2 --num_heads=8 --num_kv_heads=2 --head_dim=32 --vocab_size=4096 \
  --max_position_embeddings=32768
# Qwen 2: q/k/v biases, tied embeddings, fp32 weights.
model qwen2-bias-tied --preset=qwen2-32b --hidden_size=128 --intermediate_size=384 \
  --num_layers=3 --num_heads=4 --num_kv_heads=2 --head_dim=32 --vocab_size=4096 \
  --tie_word_embeddings=true --dtype=fp32 --max_position_embeddings=4096
# Qwen 3: per-head q/k norms before RoPE, no biases, fp32 weights.
model qwen3-qk-norm --preset=qwen3-32b --hidden_size=128 --intermediate_size=384 \
  --num_layers=3 --num_heads=4 --num_kv_heads=2 --head_dim=32 --vocab_size=4096 \
  --dtype=fp32 --max_position_embeddings=4096
# Qwen 3 with 128x128 block-scaled FP8 projections: whole blocks (256) and
# partial ones (320 = 2.5 blocks, 64-wide kv projections).
model qwen3-fp8-block --preset=qwen3-32b --hidden_size=256 --intermediate_size=320 \
  --num_layers=2 --num_heads=4 --num_kv_heads=2 --head_dim=32 --vocab_size=4096 \
  --dtype=fp8 --fp8_block=128 --max_position_embeddings=4096
# Mistral with a 16-token sliding window over the 300-token prompt.
model mistral-window --preset=mistral-7b --hidden_size=128 --intermediate_size=384 \
  --num_layers=3 --num_heads=4 --num_kv_heads=2 --head_dim=32 --vocab_size=4096 \
  --sliding_window=16 --dtype=fp32 --max_position_embeddings=4096

if [ -d "$DATA" ]; then
  /usr/bin/python3 "$ROOT/tests/reference/fuzz_strings.py" "$DATA/test-strings.txt" \
    > "$OUT/tokens/strings.jsonl"
  for t in "$DATA"/*.tokenizer.json; do
    name=$(basename "$t" .tokenizer.json)
    cp "$t" "$OUT/tokens/$name.tokenizer.json"
    "$BIN/tools/shift-inspect" --tokenizer="$t" --encode_jsonl="$OUT/tokens/strings.jsonl" \
      > "$OUT/tokens/$name.ids.txt"
    echo "tokenized $(wc -l < "$OUT/tokens/strings.jsonl") strings with $name"
  done
else
  echo "no $DATA: tokenizer inputs skipped"
fi
