// shift-generate: offline generation on one CPU rank, no server: loads a
// model directory, prefills the prompt (in chunks), decodes, and streams the
// text as it comes, then prints prefill and decode throughput.
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/cli.h"
#include "common/detokenizer.h"
#include "common/file_util.h"
#include "worker/engine.h"

ABSL_FLAG(std::string, model, "", "Model directory in the Hugging Face layout (required)");
ABSL_FLAG(std::string, prompt, "Once upon a time", "Prompt text");
ABSL_FLAG(int64_t, prompt_tokens, 0,
          "Use this many random token ids as the prompt instead of --prompt (benchmarks)");
ABSL_FLAG(int64_t, max_tokens, 32, "Tokens to generate per sequence");
ABSL_FLAG(bool, ignore_eos, false, "Keep generating past the end-of-sequence token");
ABSL_FLAG(double, temperature, 0.0, "Sampling temperature; 0 is greedy");
ABSL_FLAG(double, top_p, 1.0, "Nucleus sampling threshold");
ABSL_FLAG(int32_t, top_k, 0, "Keep the k most likely tokens (0: all)");
ABSL_FLAG(uint64_t, seed, 0, "Sampling seed (sequence i of a batch uses seed + i)");
ABSL_FLAG(int64_t, batch, 1, "Sequences decoded together (copies of the prompt)");
ABSL_FLAG(int64_t, chunk, 256, "Prefill chunk size in tokens");
ABSL_FLAG(int64_t, kv_cache_bytes, 256 << 20, "Bytes for the KV cache of all layers");
ABSL_FLAG(int64_t, block_size, 16, "Tokens per KV block");
ABSL_FLAG(int32_t, threads, 2, "GEMM threads (results do not depend on it)");
ABSL_FLAG(std::string, prompt_ids, "", "Prompt as comma-separated token ids (overrides --prompt)");
ABSL_FLAG(std::string, dump_logits, "",
          "Write sequence 0's prompt ids, generated ids and the full logits row each token was "
          "sampled from to this JSON file (for comparison with an independent implementation)");
ABSL_FLAG(bool, print_ids, false,
          "Print sequence 0's generated token ids (space-separated) instead of its text");

namespace shift {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// {"prompt_ids": [...], "generated_ids": [...], "logits": [[vocab floats], ...]}:
// logits[i] is the row generated_ids[i] was sampled from.
absl::Status WriteLogits(const std::string& path, const std::vector<int32_t>& prompt,
                         const std::vector<std::pair<int32_t, std::vector<float>>>& dumped) {
  std::string json =
      absl::StrCat("{\"prompt_ids\": [", absl::StrJoin(prompt, ","), "],\n\"generated_ids\": [");
  for (size_t i = 0; i < dumped.size(); ++i) absl::StrAppend(&json, i ? "," : "", dumped[i].first);
  absl::StrAppend(&json, "],\n\"logits\": [");
  for (size_t i = 0; i < dumped.size(); ++i) {
    absl::StrAppend(&json, i ? ",\n" : "", "[");
    for (size_t v = 0; v < dumped[i].second.size(); ++v) {
      // %.9g round-trips a float exactly.
      absl::StrAppend(&json, v ? "," : "", absl::StrFormat("%.9g", dumped[i].second[v]));
    }
    absl::StrAppend(&json, "]");
  }
  absl::StrAppend(&json, "]}\n");
  return WriteStringToFile(path, json);
}

int Main() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) return ReportFailure(absl::InvalidArgumentError("--model is required"));
  auto files = OpenModelFiles(dir);
  if (!files.ok()) return ReportFailure(files.status());
  EngineOptions options;
  options.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_bytes);
  options.block_size = absl::GetFlag(FLAGS_block_size);
  options.threads = absl::GetFlag(FLAGS_threads);
  auto created = Engine::Create(*files, options);
  if (!created.ok()) return ReportFailure(created.status());
  Engine& engine = **created;
  const Tokenizer& tokenizer = *files->tokenizer;

  std::vector<int32_t> prompt;
  if (const std::string ids = absl::GetFlag(FLAGS_prompt_ids); !ids.empty()) {
    for (absl::string_view id : absl::StrSplit(ids, ',')) {
      int32_t value = 0;
      if (!absl::SimpleAtoi(id, &value) || value < 0 || value >= engine.config().vocab_size) {
        return ReportFailure(absl::InvalidArgumentError(
            absl::StrCat("--prompt_ids: \"", id, "\" is not a token id of this model")));
      }
      prompt.push_back(value);
    }
  } else if (const int64_t n = absl::GetFlag(FLAGS_prompt_tokens); n > 0) {
    std::mt19937 rng(1);
    for (int64_t i = 0; i < n; ++i)
      prompt.push_back(static_cast<int32_t>(rng() % tokenizer.vocab_size()));
  } else {
    auto ids = tokenizer.Encode(absl::GetFlag(FLAGS_prompt));
    if (!ids.ok()) return ReportFailure(ids.status());
    prompt = *std::move(ids);
  }
  const int64_t batch = absl::GetFlag(FLAGS_batch), max_tokens = absl::GetFlag(FLAGS_max_tokens);
  const int64_t chunk = std::max<int64_t>(1, absl::GetFlag(FLAGS_chunk));
  const int64_t total = static_cast<int64_t>(prompt.size()) + max_tokens;
  const int64_t blocks_each = (total + options.block_size - 1) / options.block_size;
  if (prompt.empty() || max_tokens < 1) {
    return ReportFailure(
        absl::InvalidArgumentError("need a non-empty prompt and --max_tokens >= 1"));
  }
  if (total > engine.config().max_position_embeddings) {
    return ReportFailure(
        absl::InvalidArgumentError("prompt + max_tokens exceed the model's context"));
  }
  if (blocks_each * batch > engine.num_blocks()) {
    return ReportFailure(absl::ResourceExhaustedError(
        "the KV cache is too small for this batch: raise --kv_cache_bytes"));
  }

  std::vector<SequenceStep> seqs(batch);
  for (int64_t b = 0; b < batch; ++b) {
    seqs[b].seq_id = b;
    for (int64_t i = 0; i < blocks_each; ++i) seqs[b].block_table.push_back(b * blocks_each + i);
    seqs[b].sampling = {static_cast<float>(absl::GetFlag(FLAGS_temperature)),
                        static_cast<float>(absl::GetFlag(FLAGS_top_p)), absl::GetFlag(FLAGS_top_k),
                        absl::GetFlag(FLAGS_seed) + b};
  }
  // Sequence 0's sampled tokens with their logits, for --dump_logits.
  const bool dump = !absl::GetFlag(FLAGS_dump_logits).empty();
  std::vector<std::pair<int32_t, std::vector<float>>> dumped;
  // Prefill: every sequence's prompt in chunks; the last chunk samples.
  const auto prefill_start = std::chrono::steady_clock::now();
  std::vector<int32_t> next(batch);
  // Each sequence's next token, and sequence 0's logits for --dump_logits.
  auto take = [&](std::vector<SampledToken>& sampled) {
    for (SampledToken& t : sampled) {
      next[t.seq_id] = t.token_id;
      if (t.seq_id == 0 && dump) dumped.push_back({t.token_id, std::move(t.logits)});
    }
  };
  for (int64_t start = 0; start < static_cast<int64_t>(prompt.size()); start += chunk) {
    const int64_t end = std::min<int64_t>(start + chunk, prompt.size());
    std::vector<SequenceStep> step = seqs;
    for (SequenceStep& s : step) {
      s.token_ids.assign(prompt.begin() + start, prompt.begin() + end);
      s.start_position = start;
      s.sample = end == static_cast<int64_t>(prompt.size());
      s.return_logits = s.sample && s.seq_id == 0 && dump;
    }
    auto out = engine.Step(step);
    if (!out.ok()) return ReportFailure(out.status());
    take(*out);
  }
  const double prefill_seconds = Seconds(prefill_start);

  // Decode: all sequences together; sequence 0's text is streamed.
  IncrementalDetokenizer detokenizer(tokenizer, /*skip_special=*/true);
  const auto& eos = engine.config().eos_token_ids;
  const bool print_ids = absl::GetFlag(FLAGS_print_ids);
  if (!print_ids && absl::GetFlag(FLAGS_prompt_tokens) == 0 &&
      absl::GetFlag(FLAGS_prompt_ids).empty()) {
    std::printf("%s", absl::GetFlag(FLAGS_prompt).c_str());
  }
  std::vector<bool> done(batch, false);
  int64_t decode_tokens = 0, steps = 0;
  const auto decode_start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < max_tokens; ++i) {
    if (print_ids) {
      if (!done[0]) std::printf("%s%d", i ? " " : "", next[0]);
    } else if (auto delta = detokenizer.Append(next[0]); delta.ok()) {
      std::printf("%s", delta->c_str());
    }
    std::fflush(stdout);
    std::vector<SequenceStep> step;
    for (int64_t b = 0; b < batch; ++b) {
      const bool is_eos = std::find(eos.begin(), eos.end(), next[b]) != eos.end();
      if (is_eos && !absl::GetFlag(FLAGS_ignore_eos)) done[b] = true;
      if (done[b] || i + 1 == max_tokens) continue;
      SequenceStep s = seqs[b];
      s.token_ids = {next[b]};
      s.start_position = static_cast<int64_t>(prompt.size()) + i;
      s.sample = true;
      s.return_logits = b == 0 && dump;
      step.push_back(std::move(s));
    }
    if (step.empty()) break;
    auto out = engine.Step(step);
    if (!out.ok()) return ReportFailure(out.status());
    take(*out);
    decode_tokens += static_cast<int64_t>(step.size());
    ++steps;
  }
  const double decode_seconds = Seconds(decode_start);
  if (dump) {
    if (absl::Status written = WriteLogits(absl::GetFlag(FLAGS_dump_logits), prompt, dumped);
        !written.ok()) {
      return ReportFailure(written);
    }
  }
  std::printf("%s\n", print_ids ? "" : detokenizer.Finish().c_str());
  std::fflush(stdout);  // the text, then the figures on stderr
  std::fprintf(stderr,
               "prefill: %lld tokens x %lld sequences in %.3f s (%.1f tokens/s)\n"
               "decode: %lld steps, %lld tokens in %.3f s (%.1f tokens/s, %.1f ms/step)\n",
               static_cast<long long>(prompt.size()), static_cast<long long>(batch),
               prefill_seconds, static_cast<double>(prompt.size() * batch) / prefill_seconds,
               static_cast<long long>(steps), static_cast<long long>(decode_tokens), decode_seconds,
               decode_tokens / std::max(decode_seconds, 1e-9),
               1e3 * decode_seconds / std::max<int64_t>(steps, 1));
  return 0;
}

}  // namespace
}  // namespace shift

int main(int argc, char** argv) {
  shift::InitProgram(argc, argv,
                     "Generates text offline from a model directory on one CPU rank, streaming it.",
                     "shift-generate --model=DIR [--prompt=TEXT] [--max_tokens=N] [flags]");
  return shift::Main();
}
