// Proves, against a real server on loopback, that a server whose services are
// all written on gRPC's callback API (the one shift-router uses) also serves
// the standard grpc.health.v1.Health service and server reflection (shift's
// own, router/public_reflection.h: the public files only).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/unknown_field_set.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "router/public_reflection.h"
#include "shift/v1/generation.grpc.pb.h"
#include "shift/v1/internal.pb.h"

namespace shift {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// A callback-API Generation service: GetModelInfo answers inline, Generate
// streams three deltas and a final message with one write in flight.
class SpikeGeneration final : public v1::Generation::CallbackService {
 public:
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const v1::GetModelInfoRequest*,
                                         v1::ModelInfo* info) override {
    info->set_name("spike");
    info->set_vocab_size(1024);
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext*, const v1::GenerateRequest* request) override {
    class Writer : public grpc::ServerWriteReactor<v1::GenerateResponse> {
     public:
      explicit Writer(std::string text) : text_(std::move(text)) { Next(); }
      void OnWriteDone(bool ok) override {
        if (!ok) {
          Finish(grpc::Status(grpc::StatusCode::UNKNOWN, "write failed"));
          return;
        }
        Next();
      }
      void OnDone() override { delete this; }

     private:
      void Next() {
        if (sent_ < 3) {
          response_.Clear();
          response_.mutable_delta()->add_token_ids(sent_);
          response_.mutable_delta()->set_text(text_.substr(sent_, 1));
          ++sent_;
          StartWrite(&response_);
        } else if (sent_ == 3) {
          response_.Clear();
          response_.mutable_final()->set_finish_reason(v1::FINISH_REASON_LENGTH);
          ++sent_;
          StartWriteLast(&response_, grpc::WriteOptions());
        } else {
          Finish(grpc::Status::OK);
        }
      }
      std::string text_;
      v1::GenerateResponse response_;
      int sent_ = 0;
    };
    return new Writer(request->text());
  }
};

class GrpcSpikeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    builder.RegisterService(&reflection_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port_),
                                   grpc::InsecureChannelCredentials());
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  grpc::Status Check(const std::string& service, HealthCheckResponse* response) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    HealthCheckRequest request;
    request.set_service(service);
    return Health::NewStub(channel_)->Check(&ctx, request, response);
  }

  // One request/response exchange on the reflection stream, through the
  // generic stub: the reflection service's own message classes live inside
  // gRPC's library, so the test encodes and decodes the wire format itself.
  std::string Reflect(const std::string& request_bytes) {
    grpc::GenericStub stub(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::CompletionQueue cq;
    auto call = stub.PrepareCall(
        &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
    auto step = [&](auto&& start) {
      void* tag;
      bool ok = false;
      start(reinterpret_cast<void*>(1));
      EXPECT_TRUE(cq.Next(&tag, &ok));
      return ok;
    };
    EXPECT_TRUE(step([&](void* t) { call->StartCall(t); }));
    grpc::Slice slice(request_bytes);
    grpc::ByteBuffer out(&slice, 1);
    EXPECT_TRUE(step([&](void* t) { call->Write(out, t); }));
    EXPECT_TRUE(step([&](void* t) { call->WritesDone(t); }));
    grpc::ByteBuffer in;
    EXPECT_TRUE(step([&](void* t) { call->Read(&in, t); }));
    grpc::Status status;
    EXPECT_TRUE(step([&](void* t) { call->Finish(&status, t); }));
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::vector<grpc::Slice> slices;
    EXPECT_TRUE(in.Dump(&slices).ok());
    std::string bytes;
    for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    cq.Shutdown();
    void* tag;
    bool ok;
    while (cq.Next(&tag, &ok)) {
    }
    return bytes;
  }

  // Length-delimited fields numbered `field` of a serialized message.
  static std::vector<std::string> Fields(const std::string& message, int field) {
    google::protobuf::UnknownFieldSet set;
    EXPECT_TRUE(set.ParseFromString(message));
    std::vector<std::string> out;
    for (int i = 0; i < set.field_count(); ++i) {
      if (set.field(i).number() == field &&
          set.field(i).type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
        out.push_back(set.field(i).length_delimited());
      }
    }
    return out;
  }

  int port_ = 0;
  SpikeGeneration service_;
  PublicReflection reflection_;  // the router's
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(GrpcSpikeTest, CallbackServiceAnswersUnaryAndStreamingCalls) {
  auto stub = v1::Generation::NewStub(channel_);
  {
    grpc::ClientContext ctx;
    v1::ModelInfo info;
    ASSERT_TRUE(stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok());
    EXPECT_EQ(info.name(), "spike");
  }
  grpc::ClientContext ctx;
  v1::GenerateRequest request;
  request.set_text("abc");
  auto reader = stub->Generate(&ctx, request);
  std::string text;
  v1::GenerateResponse response;
  int finals = 0;
  while (reader->Read(&response)) {
    if (response.has_delta()) text += response.delta().text();
    if (response.has_final()) ++finals;
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(text, "abc");
  EXPECT_EQ(finals, 1);
}

TEST_F(GrpcSpikeTest, HealthCheckServesOverallAndPerServiceStatus) {
  HealthCheckResponse response;
  ASSERT_TRUE(Check("", &response).ok());
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);

  // Unknown until the server declares it; this is how the router will report
  // NOT_SERVING until a worker group is ready.
  EXPECT_EQ(Check("shift.v1.Generation", &response).error_code(), grpc::StatusCode::NOT_FOUND);
  auto* health = server_->GetHealthCheckService();
  ASSERT_NE(health, nullptr);
  health->SetServingStatus("shift.v1.Generation", false);
  ASSERT_TRUE(Check("shift.v1.Generation", &response).ok());
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  health->SetServingStatus("shift.v1.Generation", true);
  ASSERT_TRUE(Check("shift.v1.Generation", &response).ok());
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
}

TEST_F(GrpcSpikeTest, HealthWatchStreamsStatusChanges) {
  auto* health = server_->GetHealthCheckService();
  health->SetServingStatus("shift.v1.Generation", false);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  HealthCheckRequest request;
  request.set_service("shift.v1.Generation");
  auto reader = Health::NewStub(channel_)->Watch(&ctx, request);
  HealthCheckResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  health->SetServingStatus("shift.v1.Generation", true);
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
  ctx.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(GrpcSpikeTest, ReflectionListsAndDescribesServices) {
  // ServerReflectionRequest{list_services: "*"} (field 7).
  std::string listing = Reflect(std::string("\x3a\x01*", 3));
  // ServerReflectionResponse.list_services_response (6) -> service (1) -> name (1).
  auto lists = Fields(listing, 6);
  ASSERT_EQ(lists.size(), 1u);
  std::vector<std::string> names;
  for (const auto& service : Fields(lists[0], 1)) {
    for (const auto& name : Fields(service, 1)) names.push_back(name);
  }
  EXPECT_THAT(names, ::testing::Contains("shift.v1.Generation"));
  EXPECT_THAT(names, ::testing::Contains("grpc.health.v1.Health"));
  EXPECT_THAT(names, ::testing::Contains("grpc.reflection.v1alpha.ServerReflection"));

  // file_containing_symbol (4) gives the descriptor a client like grpcurl needs.
  std::string symbol = "shift.v1.Generation";
  std::string request = std::string("\x22", 1) + static_cast<char>(symbol.size()) + symbol;
  auto files = Fields(Reflect(request), 4);  // file_descriptor_response
  ASSERT_EQ(files.size(), 1u);
  auto protos = Fields(files[0], 1);  // file_descriptor_proto
  ASSERT_FALSE(protos.empty());
  bool found = false;
  for (const auto& proto : protos) {
    for (const auto& name : Fields(proto, 1)) found |= (name == "shift/v1/generation.proto");
  }
  EXPECT_TRUE(found);

  // internal.proto is in the same process's descriptor pool, but nothing of
  // it is described: its symbols and its file get the answer a symbol that
  // does not exist gets, error_response (7) NOT_FOUND.
  ASSERT_EQ(v1::internal::StepPlan::descriptor()->file()->name(), "shift/v1/internal.proto");
  for (const std::string& asked :
       {std::string("shift.v1.internal.Worker"), std::string("shift.v1.internal.StepPlan"),
        std::string("no.such.Symbol")}) {
    std::string ask = std::string("\x22", 1) + static_cast<char>(asked.size()) + asked;
    const std::string answer = Reflect(ask);
    EXPECT_TRUE(Fields(answer, 4).empty()) << asked;
    auto errors = Fields(answer, 7);
    ASSERT_EQ(errors.size(), 1u) << asked;
    EXPECT_THAT(errors[0], ::testing::HasSubstr("not found")) << asked;
  }
  const std::string file = "shift/v1/internal.proto";
  const std::string by_name = std::string("\x1a", 1) + static_cast<char>(file.size()) + file;
  EXPECT_EQ(Fields(Reflect(by_name), 7).size(), 1u);
}

}  // namespace
}  // namespace shift
