// The router's internal services alone, for tests that drive real worker
// processes: the rendezvous store and the worker hub served on a loopback
// port chosen at run time.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>

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

}  // namespace shift::testing
