#include "worker/rendezvous_store.h"

#include <stdexcept>

#include "absl/strings/str_cat.h"

namespace shift {
namespace {

void ThrowIfError(const grpc::Status& status, const char* what) {
  if (!status.ok()) {
    throw std::runtime_error(absl::StrCat("rendezvous ", what, ": ", status.error_message()));
  }
}

}  // namespace

GrpcRendezvousStore::GrpcRendezvousStore(std::shared_ptr<grpc::Channel> channel, uint32_t group,
                                         uint64_t generation, std::chrono::milliseconds timeout,
                                         const std::string& ticket)
    : stub_(v1::internal::Rendezvous::NewStub(channel)), timeout_(timeout) {
  scope_.set_group(group);
  scope_.set_generation(generation);
  scope_.set_ticket(ticket);
}

void GrpcRendezvousStore::set(const std::string& key, const std::vector<char>& data) {
  v1::internal::SetRequest request;
  *request.mutable_scope() = scope_;
  request.set_key(key);
  request.set_value(std::string(data.begin(), data.end()));
  v1::internal::SetResponse response;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout_);
  ThrowIfError(stub_->Set(&ctx, request, &response), "set");
}

std::vector<std::string> GrpcRendezvousStore::Get(const std::vector<std::string>& keys,
                                                  std::chrono::milliseconds timeout) {
  v1::internal::GetRequest request;
  *request.mutable_scope() = scope_;
  for (const std::string& key : keys) request.add_keys(key);
  request.set_timeout_ms(static_cast<uint32_t>(timeout.count()));
  v1::internal::GetResponse response;
  grpc::ClientContext ctx;
  // The server answers DEADLINE_EXCEEDED (naming the missing keys) first.
  ctx.set_deadline(std::chrono::system_clock::now() + timeout + std::chrono::seconds(5));
  ThrowIfError(stub_->Get(&ctx, request, &response), "get");
  return {response.values().begin(), response.values().end()};
}

std::vector<char> GrpcRendezvousStore::get(const std::string& key) {
  const std::string value = Get({key}, timeout_)[0];
  return std::vector<char>(value.begin(), value.end());
}

void GrpcRendezvousStore::wait(const std::vector<std::string>& keys) { Get(keys, timeout_); }

void GrpcRendezvousStore::wait(const std::vector<std::string>& keys,
                               const std::chrono::milliseconds& timeout) {
  Get(keys, timeout);
}

}  // namespace shift
