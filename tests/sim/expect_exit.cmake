# cmake -DCOMMAND=<;-list> -DEXPECT_EXIT=<n> [-DEXPECT_OUTPUT=<regex>] [-DEXPECT_FILE=<path>]
#       -P expect_exit.cmake
# Runs COMMAND and fails unless it exits with EXPECT_EXIT, its output (stdout and stderr)
# matches EXPECT_OUTPUT, and EXPECT_FILE exists afterwards.
if(DEFINED EXPECT_FILE)
  file(REMOVE "${EXPECT_FILE}")
endif()
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
if(NOT code STREQUAL "${EXPECT_EXIT}")
  message(FATAL_ERROR "exit code ${code}, expected ${EXPECT_EXIT}")
endif()
if(DEFINED EXPECT_OUTPUT AND NOT "${out}${err}" MATCHES "${EXPECT_OUTPUT}")
  message(FATAL_ERROR "output does not match '${EXPECT_OUTPUT}'")
endif()
if(DEFINED EXPECT_FILE AND NOT EXISTS "${EXPECT_FILE}")
  message(FATAL_ERROR "${EXPECT_FILE} was not written")
endif()
