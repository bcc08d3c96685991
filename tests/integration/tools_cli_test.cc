// The command-line tools as a user runs them: shift-mkmodel writes models that
// load, shift-inspect reads them back and tokenizes, and both explain bad
// input and document their flags; every binary's --help succeeds.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/model_config.h"
#include "common/subprocess.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/backends.h"
#include "nlohmann/json.hpp"
#include "tests/testing/temp_dir.h"
#include "worker/model_files.h"

namespace shift {
namespace {

using ::testing::HasSubstr;

struct ToolRun {
  int exit_code;
  std::string output;  // stdout and stderr
};

std::string ReadAll(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Runs `tool` (a name under tools/ or a path under the build directory) with
// `args`, without a shell, to its end.
ToolRun RunTool(const std::string& tool, std::vector<std::string> args) {
  const char* bin = std::getenv("SHIFT_BINARY_DIR");
  const std::string path = tool.find('/') == std::string::npos ? "/tools/" + tool : "/" + tool;
  args.insert(args.begin(), std::string(bin != nullptr ? bin : ".") + path);
  static int runs = 0;
  const std::filesystem::path log =
      std::filesystem::path(::testing::TempDir()) /
      ("shift_tools_cli_" + std::to_string(::getpid()) + "_" + std::to_string(runs++) + ".log");
  absl::StatusOr<Subprocess> child = Subprocess::Start(args, log.string());
  if (!child.ok()) return ToolRun{-1, child.status().ToString()};
  const absl::StatusOr<int> exit_code = child->Wait();
  ToolRun run{exit_code.ok() ? *exit_code : -1, ReadAll(log)};
  std::filesystem::remove(log);
  return run;
}

std::string SharedData() {
  const char* shared = std::getenv("SHIFT_SHARED_DATA");
  return shared != nullptr ? shared : "../shared/data";
}

// A run that must fail, saying `message`.
void ExpectRefused(const ToolRun& run, const std::string& message) {
  EXPECT_NE(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr(message));
}

class ToolsCliTest : public ::testing::Test {
 protected:
  testing::TestTempDir tmp_;
  const std::filesystem::path& dir_ = tmp_.path();
};

TEST_F(ToolsCliTest, MkmodelTinyLoadsAndInspectTokenizes) {
  const std::string model = (dir_ / "tiny").string();
  ToolRun made = RunTool("shift-mkmodel", {"--preset=tiny", "--seed=3", "--out=" + model});
  ASSERT_EQ(made.exit_code, 0) << made.output;
  EXPECT_THAT(made.output, HasSubstr("tokenizer:"));
  auto files = OpenModelFiles(model);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->config.num_hidden_layers, 2);

  ToolRun inspected =
      RunTool("shift-inspect", {"--model=" + model, "--tensors", "--prompt=Hello, 世界 🚀"});
  ASSERT_EQ(inspected.exit_code, 0) << inspected.output;
  EXPECT_THAT(inspected.output, HasSubstr("streamed back: identical to the prompt"));
  EXPECT_THAT(inspected.output, HasSubstr("model.layers.1.mlp.down_proj.weight"));
}

TEST_F(ToolsCliTest, GenerateStreamsTextAndIsReproducible) {
  const std::string model = (dir_ / "gen").string();
  ASSERT_EQ(RunTool("shift-mkmodel", {"--preset=tiny", "--seed=5", "--out=" + model}).exit_code, 0);
  const std::vector<std::string> args = {"--model=" + model,  "--prompt=The lighthouse",
                                         "--max_tokens=12",   "--ignore_eos",
                                         "--temperature=0.7", "--top_k=40",
                                         "--seed=9"};
  ToolRun first = RunTool("shift-generate", args);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_THAT(first.output, HasSubstr("The lighthouse"));
  EXPECT_THAT(first.output, HasSubstr("decode: 11 steps, 11 tokens"));
  // Same seed, same text; a batch, another chunk size and a KV cache so
  // small that requests are preempted change nothing for the first one.
  std::vector<std::string> batched = args;
  batched.insert(batched.end(), {"--batch=3", "--max_num_batched_tokens=2", "--threads=1",
                                 "--block_size=4", "--kv_cache_bytes=12288"});
  ToolRun again = RunTool("shift-generate", batched);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  auto text = [](const std::string& out) { return out.substr(0, out.find("prefill:")); };
  EXPECT_EQ(text(again.output), text(first.output));
  EXPECT_THAT(again.output, ::testing::Not(HasSubstr(" 0 preemptions")));
  ExpectRefused(RunTool("shift-generate", {"--model=" + model, "--max_tokens=5000"}),
                "over the maximum model length");
}

// --device picks the backend: cpu is the one this build has; cuda is refused
// with the way out. --op_stats says where the time and traffic went.
TEST_F(ToolsCliTest, GenerateRunsOnTheCpuDeviceAndReportsItsOperations) {
  const std::string model = (dir_ / "dev").string();
  ASSERT_EQ(RunTool("shift-mkmodel", {"--preset=tiny", "--seed=5", "--out=" + model}).exit_code, 0);
  const std::vector<std::string> args = {"--model=" + model, "--prompt=The lighthouse",
                                         "--max_tokens=6", "--ignore_eos"};
  ToolRun plain = RunTool("shift-generate", args);
  std::vector<std::string> with_device = args;
  with_device.insert(with_device.end(), {"--device=cpu", "--op_stats"});
  ToolRun cpu = RunTool("shift-generate", with_device);
  ASSERT_EQ(cpu.exit_code, 0) << cpu.output;
  auto text = [](const std::string& out) {
    return out.substr(0, std::min(out.find("op   "), out.find("prefill:")));
  };
  EXPECT_EQ(text(cpu.output), text(plain.output));
  for (const char* op : {"embedding", "rms_norm", "gemm", "rope", "write_kv", "attention",
                         "silu_mul", "sample", "total"}) {
    EXPECT_THAT(cpu.output, HasSubstr(std::string("\n") + op + " ")) << cpu.output;
  }
  if (kernels::CudaDeviceCount() == 0) {
    // Without a GPU (or without the CUDA backend) cuda is refused, saying why
    // and what to use instead.
    ToolRun cuda = RunTool("shift-generate", {"--model=" + model, "--device=cuda"});
    ExpectRefused(cuda, "--device=cuda: ");
    EXPECT_THAT(cuda.output, HasSubstr("; use --device=cpu"));
  }
  ExpectRefused(RunTool("shift-generate", {"--model=" + model, "--device=tpu"}),
                "--device=tpu is not a device");
}

// --dump_logits: the rows the tokens were sampled from, for comparison with
// an independent implementation (tests/reference).
TEST_F(ToolsCliTest, GenerateDumpsTheLogitsOfEachGreedyToken) {
  const std::string model = (dir_ / "gen").string();
  ASSERT_EQ(RunTool("shift-mkmodel", {"--preset=tiny", "--seed=5", "--out=" + model}).exit_code, 0);
  const std::string dump = (dir_ / "logits.json").string();
  ToolRun run = RunTool("shift-generate",
                        {"--model=" + model, "--prompt_tokens=40", "--max_num_batched_tokens=16",
                         "--max_tokens=6", "--ignore_eos", "--print_ids", "--dump_logits=" + dump});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json json = nlohmann::json::parse(ReadAll(dump));
  EXPECT_EQ(json["prompt_ids"].size(), 40u);
  const auto generated = json["generated_ids"].get<std::vector<int32_t>>();
  ASSERT_EQ(generated.size(), 6u);
  std::string printed;
  for (int32_t id : generated) absl::StrAppend(&printed, printed.empty() ? "" : " ", id);
  EXPECT_EQ(run.output.substr(0, run.output.find('\n')), printed);
  ASSERT_EQ(json["logits"].size(), 6u);
  for (size_t i = 0; i < generated.size(); ++i) {
    const auto row = json["logits"][i].get<std::vector<float>>();
    ASSERT_EQ(row.size(), 1024u);  // the tiny preset's vocabulary
    EXPECT_EQ(std::max_element(row.begin(), row.end()) - row.begin(), generated[i]) << i;
  }
}

// --tokenizer with --encode_jsonl gives the reference ids for the real
// tokenizers' 46 test strings.
TEST_F(ToolsCliTest, InspectEncodesLinesAsTheReferenceTokenizer) {
  const std::filesystem::path data = std::filesystem::path(SharedData()) / "tokenizers";
  if (!std::filesystem::exists(data / "test-strings.txt")) {
    GTEST_SKIP() << data << " is absent";
  }
  std::string strings = ReadAll(data / "test-strings.txt"), lines;
  const std::string separator = "\n__ggml_vocab_test__\n";
  for (size_t start = 0, end; (end = strings.find(separator, start)) != std::string::npos;
       start = end + separator.size()) {
    lines += nlohmann::json(strings.substr(start, end - start)).dump() + "\n";
  }
  const std::filesystem::path input = dir_ / "strings.jsonl";
  std::ofstream(input) << lines;
  for (const char* name : {"gpt-2", "llama-bpe", "qwen2", "deepseek-llm"}) {
    ToolRun run =
        RunTool("shift-inspect", {"--tokenizer=" + (data / name).string() + ".tokenizer.json",
                                  "--encode_jsonl=" + input.string()});
    ASSERT_EQ(run.exit_code, 0) << name << ": " << run.output;
    // The expected lines have a leading space before each id.
    std::istringstream expected(ReadAll(data / (std::string(name) + ".expected-ids.txt")));
    std::istringstream ours(run.output);
    std::string want, got;
    int line = 0;
    while (std::getline(expected, want)) {
      ++line;
      ASSERT_TRUE(std::getline(ours, got)) << name << ": only " << line - 1 << " lines";
      EXPECT_EQ(" " + got, want == "" ? " " : want) << name << ", line " << line;
    }
    EXPECT_EQ(line, 46) << name;
  }
  std::ofstream(dir_ / "bad.jsonl") << "\"fine\"\n{\"not\": \"a string\"}\n";
  ExpectRefused(
      RunTool("shift-inspect", {"--tokenizer=" + (data / "gpt-2").string() + ".tokenizer.json",
                                "--encode_jsonl=" + (dir_ / "bad.jsonl").string()}),
      "bad.jsonl:2: not a JSON string");
}

TEST_F(ToolsCliTest, MkmodelShardsAndOverrides) {
  const std::string model = (dir_ / "sharded").string();
  ToolRun made = RunTool("shift-mkmodel", {"--preset=tiny", "--num_layers=3", "--num_kv_heads=1",
                                           "--architecture=Qwen2ForCausalLM", "--dtype=fp32",
                                           "--max_shard_bytes=200000", "--out=" + model});
  ASSERT_EQ(made.exit_code, 0) << made.output;
  auto files = OpenModelFiles(model);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->config.num_hidden_layers, 3);
  EXPECT_EQ(files->config.num_key_value_heads, 1);
  EXPECT_TRUE(files->config.attention_bias);
  EXPECT_GT(files->checkpoint->files().size(), 1u);
}

TEST_F(ToolsCliTest, MkmodelConfigOnlyForLargeShapes) {
  const std::string model = (dir_ / "l70").string();
  ToolRun made =
      RunTool("shift-mkmodel", {"--preset=llama3-70b", "--config_only", "--out=" + model});
  ASSERT_EQ(made.exit_code, 0) << made.output;
  auto config = LoadModelConfig(model);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->hidden_size, 8192);
  EXPECT_EQ(config->num_hidden_layers, 80);
  EXPECT_EQ(config->num_key_value_heads, 8);
  ASSERT_TRUE(config->rope_scaling.has_value());
  EXPECT_FALSE(std::filesystem::exists(model + "/model.safetensors"));
}

TEST_F(ToolsCliTest, BadInputIsExplained) {
  ExpectRefused(RunTool("shift-mkmodel", {"--preset=tiny"}), "--out is required");
  ExpectRefused(RunTool("shift-mkmodel", {"--preset=huge", "--out=" + (dir_ / "x").string()}),
                "unknown preset");
  ExpectRefused(RunTool("shift-inspect", {"--model=" + (dir_ / "nowhere").string()}),
                "config.json");
}

TEST_F(ToolsCliTest, HelpListsFlagsWithDefaults) {
  ToolRun help = RunTool("shift-mkmodel", {"--help"});
  EXPECT_THAT(help.output, HasSubstr("Writes a random-weight"));
  EXPECT_THAT(help.output, HasSubstr("--preset"));
  EXPECT_THAT(help.output, HasSubstr("default: \"tiny\""));
  ToolRun inspect = RunTool("shift-inspect", {"--help"});
  EXPECT_THAT(inspect.output, HasSubstr("--model"));
  EXPECT_THAT(inspect.output, HasSubstr("--prompt"));
}

// Asking for help succeeds: the description and the program's own flags on
// stdout, exit code 0, from every user-facing binary (shiftctl after a
// command too). A flag that does not exist or a bad value still fails.
TEST_F(ToolsCliTest, HelpExitsZeroInEveryBinary) {
  const std::vector<std::string> binaries = {
      "router/shift-router", "worker/shift-worker", "shift-generate", "shift-bench", "shiftctl",
      "shift-mkmodel",       "shift-inspect",       "shift-sim"};
  for (const std::string& binary : binaries) {
    for (const char* flag : {"--help", "--helpfull"}) {
      ToolRun help = RunTool(binary, {flag});
      EXPECT_EQ(help.exit_code, 0) << binary << " " << flag << ": " << help.output;
      EXPECT_THAT(help.output, HasSubstr("Usage: ")) << binary << " " << flag;
      EXPECT_THAT(help.output, HasSubstr("default: ")) << binary << " " << flag;
    }
    ExpectRefused(RunTool(binary, {"--no_such_flag"}), "Unknown command line flag 'no_such_flag'");
    ExpectRefused(RunTool(binary, {"--help", "--no_such_flag"}), "no_such_flag");
  }
  ToolRun status_help = RunTool("shiftctl", {"status", "--help"});
  EXPECT_EQ(status_help.exit_code, 0) << status_help.output;
  EXPECT_THAT(status_help.output, HasSubstr("--address"));
  // The flags that reach a router with TLS or API keys are in the clients'
  // --help, not only under --helpfull.
  for (const char* client : {"shiftctl", "shift-bench"}) {
    ToolRun help = RunTool(client, {"--help"});
    for (const char* flag : {"--tls_ca", "--tls_cert", "--tls_key", "--api_key_file"}) {
      EXPECT_THAT(help.output, HasSubstr(flag)) << client;
    }
  }
  ExpectRefused(RunTool("shiftctl", {"--timeout_s=soon"}), "timeout_s");
}

// shift-sim on a committed profile: Llama-3-70B FP8 on 8xH200, one request
// at a time. shift's step choice gives it SP's TTFT and TP's TPOT; the
// report is the shift-bench one. Its help lists the workload flags it
// shares with shift-bench; bad inputs are explained.
TEST_F(ToolsCliTest, SimulatorComparesConfigurationsOnAProfile) {
  const char* source = std::getenv("SHIFT_SOURCE_DIR");
  ASSERT_NE(source, nullptr);
  const std::string sim_dir = std::string(source) + "/bench/sim/";
  for (const char* tool : {"shift-sim", "shift-bench"}) {
    ToolRun help = RunTool(tool, {"--help"});
    for (const char* flag :
         {"--workload", "--rate", "--trace", "--concurrency", "--burst_on_rate"}) {
      EXPECT_THAT(help.output, HasSubstr(flag)) << tool;
    }
  }
  const std::string json = (dir_ / "sim.json").string();
  const std::vector<std::string> common = {
      "--model=" + sim_dir + "models/llama-3.3-70b-fp8/config.json",
      "--hardware=" + sim_dir + "hardware/h200-8x.json",
      "--max_num_batched_tokens=8192",
      "--shift_threshold=512",
      "--workload=closed",
      "--concurrency=1",
      "--requests=3",
      "--input_tokens=4000",
      "--output_tokens=50"};
  std::vector<std::string> args = common;
  args.insert(args.end(), {"--compare=tp,sp,threshold", "--json_out=" + json});
  ToolRun run = RunTool("shift-sim", args);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("| configuration | TTFT p50"));
  std::ifstream in(json);
  const nlohmann::json j = nlohmann::json::parse(in);
  auto metric = [&](const char* config, const char* what) {
    return j[config][what]["mean"].get<double>();
  };
  EXPECT_LT(metric("sp", "ttft_seconds"), metric("tp", "ttft_seconds"));
  EXPECT_LT(metric("tp", "tpot_seconds"), metric("sp", "tpot_seconds"));
  EXPECT_DOUBLE_EQ(metric("threshold", "ttft_seconds"), metric("sp", "ttft_seconds"));
  EXPECT_DOUBLE_EQ(metric("threshold", "tpot_seconds"), metric("tp", "tpot_seconds"));
  EXPECT_EQ(j["threshold"]["completed"], 3);
  EXPECT_GT(j["threshold"]["steps"]["sp"], 0);

  args = common;
  args.push_back("--hardware=/no/such/profile.json");
  ExpectRefused(RunTool("shift-sim", args), "cannot read");
  args = common;
  args.push_back("--compare=tp,xp");
  ExpectRefused(RunTool("shift-sim", args), "unknown configuration \"xp\"");
  args = common;
  args.push_back("--set=gemm_efficiency.fp8=3");
  ExpectRefused(RunTool("shift-sim", args), "outside");
  ExpectRefused(RunTool("shift-sim", {"--hardware=" + sim_dir + "hardware/h200-8x.json"}),
                "--model is required");
}

TEST_F(ToolsCliTest, WorkerExplainsBadFlagsBeforeJoiningAGroup) {
  const std::string model = (dir_ / "tiny").string();
  ASSERT_EQ(RunTool("shift-mkmodel", {"--preset=tiny", "--out=" + model}).exit_code, 0);
  ToolRun help = RunTool("worker/shift-worker", {"--help"});
  for (const char* flag :
       {"--router", "--group", "--rank", "--world_size", "--model", "--kv_cache_bytes",
        "--block_size", "--threads", "--deterministic", "--rendezvous_timeout_ms", "--metrics_port",
        "--device", "--internal_token_file"}) {
    EXPECT_THAT(help.output, HasSubstr(flag));
  }
  // None of these needs a router: each fails before connecting.
  auto nowhere = [&](std::vector<std::string> args) {
    args.insert(args.end(), {"--router=127.0.0.1:1", "--model=" + model});
    return RunTool("worker/shift-worker", args);
  };
  ExpectRefused(RunTool("worker/shift-worker", {"--router=127.0.0.1:1"}), "--model is required");
  ExpectRefused(nowhere({"--rank=2", "--world_size=2"}), "--rank must be below --world_size");
  ExpectRefused(nowhere({"--deterministic=false"}), "always deterministic");
  ExpectRefused(nowhere({"--rank=0", "--world_size=3"}), "cannot run on a group of 3 ranks");
  ExpectRefused(nowhere({"--kv_cache_bytes=16"}), "below one KV block");
  ExpectRefused(nowhere({"--device=cuda", "--deterministic=true"}),
                "--deterministic is a CPU promise");
  ExpectRefused(nowhere({"--internal_token_file=none"}), "needs mutual TLS");
  if (kernels::CudaDeviceCount() == 0) {
    ExpectRefused(nowhere({"--device=cuda"}), "; use --device=cpu");
  }
}

TEST_F(ToolsCliTest, RouterDocumentsFlagsAndRefusesBadOnes) {
  const std::string model = (dir_ / "tiny").string();
  ASSERT_EQ(RunTool("shift-mkmodel", {"--preset=tiny", "--out=" + model}).exit_code, 0);
  ToolRun help = RunTool("router/shift-router", {"--help"});
  for (const char* flag :
       {"--port", "--metrics_port", "--model", "--world_size", "--shift_policy",
        "--shift_threshold", "--max_num_batched_tokens", "--max_num_seqs", "--max_queued_requests",
        "--max_model_len", "default: 256", "default: \"threshold\"", "--internal_port",
        "--internal_host", "--health_port", "--tls_cert", "--tls_key", "--tls_ca",
        "--api_key_file"}) {
    EXPECT_THAT(help.output, HasSubstr(flag));
  }
  for (const char* flag : {"--internal_token_file", "--expected_weights_digest"}) {
    EXPECT_THAT(help.output, HasSubstr(flag));
  }
  auto router = [&](const std::string& flag) {
    return RunTool("router/shift-router",
                   {flag, "--host=127.0.0.1", "--port=0", "--internal_port=0", "--metrics_port=0",
                    "--model=" + model});
  };
  ExpectRefused(RunTool("router/shift-router", {"--port=0"}), "--model is required");
  // Dashed spellings are the same flags.
  ExpectRefused(router("--shift-policy=fastest"), "unknown shift policy \"fastest\"");
  ExpectRefused(router("--max-model-len=100000"), "over the model's context of 2048");
  ExpectRefused(router("--max_num_seqs=0"), "must be positive");
  ExpectRefused(router("--tpot_slo_ms=0.01"), "--tpot_slo_ms must be 0 (none) or in [0.1, 600000]");
  ExpectRefused(router("--ttft_slo_ms=-5"), "--ttft_slo_ms must be 0 (none) or in [0.1, 600000]");
  ExpectRefused(router("--step_trace=/nonexistent/dir/steps.jsonl"), "--step_trace: cannot open");
  ExpectRefused(router("--tls_cert=/nonexistent/cert.pem"), "--tls_cert and --tls_key go together");
  ExpectRefused(router("--api_key_file=/nonexistent/keys"), "/nonexistent/keys");
  // The internal port authenticates: by its token, or by mutual TLS.
  ExpectRefused(router("--internal_token_file=none"), "needs mutual TLS on the internal port");
  const std::string shared = (dir_ / "shared-token").string();
  {
    std::ofstream(shared) << "a-token-everybody-may-read\n";
    std::filesystem::permissions(shared, std::filesystem::perms(0644));
  }
  ExpectRefused(router("--internal_token_file=" + shared), "may be read by any user");
  ExpectRefused(router("--expected_weights_digest=0123"), "16 lower-case hex digits");
}

}  // namespace
}  // namespace shift
