# crosstown_add_test(<name> SOURCES <files...> [LIBRARIES <targets...>])
#
# One GoogleTest executable; each TEST becomes its own CTest test (discovered when the tests
# run, so a sanitizer build does not execute binaries at build time). Every test can include
# the shared helpers in tests/support (e.g. "test_support.hpp").
include(GoogleTest)

# Every test binary parses GoogleTest, GMock and crosstown.hpp (which brings Asio's awaitable
# machinery): about half of a small test's compile time. They are precompiled once, in
# crosstown_test_pch, and every test reuses that header (measured on response_scope_test, 2
# cores: about a third less CPU per test file). A target whose flags make the precompiled
# header unusable (a define it depends on, another -g level) silently parses it as text, so
# the option changes build time only, never what compiles. Off for ccache builds, which cannot
# cache a compile that reads a precompiled header.
option(CROSSTOWN_PCH "Precompile the headers the tests share" ON)

function(_crosstown_test_pch)
  if(TARGET crosstown_test_pch)
    return()
  endif()
  file(CONFIGURE OUTPUT "${PROJECT_BINARY_DIR}/crosstown_test_pch.cpp"
    CONTENT "// The translation unit that builds the tests' precompiled header.\n")
  add_library(crosstown_test_pch OBJECT "${PROJECT_BINARY_DIR}/crosstown_test_pch.cpp")
  target_link_libraries(crosstown_test_pch PRIVATE crosstown::core GTest::gtest GTest::gmock)
  target_precompile_headers(crosstown_test_pch PRIVATE
    <gtest/gtest.h> <gmock/gmock.h> <crosstown/crosstown.hpp>)
endfunction()

function(crosstown_add_test name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "SOURCES;LIBRARIES")
  add_executable(${name} ${arg_SOURCES})
  target_link_libraries(${name} PRIVATE crosstown::core GTest::gtest GTest::gmock
    GTest::gtest_main ${arg_LIBRARIES})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests/support)
  if(CROSSTOWN_PCH)
    _crosstown_test_pch()
    target_precompile_headers(${name} REUSE_FROM crosstown_test_pch)
  endif()
  gtest_discover_tests(${name}
    DISCOVERY_MODE PRE_TEST
    DISCOVERY_TIMEOUT 60
    PROPERTIES TIMEOUT 300)
endfunction()
