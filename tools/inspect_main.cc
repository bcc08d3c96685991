// shift-inspect: opens a model directory the way a worker does, prints its
// shape, weights and tokenizer, and tokenizes a prompt; renders chat
// templates for lines of variables (--render_jsonl).
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/cli.h"
#include "common/detokenizer.h"
#include "common/file_util.h"
#include "common/fingerprint.h"
#include "common/tokenizer.h"
#include "common/unicode.h"
#include "jinja/chat_template.h"
#include "jinja/template.h"
#include "nlohmann/json.hpp"
#include "worker/model_files.h"

ABSL_FLAG(std::string, model, "", "Model directory in the Hugging Face layout (required)");
ABSL_FLAG(std::string, prompt, "", "Text to tokenize with the model's tokenizer");
ABSL_FLAG(bool, parse_special, false, "Recognise special tokens written in --prompt");
ABSL_FLAG(bool, add_special_tokens, true,
          "Give --prompt (with --model) the special tokens the model's files say a text prompt "
          "gets (BOS ...), as the server does");
ABSL_FLAG(bool, tensors, false, "List every tensor with its dtype, shape and file");
ABSL_FLAG(bool, weights_digest, false,
          "Print the model's weights digest (reads every weight once), the value the router's "
          "--expected_weights_digest pins");
ABSL_FLAG(std::string, tokenizer, "",
          "A tokenizer file to use alone, without --model (with --prompt or --encode_jsonl): a "
          "byte-level BPE tokenizer.json or a SentencePiece model (tokenizer.model)");
ABSL_FLAG(std::string, encode_jsonl, "",
          "Tokenize every line of this file (each a JSON string) and print one line of "
          "space-separated ids per input line; special tokens are not parsed");
ABSL_FLAG(std::string, chat_template, "",
          "A chat template (Jinja) file to use instead of the model's (with --render_jsonl)");
ABSL_FLAG(std::string, render_jsonl, "",
          "Render the chat template for every line of this file ({\"id\", \"vars\"} objects, "
          "as ../shared/data/chat_templates/cases-in.jsonl) and print one JSON object per line: "
          "{\"id\", \"expected\": rendering} or {\"id\", \"error\": message}. The template "
          "is --chat_template, else the --model's, else the line's \"chat_template\" (the "
          "source), else its \"template\" file (relative to the input file)");
ABSL_FLAG(std::string, strftime_now, "",
          "A fixed time for the templates' strftime_now, \"YYYY-MM-DD[ HH:MM:SS]\" (default: "
          "now, local time)");

namespace shift {
namespace {

// Printable form of a token's bytes: control characters escaped, and so are
// the bytes of a token that holds only part of a UTF-8 character.
std::string Printable(std::string_view bytes) {
  const bool partial = FindInvalidUtf8(bytes) != std::string_view::npos;
  std::string out;
  for (unsigned char c : bytes) {
    if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7F || (partial && c >= 0x80)) {
      out += absl::StrCat("\\x", absl::Hex(c, absl::kZeroPad2));
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

// --encode_jsonl: one line of ids per line of JSON strings.
int EncodeLines(const Tokenizer& tok, const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return ReportFailure(text.status());
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    ++line_number;
    const nlohmann::json value = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!value.is_string()) {
      return ReportFailure(
          absl::InvalidArgumentError(absl::StrCat(path, ":", line_number, ": not a JSON string")));
    }
    auto ids = tok.Encode(value.get<std::string>());
    if (!ids.ok()) return ReportFailure(ids.status());
    std::printf("%s\n", absl::StrJoin(*ids, " ").c_str());
  }
  return 0;
}

// The template for one line of --render_jsonl (see the flag's help).
absl::StatusOr<std::string> TemplateFor(const nlohmann::ordered_json& line, bool has_tools,
                                        const std::string& cases_path) {
  const std::string override_file = absl::GetFlag(FLAGS_chat_template);
  const std::string model = absl::GetFlag(FLAGS_model);
  if (!override_file.empty() || !model.empty()) {
    return jinja::LoadChatTemplate(model, override_file, has_tools);
  }
  if (line.contains("chat_template") && line["chat_template"].is_string()) {
    return line["chat_template"].get<std::string>();
  }
  if (!line.contains("template") || !line["template"].is_string()) {
    return absl::InvalidArgumentError(
        "no template: give --chat_template or --model, or a \"template\" in each line");
  }
  const auto dir = std::filesystem::absolute(cases_path).parent_path();
  return ReadFileToString((dir / line["template"].get<std::string>()).string());
}

// --render_jsonl: one JSON object per input line, the rendering or the error.
int RenderLines(const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return ReportFailure(text.status());
  jinja::RenderOptions options;
  if (const std::string now = absl::GetFlag(FLAGS_strftime_now); !now.empty()) {
    std::tm tm{};
    const char* end = strptime(now.c_str(), "%Y-%m-%d %H:%M:%S", &tm);
    if (end == nullptr) end = strptime(now.c_str(), "%Y-%m-%d", &tm);
    if (end == nullptr || *end != '\0') {
      return ReportFailure(
          absl::InvalidArgumentError("--strftime_now: want YYYY-MM-DD[ HH:MM:SS]"));
    }
    std::tm normalized = tm;
    timegm(&normalized);  // fills in the weekday and the day of the year
    options.now = [normalized] { return normalized; };
  }
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    ++line_number;
    const auto input = nlohmann::ordered_json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!input.is_object() || !input.contains("vars") || !input["vars"].is_object()) {
      return ReportFailure(absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_number, ": not a JSON object with \"vars\"")));
    }
    const auto& vars = input["vars"];
    const bool has_tools = vars.contains("tools") && !vars["tools"].is_null();
    nlohmann::ordered_json out;
    out["id"] = input.contains("id") ? input["id"] : nlohmann::ordered_json(line_number);
    absl::StatusOr<std::string> rendered = TemplateFor(input, has_tools, path);
    if (rendered.ok()) {
      auto parsed = jinja::Template::Parse(*rendered);
      rendered = parsed.ok() ? parsed->Render(vars, options) : parsed.status();
    }
    if (rendered.ok()) {
      out["expected"] = *rendered;
    } else {
      out["error"] = std::string(rendered.status().message());
    }
    std::printf("%s\n",
                out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
  }
  return 0;
}

int TokenizerOnly(const std::string& path) {
  auto tok = Tokenizer::FromFile(path);
  if (!tok.ok()) return ReportFailure(tok.status());
  if (const std::string lines = absl::GetFlag(FLAGS_encode_jsonl); !lines.empty()) {
    return EncodeLines(**tok, lines);
  }
  auto ids = (*tok)->Encode(absl::GetFlag(FLAGS_prompt), absl::GetFlag(FLAGS_parse_special));
  if (!ids.ok()) return ReportFailure(ids.status());
  std::printf("%s\n", absl::StrJoin(*ids, " ").c_str());
  return 0;
}

int Main() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (const std::string cases = absl::GetFlag(FLAGS_render_jsonl); !cases.empty()) {
    return RenderLines(cases);
  }
  if (const std::string tokenizer = absl::GetFlag(FLAGS_tokenizer); !tokenizer.empty()) {
    if (!dir.empty()) {
      return ReportFailure(absl::InvalidArgumentError("give --model or --tokenizer, not both"));
    }
    return TokenizerOnly(tokenizer);
  }
  if (dir.empty()) {
    return ReportFailure(
        absl::InvalidArgumentError("--model (or --tokenizer) is required (see --help)"));
  }
  auto files = OpenModelFiles(dir);
  if (!files.ok()) return ReportFailure(files.status());
  const ModelConfig& c = files->config;
  std::string features;
  if (c.rope_scaling) absl::StrAppend(&features, ", llama3 rope scaling x", c.rope_scaling->factor);
  if (c.attention_bias) absl::StrAppend(&features, ", q/k/v biases");
  if (c.qk_norm) absl::StrAppend(&features, ", q/k norms per head");
  if (c.tie_word_embeddings) absl::StrAppend(&features, ", tied embeddings");
  int64_t windowed = 0;
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    windowed += c.AttentionWindow(layer) > 0 ? 1 : 0;
  }
  if (windowed > 0) {
    absl::StrAppend(&features, ", sliding window ", c.sliding_window, " on ", windowed, " of ",
                    c.num_hidden_layers, " layers");
  }
  if (c.quantization) {
    absl::StrAppend(
        &features, ", FP8 weights with ",
        c.quantization->block > 0
            ? absl::StrCat(c.quantization->block, "x", c.quantization->block, " block scales")
            : std::string(c.quantization->per_channel ? "per-channel scales"
                                                      : "per-tensor scales"));
  }
  std::printf(
      "model %s: %s, %lld layers, hidden %lld, heads %lld (kv %lld) x %lld, "
      "intermediate %lld, vocab %lld, context %lld, rope_theta %g%s\n",
      dir.c_str(), c.architecture.c_str(), static_cast<long long>(c.num_hidden_layers),
      static_cast<long long>(c.hidden_size), static_cast<long long>(c.num_attention_heads),
      static_cast<long long>(c.num_key_value_heads), static_cast<long long>(c.head_dim),
      static_cast<long long>(c.intermediate_size), static_cast<long long>(c.vocab_size),
      static_cast<long long>(c.max_position_embeddings), c.rope_theta, features.c_str());
  const Checkpoint& ckpt = *files->checkpoint;
  std::printf(
      "weights: %zu tensors, %.2f MB in %zu file(s), %.2fM parameters; every tensor "
      "the config implies is present with its shape\n",
      ckpt.Names().size(), static_cast<double>(ckpt.TotalBytes()) / 1e6, ckpt.files().size(),
      static_cast<double>(c.NumParameters()) / 1e6);
  if (absl::GetFlag(FLAGS_weights_digest)) {
    absl::StatusOr<uint64_t> digest = ModelWeightsDigest(dir);
    if (!digest.ok()) return ReportFailure(digest.status());
    std::printf("weights digest: %s\n", DigestHex(*digest).c_str());
  }
  if (absl::GetFlag(FLAGS_tensors)) {
    for (const std::string& name : ckpt.Names()) {
      const TensorView* t = ckpt.Find(name);
      std::printf("  %-48s %-4s %-16s %s\n", name.c_str(), std::string(DTypeName(t->dtype)).c_str(),
                  ShapeToString(t->shape).c_str(), t->file->c_str());
    }
  }
  const Tokenizer& tok = *files->tokenizer;
  std::printf(
      "tokenizer: %s, %d tokens, %zu special; a text prompt gets %zu before and %zu after\n",
      std::string(tok.kind()).c_str(), tok.vocab_size(), tok.special_ids().size(),
      tok.prompt_template().prefix.size(), tok.prompt_template().suffix.size());
  if (const std::string lines = absl::GetFlag(FLAGS_encode_jsonl); !lines.empty()) {
    return EncodeLines(tok, lines);
  }

  const std::string prompt = absl::GetFlag(FLAGS_prompt);
  if (prompt.empty()) return 0;
  auto ids = tok.EncodePrompt(prompt, absl::GetFlag(FLAGS_parse_special),
                              absl::GetFlag(FLAGS_add_special_tokens));
  if (!ids.ok()) return ReportFailure(ids.status());
  std::printf("prompt: %s\n%zu tokens: [%s]\n", prompt.c_str(), ids->size(),
              absl::StrJoin(*ids, ", ").c_str());
  std::vector<std::string> pieces;
  for (int32_t id : *ids) pieces.push_back(Printable(*tok.TokenBytes(id)));
  std::printf("pieces: |%s|\n", absl::StrJoin(pieces, "|").c_str());
  // Stream it back the way a server would, one token at a time (the
  // template's special tokens left out, unless the prompt wrote them).
  const bool skip = absl::GetFlag(FLAGS_add_special_tokens) && !absl::GetFlag(FLAGS_parse_special);
  IncrementalDetokenizer detokenizer(tok, skip, /*at_text_start=*/true);
  std::string streamed;
  for (int32_t id : *ids) {
    auto delta = detokenizer.Append(id);
    if (!delta.ok()) return ReportFailure(delta.status());
    streamed += *delta;
  }
  streamed += detokenizer.Finish();
  std::printf("streamed back: %s\n",
              streamed == prompt ? "identical to the prompt" : ("DIFFERENT: " + streamed).c_str());
  return streamed == prompt ? 0 : 1;
}

}  // namespace
}  // namespace shift

int main(int argc, char** argv) {
  shift::InitProgram(
      argc, argv,
      "Opens a model directory as a worker does (config, every tensor, tokenizer) "
      "and tokenizes a prompt, or renders a chat template for lines of variables.",
      "shift-inspect --model=DIR [--prompt=TEXT] [--tensors] [--encode_jsonl=FILE]\n"
      "       shift-inspect --tokenizer=tokenizer.json|tokenizer.model (--prompt=TEXT | "
      "--encode_jsonl=FILE)\n"
      "       shift-inspect [--chat_template=FILE | --model=DIR] --render_jsonl=CASES "
      "[--strftime_now=DATE]");
  return shift::Main();
}
