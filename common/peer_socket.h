// What the kernel knows of this process's TCP connection to a peer, found by
// the peer's address among the process's own descriptors. The router asks it
// about a rank that seems silent: gRPC's threads can be held for seconds by a
// flood of the public port (they serve both ports), and the rank's
// heartbeats then wait, received but unread. Bytes the kernel received from
// the rank in that time say it spoke and the router is behind.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace shift {

// The bytes the kernel has received so far on this process's established
// TCP connection to `peer`, read by anyone or not, with the peer named as
// gRPC names peers ("ipv4:127.0.0.1:41234", "ipv6:[::1]:41234"); nullopt
// when the process has no such connection (another kind of peer, or one
// that has closed). `fd_hint` (may be null) keeps the descriptor found
// between calls, so that only the first call looks through them all.
std::optional<uint64_t> ReceivedBytes(std::string_view peer, int* fd_hint = nullptr);

}  // namespace shift
