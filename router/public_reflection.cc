#include "router/public_reflection.h"

#include <deque>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"

namespace shift {

namespace rpc = grpc::reflection::v1alpha;
using google::protobuf::DescriptorPool;
using google::protobuf::FileDescriptor;

namespace {

// `file` and every file it imports, transitively, each once.
void WithImports(const FileDescriptor* file, std::set<std::string>* out) {
  if (file == nullptr || !out->insert(file->name()).second) return;
  for (int i = 0; i < file->dependency_count(); ++i) WithImports(file->dependency(i), out);
}

// The most requests one stream may have waiting to be answered: a client
// that sends without reading is held to it by flow control.
constexpr size_t kMaxQueued = 16;

}  // namespace

PublicReflection::PublicReflection()
    : PublicReflection({"shift.v1.Generation", "grpc.health.v1.Health",
                        "grpc.reflection.v1alpha.ServerReflection"},
                       {"shift/v1/generation.proto", "grpc/health/v1/health.proto",
                        "grpc/reflection/v1alpha/reflection.proto"}) {}

PublicReflection::PublicReflection(std::vector<std::string> services,
                                   const std::vector<std::string>& files)
    : services_(std::move(services)) {
  for (const std::string& name : files) {
    WithImports(DescriptorPool::generated_pool()->FindFileByName(name), &files_);
  }
}

rpc::ServerReflectionResponse PublicReflection::Answer(
    const rpc::ServerReflectionRequest& request) const {
  rpc::ServerReflectionResponse response;
  response.set_valid_host(request.host());
  *response.mutable_original_request() = request;
  const DescriptorPool* pool = DescriptorPool::generated_pool();
  const FileDescriptor* file = nullptr;
  switch (request.message_request_case()) {
    case rpc::ServerReflectionRequest::kListServices:
      for (const std::string& name : services_) {
        response.mutable_list_services_response()->add_service()->set_name(name);
      }
      return response;
    case rpc::ServerReflectionRequest::kFileByFilename:
      file = pool->FindFileByName(request.file_by_filename());
      break;
    case rpc::ServerReflectionRequest::kFileContainingSymbol:
      file = pool->FindFileContainingSymbol(request.file_containing_symbol());
      break;
    case rpc::ServerReflectionRequest::kAllExtensionNumbersOfType:
      // proto3 files have no extensions: a public type has none.
      if (const auto* type = pool->FindMessageTypeByName(request.all_extension_numbers_of_type());
          type != nullptr && files_.count(type->file()->name())) {
        response.mutable_all_extension_numbers_response()->set_base_type_name(type->full_name());
        return response;
      }
      break;
    default:  // file_containing_extension: none exist
      break;
  }
  if (file != nullptr && files_.count(file->name())) {
    // The file, then what it imports (all public: the set is closed under
    // imports), as gRPC's own reflection answers.
    std::set<std::string> wanted;
    WithImports(file, &wanted);
    auto* files = response.mutable_file_descriptor_response();
    google::protobuf::FileDescriptorProto proto;
    file->CopyTo(&proto);
    files->add_file_descriptor_proto(proto.SerializeAsString());
    for (const std::string& name : wanted) {
      if (name == file->name()) continue;
      proto.Clear();
      pool->FindFileByName(name)->CopyTo(&proto);
      files->add_file_descriptor_proto(proto.SerializeAsString());
    }
    return response;
  }
  // One answer for what does not exist and what is not public.
  response.mutable_error_response()->set_error_code(grpc::StatusCode::NOT_FOUND);
  response.mutable_error_response()->set_error_message("not found");
  return response;
}

// One reflection stream: reads a request, writes its answer, one write in
// flight; deletes itself when done.
class PublicReflection::Reactor final
    : public grpc::ServerBidiReactor<rpc::ServerReflectionRequest, rpc::ServerReflectionResponse> {
 public:
  explicit Reactor(const PublicReflection* service) : service_(service) { StartRead(&request_); }
  void OnReadDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    if (!ok) {  // the client finished sending
      reading_done_ = true;
      if (!writing_) FinishOnce(grpc::Status::OK);
      return;
    }
    queue_.push_back(service_->Answer(request_));
    if (!writing_) WriteNext();
    if (queue_.size() < kMaxQueued) {
      StartRead(&request_);
    } else {
      read_paused_ = true;
    }
  }
  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    queue_.pop_front();
    writing_ = false;
    if (!ok) {
      FinishOnce(grpc::Status::CANCELLED);
      return;
    }
    if (!queue_.empty()) {
      WriteNext();
    } else if (reading_done_) {
      FinishOnce(grpc::Status::OK);
    }
    if (read_paused_ && !finished_ && queue_.size() < kMaxQueued) {
      read_paused_ = false;
      StartRead(&request_);
    }
  }
  void OnDone() override { delete this; }

 private:
  void WriteNext() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    writing_ = true;
    StartWrite(&queue_.front());
  }
  void FinishOnce(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  const PublicReflection* service_;
  absl::Mutex mu_;
  rpc::ServerReflectionRequest request_;
  std::deque<rpc::ServerReflectionResponse> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reading_done_ ABSL_GUARDED_BY(mu_) = false;
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

grpc::ServerBidiReactor<rpc::ServerReflectionRequest, rpc::ServerReflectionResponse>*
PublicReflection::ServerReflectionInfo(grpc::CallbackServerContext*) {
  return new Reactor(this);
}

}  // namespace shift
