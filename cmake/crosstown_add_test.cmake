# crosstown_add_test(<name> SOURCES <files...> [LIBRARIES <targets...>])
#
# One GoogleTest executable; each TEST becomes its own CTest test (discovered when the tests
# run, so a sanitizer build does not execute binaries at build time).
include(GoogleTest)

function(crosstown_add_test name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "SOURCES;LIBRARIES")
  add_executable(${name} ${arg_SOURCES})
  target_link_libraries(${name} PRIVATE crosstown::core GTest::gtest GTest::gmock
    GTest::gtest_main ${arg_LIBRARIES})
  gtest_discover_tests(${name}
    DISCOVERY_MODE PRE_TEST
    DISCOVERY_TIMEOUT 60
    PROPERTIES TIMEOUT 300)
endfunction()
