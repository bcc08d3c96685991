// Command-line set-up shared by every shift binary: a one-line description,
// --help listing the program's own flags with defaults, then flag parsing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace shift {

// Sets the usage text (`description`, then `usage`), makes --help show the
// flags defined in files whose name ends in "_main.cc" or "_flags.cc" (flags
// several programs share: tools/client_flags.cc, workload/workload_flags.cc,
// worker/engine_flags.cc), and parses the
// command line. Returns the positional arguments (argv[0] first). --help
// (and --helpfull, --help=substring, ...) prints to stdout and exits 0; an
// unknown flag or a bad value is explained on stderr and exits 1.
std::vector<char*> InitProgram(int argc, char** argv, const std::string& description,
                               const std::string& usage);

// Raises the soft limit on open files to the hard one (servers: every client
// connection is a descriptor, and the common default of 1,024 is reached by
// idle connections alone). Returns the limit now in force.
int64_t RaiseOpenFileLimit();

// Gives the heap's free memory back to the system (malloc_trim) when more
// than `threshold_bytes` of it is free. glibc keeps what a burst freed, so
// without it a burst of work (an HTTP/2 rapid-reset flood makes gRPC
// allocate up to its quota) leaves the process that large for good.
// Returns the bytes that were free; servers call it about once a second.
uint64_t ReturnFreeHeap(uint64_t threshold_bytes);

// Prints "program: status" to stderr and returns the exit code for a failure.
int ReportFailure(const absl::Status& status);

}  // namespace shift
