#include "worker/compute_profile.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace shift {

std::string FormatComputeProfileLine(const ComputeProfileLine& l) {
  return absl::StrFormat(
      "{\"world_size\":%d,\"rank\":%d,\"mode\":\"%s\",\"tokens\":%d,\"sequences\":%d,"
      "\"decodes\":%d,\"max_context\":%d,\"attention\":%d,\"step_s\":%.9g,\"collective_s\":%.9g,"
      "\"collective_bytes\":%d,\"compute_s\":%.9g,\"gemm_flops\":%d}\n",
      l.world_size, l.rank, StepModeName(l.mode), l.shape.num_tokens, l.shape.num_sequences,
      l.shape.num_decodes, l.shape.max_context, l.shape.attention, l.step_s, l.collective_s,
      l.collective_bytes, l.step_s - l.collective_s, l.gemm_flops);
}

StepShape ShapeOfBatch(const std::vector<SequenceStep>& batch) {
  StepShape shape;
  for (const SequenceStep& s : batch) {
    const int64_t n = static_cast<int64_t>(s.token_ids.size());
    shape.num_tokens += n;
    ++shape.num_sequences;
    if (n == 1 && s.sample && s.start_position > 0) ++shape.num_decodes;
    shape.max_context = std::max(shape.max_context, s.start_position + n);
    shape.attention += n * s.start_position + n * (n + 1) / 2;
  }
  return shape;
}

}  // namespace shift
