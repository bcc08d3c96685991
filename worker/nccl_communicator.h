// NCCL behind the Communicator interface: a CUDA worker group's collectives
// on device buffers, enqueued on the backend's stream. NCCL is loaded when
// the first communicator is made (dlopen), as cuBLASLt is, so CPU ranks and
// every other binary never load it. The communicator is non-blocking
// (NCCL's config.blocking = 0): each call waits for its work with a
// deadline, and a collective that fails or does not finish in time aborts
// the communicator (ncclCommAbort) and returns UNAVAILABLE, never a hang;
// the group then re-forms with a new unique id under its new generation.
// Built with CUDA only; elsewhere every entry point says so.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/communicator.h"

namespace shift {

// The NCCL library's version, "2.28.3"; loads it. UNAVAILABLE (saying
// which library was looked for) when it cannot be loaded.
absl::StatusOr<std::string> NcclVersion();

// A new unique id (rank 0 makes it; the others get it through the
// rendezvous store), as NCCL's 128 bytes.
absl::StatusOr<std::string> NewNcclUniqueId();

struct NcclOptions {
  int rank = 0;
  int size = 1;
  std::string unique_id;   // from NewNcclUniqueId on rank 0
  int device = 0;          // CUDA device of this rank
  void* stream = nullptr;  // the backend's cudaStream_t (Backend::device_stream)
  // A collective not finished by then aborts the communicator.
  double timeout_s = 120;
};

// Joins the group of `options.size` ranks holding the same unique id.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(const NcclOptions& options);

}  // namespace shift
