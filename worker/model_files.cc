#include "worker/model_files.h"

#include "absl/strings/str_cat.h"
#include "common/model_schema.h"
#include "common/status.h"

namespace shift {

absl::StatusOr<ModelFiles> OpenModelFiles(const std::string& dir) {
  ModelFiles files;
  files.dir = dir;
  SHIFT_ASSIGN_OR_RETURN(files.config, LoadModelConfig(dir));
  SHIFT_ASSIGN_OR_RETURN(files.checkpoint, Checkpoint::Open(dir));
  SHIFT_RETURN_IF_ERROR(CheckCheckpointAgainstSchema(*files.checkpoint, files.config));
  SHIFT_ASSIGN_OR_RETURN(files.tokenizer, LoadModelTokenizer(dir, files.config.vocab_size));
  return files;
}

}  // namespace shift
