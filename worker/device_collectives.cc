#include "worker/device_collectives.h"

#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/nccl_communicator.h"
#include "worker/staged_communicator.h"

namespace shift {
namespace {

std::string DeviceKey(int rank) { return absl::StrCat("device/", rank); }
constexpr char kNcclIdKey[] = "nccl-id";

}  // namespace

absl::StatusOr<DeviceCollectives> ParseDeviceCollectives(std::string_view name) {
  if (name == "auto") return DeviceCollectives::kAuto;
  if (name == "nccl") return DeviceCollectives::kNccl;
  if (name == "staged") return DeviceCollectives::kStaged;
  return absl::InvalidArgumentError(
      absl::StrCat("--collectives=", std::string(name), " is not one of auto, nccl, staged"));
}

const char* DeviceCollectivesName(DeviceCollectives c) {
  switch (c) {
    case DeviceCollectives::kAuto:
      return "auto";
    case DeviceCollectives::kNccl:
      return "nccl";
    case DeviceCollectives::kStaged:
      return "staged";
  }
  return "?";
}

absl::StatusOr<DeviceCollectives> ChooseDeviceCollectives(
    DeviceCollectives requested, absl::Span<const std::string> device_uuids) {
  if (requested == DeviceCollectives::kStaged) return requested;
  for (size_t a = 0; a < device_uuids.size(); ++a) {
    for (size_t b = a + 1; b < device_uuids.size(); ++b) {
      if (device_uuids[a] != device_uuids[b]) continue;
      if (requested == DeviceCollectives::kAuto) return DeviceCollectives::kStaged;
      return absl::FailedPreconditionError(absl::StrCat(
          "--collectives=nccl: ranks ", a, " and ", b, " share device ", device_uuids[a],
          ", and NCCL refuses two ranks on one device (use "
          "--collectives=auto or staged, or give each rank its own --cuda_device)"));
    }
  }
  return DeviceCollectives::kNccl;
}

absl::StatusOr<std::unique_ptr<Communicator>> FormDeviceCommunicator(
    gloo::rendezvous::Store& store, const DeviceGroupOptions& options,
    std::unique_ptr<Communicator> host, kernels::Backend* backend, DeviceCollectives* chosen) {
  std::vector<std::string> uuids(options.size);
  std::string nccl_id;
  // The store reports failures by throwing (as Gloo's interface asks).
  auto exchange = [&](auto&& body) -> absl::Status {
    try {
      return body();
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("rank ", options.rank, " choosing the group's collectives: ", e.what()));
    }
  };
  SHIFT_RETURN_IF_ERROR(exchange([&]() -> absl::Status {
    const std::string& mine = options.device_uuid;
    store.set(DeviceKey(options.rank), std::vector<char>(mine.begin(), mine.end()));
    std::vector<std::string> keys;
    for (int r = 0; r < options.size; ++r) keys.push_back(DeviceKey(r));
    store.wait(keys);
    for (int r = 0; r < options.size; ++r) {
      const std::vector<char> v = store.get(keys[r]);
      uuids[r].assign(v.begin(), v.end());
    }
    return absl::OkStatus();
  }));
  SHIFT_ASSIGN_OR_RETURN(*chosen, ChooseDeviceCollectives(options.requested, uuids));
  if (*chosen == DeviceCollectives::kStaged) {
    return std::unique_ptr<Communicator>(
        std::make_unique<StagedCommunicator>(std::move(host), backend));
  }
  // Rank 0 publishes the unique id, or why it has none (so the others fail
  // at once rather than at the store's timeout): "i" + id or "e" + reason.
  std::string published;
  if (options.rank == 0) {
    absl::StatusOr<std::string> id = NewNcclUniqueId();
    published = id.ok() ? "i" + *id : "e" + std::string(id.status().message());
  }
  SHIFT_RETURN_IF_ERROR(exchange([&]() -> absl::Status {
    if (options.rank == 0) {
      store.set(kNcclIdKey, std::vector<char>(published.begin(), published.end()));
    } else {
      store.wait({kNcclIdKey});
      const std::vector<char> v = store.get(kNcclIdKey);
      published.assign(v.begin(), v.end());
    }
    return absl::OkStatus();
  }));
  if (published.empty() || published[0] != 'i') {
    return absl::UnavailableError(
        absl::StrCat("rank 0 has no NCCL unique id for the group: ",
                     published.empty() ? "(nothing published)" : published.substr(1)));
  }
  nccl_id = published.substr(1);
  NcclOptions nccl;
  nccl.rank = options.rank;
  nccl.size = options.size;
  nccl.unique_id = std::move(nccl_id);
  nccl.device = backend->device_index();
  nccl.stream = backend->device_stream();
  nccl.timeout_s = options.nccl_timeout_s;
  return CreateNcclCommunicator(nccl);
}

}  // namespace shift
