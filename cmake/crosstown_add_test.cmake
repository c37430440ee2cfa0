# crosstown_add_test(<name> SOURCES <files...> [LIBRARIES <targets...>])
#
# One GoogleTest executable; each TEST becomes its own CTest test (discovered when the tests
# run, so a sanitizer build does not execute binaries at build time). Every test can include
# the shared helpers in tests/support (e.g. "test_support.hpp").
include(GoogleTest)

function(crosstown_add_test name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "SOURCES;LIBRARIES")
  add_executable(${name} ${arg_SOURCES})
  target_link_libraries(${name} PRIVATE crosstown::core GTest::gtest GTest::gmock
    GTest::gtest_main ${arg_LIBRARIES})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests/support)
  gtest_discover_tests(${name}
    DISCOVERY_MODE PRE_TEST
    DISCOVERY_TIMEOUT 60
    PROPERTIES TIMEOUT 300)
endfunction()
