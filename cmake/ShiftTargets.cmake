# Helpers shared by every directory: warning flags for our own code and a
# one-line way to declare a GoogleTest program with its CTest label.

# Warnings for code we write (not for generated protobuf code); errors only
# with SHIFT_WERROR (see CMakeLists.txt), which tools/test, and so CI, sets.
function(shift_strict target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>)
  if(SHIFT_WERROR)
    target_compile_options(${target} PRIVATE
      $<$<COMPILE_LANGUAGE:CXX>:-Werror>
      $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings -Xcompiler=-Werror>)
  endif()
endfunction()

# shift_library(name SOURCES ... DEPS ...): a static library with our flags,
# its headers included as "dir/file.h" from the source root.
function(shift_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  shift_strict(${name})
endfunction()

# shift_binary(name SOURCES ... DEPS ...): a thin executable.
function(shift_binary name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  shift_strict(${name})
endfunction()

# shift_test(name LABEL unit|integration|gpu SOURCES ... DEPS ... [TIMEOUT s]):
# a GoogleTest program registered with CTest under one label. Tests find the
# shared data folder (tokenizers, traces) through SHIFT_SHARED_DATA.
set(SHIFT_SHARED_DATA "${PROJECT_SOURCE_DIR}/../shared/data" CACHE PATH
    "Folder of real tokenizers and traces used by tests (skipped when absent)")
# `unit_tests` builds every unit test program (the sanitizer pass builds only it).
add_custom_target(unit_tests)
function(shift_test name)
  cmake_parse_arguments(ARG "" "LABEL;TIMEOUT" "SOURCES;DEPS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  shift_strict(${name})
  add_test(NAME ${name} COMMAND ${name})
  if(ARG_LABEL STREQUAL "unit")
    add_dependencies(unit_tests ${name})
  endif()
  set_tests_properties(${name} PROPERTIES LABELS ${ARG_LABEL} TIMEOUT ${ARG_TIMEOUT}
    ENVIRONMENT "SHIFT_SHARED_DATA=${SHIFT_SHARED_DATA};SHIFT_BINARY_DIR=${PROJECT_BINARY_DIR};SHIFT_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
endfunction()

# shift_benchmark(name SOURCES ... DEPS ...): a Google Benchmark program. Not a
# test: speed is reported in notes, never asserted.
function(shift_benchmark name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} benchmark::benchmark)
  shift_strict(${name})
endfunction()
