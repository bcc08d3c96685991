// A Gloo rendezvous store backed by the router's Rendezvous service, so the
// ranks of a group meet through the router wherever they run (one machine
// or a Kubernetes StatefulSet). Keys are scoped by (group, generation).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "gloo/rendezvous/store.h"
#include "grpcpp/channel.h"
#include "shift/v1/internal.grpc.pb.h"

namespace shift {

class GrpcRendezvousStore final : public gloo::rendezvous::Store {
 public:
  // `ticket`: this rank's ticket for the generation (Welcome's
  // rendezvous_ticket), sent with every call.
  GrpcRendezvousStore(std::shared_ptr<grpc::Channel> channel, uint32_t group, uint64_t generation,
                      std::chrono::milliseconds timeout, const std::string& ticket = "");

  // Gloo's interface reports failures by throwing; GlooCommunicator turns
  // them back into a status. Messages carry the router's explanation.
  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

 private:
  std::vector<std::string> Get(const std::vector<std::string>& keys,
                               std::chrono::milliseconds timeout);

  std::unique_ptr<v1::internal::Rendezvous::Stub> stub_;
  v1::internal::StoreScope scope_;
  std::chrono::milliseconds timeout_;
};

}  // namespace shift
