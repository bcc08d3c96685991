// A step plan of arbitrary bytes, applied the way a rank applies the
// router's plans (PlanSteps, then Engine::Step on a tiny CPU model): a plan
// that does not fit the model or the KV cache is INVALID_ARGUMENT, never a
// crash or an out-of-bounds access; one that fits samples exactly the
// sequences it asks to.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "tests/fuzz/fuzz_util.h"
#include "tools/mkmodel.h"
#include "worker/engine.h"
#include "worker/model_files.h"
#include "worker/plan_steps.h"

namespace {
std::unique_ptr<shift::Engine> engine;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("shift_plan_fuzz_" + std::to_string(getpid())))
          .string();
  shift::MkModelOptions options;
  auto config = shift::PresetConfig("tiny");
  shift::fuzz::Require(config.status());
  options.config = *config;
  options.seed = 1;
  shift::fuzz::Require(shift::WriteRandomModel(dir, options).status());
  auto files = shift::OpenModelFiles(dir);
  shift::fuzz::Require(files.status());
  shift::EngineOptions engine_options;
  engine_options.kv_cache_bytes = int64_t{1} << 20;
  engine_options.threads = 1;
  auto created = shift::Engine::Create(*files, engine_options);
  shift::fuzz::Require(created.status());
  engine = *std::move(created);
  std::filesystem::remove_all(dir);  // the weights are in the engine now
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  shift::v1::internal::StepPlan plan;
  if (!plan.ParseFromArray(data, static_cast<int>(size))) return 0;
  shift::SequenceTable sequences;
  const std::vector<shift::SequenceStep> batch = shift::PlanSteps(plan, &sequences);
  int64_t tokens = 0;
  for (const shift::SequenceStep& s : batch) tokens += static_cast<int64_t>(s.token_ids.size());
  if (tokens > 4096) return 0;  // valid, but a step too large to fuzz quickly
  auto out =
      engine->Step(batch, plan.mode() == shift::v1::MODE_SP ? shift::StepMode::kSequenceParallel
                                                            : shift::StepMode::kTensorParallel);
  if (!out.ok()) {
    if (out.status().code() != absl::StatusCode::kInvalidArgument) {
      shift::fuzz::Fail("a refused plan that is not INVALID_ARGUMENT");
    }
    return 0;
  }
  size_t sampled = 0;
  for (const shift::SequenceStep& s : batch) sampled += s.sample ? 1 : 0;
  if (out->size() != sampled) shift::fuzz::Fail("samples differ from the sequences asking");
  for (const shift::EngineSample& t : *out) {
    if (t.token_id < 0 || t.token_id >= engine->config().vocab_size) {
      shift::fuzz::Fail("a sampled id outside the vocabulary");
    }
  }
  return 0;
}
