// A model directory as a worker opens it: config.json, the safetensors
// checkpoint (every expected tensor checked for presence and shape) and
// the tokenizer (LoadModelTokenizer). The mapped weights stay valid while this object lives.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "common/safetensors.h"
#include "common/tokenizer.h"

namespace shift {

struct ModelFiles {
  std::string dir;
  ModelConfig config;
  std::unique_ptr<Checkpoint> checkpoint;
  std::unique_ptr<Tokenizer> tokenizer;
};

// Fails with an error naming the file (and tensor) when anything is missing
// or inconsistent, including a tokenizer larger than the embedding.
absl::StatusOr<ModelFiles> OpenModelFiles(const std::string& dir);

}  // namespace shift
