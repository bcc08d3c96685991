# Shared by tools/quickstart and tools/test: where to build, how many jobs,
# and how to configure CMake (CUDA whenever nvcc exists, and then required).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${SHIFT_BUILD_DIR:-$root/build}
jobs=${SHIFT_JOBS:-2}

find_nvcc() {
  if command -v nvcc >/dev/null 2>&1; then command -v nvcc
  elif [ -x /usr/local/cuda/bin/nvcc ]; then echo /usr/local/cuda/bin/nvcc
  fi
}

# configure BUILD_DIR [extra cmake args...]
configure() {
  local dir=$1; shift
  local cuda_args=()
  local nvcc
  nvcc=$(find_nvcc)
  if [ -n "$nvcc" ]; then
    # nvcc exists, so the CUDA part must build: fail rather than skip it.
    cuda_args=(-DSHIFT_REQUIRE_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc")
  fi
  cmake -S "$root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${cuda_args[@]}" "$@"
}
