#include "common/grpc_log.h"

#include <grpc/support/log.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace shift {
namespace {

void GrpcLog(gpr_log_func_args* args) {
  const LogLevel level = args->severity == GPR_LOG_SEVERITY_ERROR  ? LogLevel::kError
                         : args->severity == GPR_LOG_SEVERITY_INFO ? LogLevel::kInfo
                                                                   : LogLevel::kDebug;
  const char* file = args->file != nullptr ? args->file : "";
  if (const char* slash = std::strrchr(file, '/')) file = slash + 1;
  Log(level, "grpc", args->message != nullptr ? args->message : "",
      {{"source", absl::StrCat(file, ":", args->line)}});
}

}  // namespace

void RouteGrpcLogs() {
  gpr_set_log_function(GrpcLog);
  gpr_set_log_verbosity(LogEnabled(LogLevel::kDebug) ? GPR_LOG_SEVERITY_DEBUG
                                                     : GPR_LOG_SEVERITY_ERROR);
}

}  // namespace shift
