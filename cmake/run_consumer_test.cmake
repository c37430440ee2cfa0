# cmake -P script: builds and runs a consumer of crosstown the way an application would.
#   MODE=install      install CROSSTOWN_BUILD_DIR into WORK_DIR/prefix, find_package from there
#   MODE=build-tree   find_package from CROSSTOWN_BUILD_DIR itself (its export() files)
#   MODE=subproject   add_subdirectory(CROSSTOWN_SOURCE_DIR) in a fresh project
#   MODE=missing      ask for a component that does not exist: configuring must fail, naming it
# COMPONENTS is a list joined with '+' (core+sim), passed on in that form: run() expands its
# arguments unquoted, which would split a ';' list into separate command-line words. NO_GTEST=ON hides GoogleTest and RapidCheck
# from the consumer (CMAKE_DISABLE_FIND_PACKAGE_*), so a dependency on them fails the test.
foreach(var MODE CROSSTOWN_SOURCE_DIR CROSSTOWN_BUILD_DIR WORK_DIR CMAKE_GENERATOR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_consumer_test.cmake: ${var} is not set")
  endif()
endforeach()

file(REMOVE_RECURSE "${WORK_DIR}")

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}")
  endif()
endfunction()

set(common
  -G "${CMAKE_GENERATOR}"
  "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}"
  "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}"
  "-DCMAKE_EXE_LINKER_FLAGS=${EXE_LINKER_FLAGS}"
  "-DCMAKE_BUILD_TYPE=${BUILD_TYPE}")
if(NO_GTEST)
  list(APPEND common -DCMAKE_DISABLE_FIND_PACKAGE_GTest=ON
    -DCMAKE_DISABLE_FIND_PACKAGE_rapidcheck=ON -DCONSUMER_NO_GTEST=ON)
endif()
set(consumer "${CROSSTOWN_SOURCE_DIR}/tests/packaging/consumer")

if(MODE STREQUAL "install")
  set(prefix "${WORK_DIR}/prefix")
  run(${CMAKE_COMMAND} --install "${CROSSTOWN_BUILD_DIR}" --prefix "${prefix}")
  run(${CMAKE_COMMAND} -S "${consumer}" -B "${WORK_DIR}/build" ${common}
    "-DCMAKE_PREFIX_PATH=${prefix}" "-DCONSUMER_COMPONENTS=${COMPONENTS}")
elseif(MODE STREQUAL "build-tree")
  run(${CMAKE_COMMAND} -S "${consumer}" -B "${WORK_DIR}/build" ${common}
    "-Dcrosstown_DIR=${CROSSTOWN_BUILD_DIR}" "-DCONSUMER_COMPONENTS=${COMPONENTS}")
elseif(MODE STREQUAL "subproject")
  run(${CMAKE_COMMAND} -S "${CROSSTOWN_SOURCE_DIR}/tests/packaging/subproject"
    -B "${WORK_DIR}/build" ${common} "-DCROSSTOWN_SOURCE_DIR=${CROSSTOWN_SOURCE_DIR}")
elseif(MODE STREQUAL "missing")
  execute_process(COMMAND ${CMAKE_COMMAND} -S "${consumer}" -B "${WORK_DIR}/build" ${common}
      "-Dcrosstown_DIR=${CROSSTOWN_BUILD_DIR}" "-DCONSUMER_COMPONENTS=core;no_such_component"
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0)
    message(FATAL_ERROR "asking for no_such_component configured without error")
  endif()
  if(NOT "${out}${err}" MATCHES "no_such_component is not a component of this crosstown")
    message(FATAL_ERROR "the error does not name the missing component:\n${out}${err}")
  endif()
  message(STATUS "missing component reported: ok")
  return()
else()
  message(FATAL_ERROR "unknown MODE ${MODE}")
endif()

run(${CMAKE_COMMAND} --build "${WORK_DIR}/build")
if(MODE STREQUAL "subproject")
  run("${WORK_DIR}/build/core_consumer")
  run("${WORK_DIR}/build/beast_consumer")
else()
  run(${CMAKE_CTEST_COMMAND} --test-dir "${WORK_DIR}/build" --output-on-failure)
endif()
