// gRPC server reflection (grpc.reflection.v1alpha) over the public
// services only. gRPC's own plugin answers from the whole generated
// descriptor pool, so on the public port it described internal.proto to
// anyone who asked for one of its symbols; this service answers only for
// the files it is given and their imports, and says "not found" alike for
// a symbol that does not exist and one that is not public.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"

namespace shift {

class PublicReflection final : public grpc::reflection::v1alpha::ServerReflection::CallbackService {
 public:
  // shift's public port: Generation, health and reflection, described from
  // generation.proto, health.proto and reflection.proto.
  PublicReflection();
  // `services`: the full names listed; `files`: the proto files (as the
  // generated pool names them, e.g. "shift/v1/generation.proto") that may
  // be described, with everything they import.
  PublicReflection(std::vector<std::string> services, const std::vector<std::string>& files);

  grpc::ServerBidiReactor<grpc::reflection::v1alpha::ServerReflectionRequest,
                          grpc::reflection::v1alpha::ServerReflectionResponse>*
  ServerReflectionInfo(grpc::CallbackServerContext* ctx) override;

  // The answer to one request (public for tests).
  grpc::reflection::v1alpha::ServerReflectionResponse Answer(
      const grpc::reflection::v1alpha::ServerReflectionRequest& request) const;

 private:
  class Reactor;
  std::vector<std::string> services_;
  std::set<std::string> files_;  // the given files and their imports
};

}  // namespace shift
