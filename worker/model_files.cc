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
  SHIFT_ASSIGN_OR_RETURN(files.tokenizer, LoadModelTokenizer(dir));
  if (files.tokenizer->vocab_size() > files.config.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, "'s ", files.tokenizer->kind(), " tokenizer has ",
                     files.tokenizer->vocab_size(), " tokens but config.json's vocab_size is ",
                     files.config.vocab_size, ": some token ids would have no embedding"));
  }
  return files;
}

}  // namespace shift
