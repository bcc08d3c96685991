// Routes the gRPC library's own log lines (gpr_log: handshake failures and
// the like) through shift's logger (common/log.h, component "grpc"), so a
// server's stderr has one format. Call after ConfigureLogging: gRPC logs
// errors, and everything at --log_level=debug.
#pragma once

namespace shift {

void RouteGrpcLogs();

}  // namespace shift
