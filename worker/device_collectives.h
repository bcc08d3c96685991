// How the ranks of a group on GPUs exchange device buffers, agreed through
// the group's rendezvous store when the group forms (under its generation,
// so a re-formed group starts afresh):
//   - NCCL (worker/nccl_communicator.h) when every rank has a GPU of its own;
//   - host-staged Gloo (worker/staged_communicator.h) when two ranks share
//     one, which NCCL refuses (tests, machines with fewer GPUs than ranks).
// Each rank publishes its GPU's UUID; every rank reads them all and so makes
// the same choice. For NCCL, rank 0 makes the unique id and publishes it.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "gloo/rendezvous/store.h"
#include "kernels/backend.h"
#include "worker/communicator.h"

namespace shift {

enum class DeviceCollectives { kAuto, kNccl, kStaged };

// "auto", "nccl" or "staged".
absl::StatusOr<DeviceCollectives> ParseDeviceCollectives(std::string_view name);
const char* DeviceCollectivesName(DeviceCollectives c);

// What a group whose ranks' devices are `device_uuids` (one per rank) uses
// when `requested`: auto is NCCL unless two ranks share a device; NCCL on
// a shared device is FAILED_PRECONDITION naming the ranks.
absl::StatusOr<DeviceCollectives> ChooseDeviceCollectives(
    DeviceCollectives requested, absl::Span<const std::string> device_uuids);

struct DeviceGroupOptions {
  int rank = 0;
  int size = 1;
  DeviceCollectives requested = DeviceCollectives::kAuto;
  std::string device_uuid;  // this rank's device (Backend::device_uuid)
  // A collective (or NCCL's set-up) not finished by then fails the step.
  double nccl_timeout_s = 120;
};

// The communicator of a CUDA rank whose host (Gloo) communicator `host`
// has just connected through `store`: publishes this rank's device, reads
// the others', and returns `host` staged through `backend` or a new NCCL
// communicator on the backend's stream (`host` dropped). `chosen` says
// which. Store failures and timeouts come back as UNAVAILABLE.
absl::StatusOr<std::unique_ptr<Communicator>> FormDeviceCommunicator(
    gloo::rendezvous::Store& store, const DeviceGroupOptions& options,
    std::unique_ptr<Communicator> host, kernels::Backend* backend, DeviceCollectives* chosen);

}  // namespace shift
