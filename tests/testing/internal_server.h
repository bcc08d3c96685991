// The router's internal services alone, for tests that drive real worker
// processes: the rendezvous store and the worker hub served on a loopback
// port chosen at run time, and the internal token the ranks must send.
#pragma once

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <fstream>
#include <memory>
#include <string>

#include "router/rendezvous_service.h"
#include "router/worker_hub.h"

namespace shift::testing {

// Serves `store` and `hub` on 127.0.0.1; `*port` gets the port. Null when
// the server cannot start.
inline std::unique_ptr<grpc::Server> ServeInternal(RendezvousService* store, WorkerHub* hub,
                                                   int* port) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), port);
  builder.RegisterService(store);
  builder.RegisterService(hub);
  return builder.BuildAndStart();
}

// The internal token of these tests (common/security.h): the hub's and the
// store's, and in the file WriteInternalToken writes for shift-worker's
// --internal_token_file.
inline constexpr char kInternalToken[] = "internal-token-of-the-tests-0123456789";

// Writes kInternalToken into `dir`/internal_token (mode 0600); its path.
inline std::string WriteInternalToken(const std::string& dir) {
  const std::string path = dir + "/internal_token";
  std::ofstream(path) << kInternalToken << "\n";
  ::chmod(path.c_str(), 0600);
  return path;
}

}  // namespace shift::testing
