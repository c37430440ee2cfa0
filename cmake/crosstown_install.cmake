# Install rules, build-tree export and the package config that makes
# `find_package(crosstown COMPONENTS ...)` work, one export set per component:
#   core     crosstown::core                      lib/include/crosstown
#   beast    crosstown::beast                     adapters/beast/include/crosstown/beast
#   sim      crosstown::sim, crosstown-sim        sim/include/crosstown/sim
#   testing  crosstown::testing                   lib/testing/include/crosstown/testing
#   redis    crosstown::redis, crosstown-worker   durable/include/crosstown/redis (needs hiredis)
#   restinio crosstown::restinio                  adapters/restinio/include/crosstown/restinio
#   httplib  crosstown::httplib                   adapters/httplib/include/crosstown/httplib
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(crosstown_cmake_dir "${CMAKE_INSTALL_LIBDIR}/cmake/crosstown")
set(CROSSTOWN_PACKAGE_COMPONENTS core beast)
if(CROSSTOWN_BUILD_SIM)
  list(APPEND CROSSTOWN_PACKAGE_COMPONENTS sim)
endif()
if(CROSSTOWN_TESTING_TOOLKIT)
  list(APPEND CROSSTOWN_PACKAGE_COMPONENTS testing)
endif()
if(TARGET crosstown_redis)  # built only where hiredis was found (durable/CMakeLists.txt)
  list(APPEND CROSSTOWN_PACKAGE_COMPONENTS redis)
endif()
# The two adapters are built where their packages were found (the top-level CMakeLists.txt).
if(TARGET crosstown_restinio)
  list(APPEND CROSSTOWN_PACKAGE_COMPONENTS restinio)
endif()
if(TARGET crosstown_httplib)
  list(APPEND CROSSTOWN_PACKAGE_COMPONENTS httplib)
endif()

# crosstown_install_component(<component> TARGETS <targets...> HEADERS <dir>)
function(crosstown_install_component component)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "HEADERS" "TARGETS")
  install(TARGETS ${arg_TARGETS}
    EXPORT crosstown-${component}-targets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT ${component}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT ${component}
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT ${component})
  install(DIRECTORY "${arg_HEADERS}" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/crosstown"
    COMPONENT ${component})
  install(EXPORT crosstown-${component}-targets
    NAMESPACE crosstown::
    FILE crosstown-${component}-targets.cmake
    DESTINATION "${crosstown_cmake_dir}"
    COMPONENT ${component})
  # The same targets from the build tree: -Dcrosstown_DIR=<build dir> works without installing.
  export(EXPORT crosstown-${component}-targets
    NAMESPACE crosstown::
    FILE "${PROJECT_BINARY_DIR}/crosstown-${component}-targets.cmake")
endfunction()

# The core's headers are the whole of lib/include/crosstown (detail/ included).
install(TARGETS crosstown_core
  EXPORT crosstown-core-targets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT core
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT core)
install(DIRECTORY "${PROJECT_SOURCE_DIR}/lib/include/crosstown"
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT core)
install(EXPORT crosstown-core-targets NAMESPACE crosstown:: FILE crosstown-core-targets.cmake
  DESTINATION "${crosstown_cmake_dir}" COMPONENT core)
export(EXPORT crosstown-core-targets NAMESPACE crosstown::
  FILE "${PROJECT_BINARY_DIR}/crosstown-core-targets.cmake")

crosstown_install_component(beast TARGETS crosstown_beast
  HEADERS "${PROJECT_SOURCE_DIR}/adapters/beast/include/crosstown/beast")
if(CROSSTOWN_BUILD_SIM)
  crosstown_install_component(sim TARGETS crosstown_sim crosstown-sim
    HEADERS "${PROJECT_SOURCE_DIR}/sim/include/crosstown/sim")
endif()
if(CROSSTOWN_TESTING_TOOLKIT)
  crosstown_install_component(testing TARGETS crosstown_testing
    HEADERS "${PROJECT_SOURCE_DIR}/lib/testing/include/crosstown/testing")
endif()
if(TARGET crosstown_redis)
  crosstown_install_component(redis TARGETS crosstown_redis crosstown-worker
    HEADERS "${PROJECT_SOURCE_DIR}/durable/include/crosstown/redis")
endif()

if(TARGET crosstown_restinio)
  crosstown_install_component(restinio TARGETS crosstown_restinio
    HEADERS "${PROJECT_SOURCE_DIR}/adapters/restinio/include/crosstown/restinio")
endif()
if(TARGET crosstown_httplib)
  crosstown_install_component(httplib TARGETS crosstown_httplib
    HEADERS "${PROJECT_SOURCE_DIR}/adapters/httplib/include/crosstown/httplib")
endif()

# The installed config, and a build-tree copy beside the exported target files.
configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/crosstown-config.cmake.in"
  "${PROJECT_BINARY_DIR}/crosstown-config.cmake"
  INSTALL_DESTINATION "${crosstown_cmake_dir}")
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/crosstown-config-version.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES
  "${PROJECT_BINARY_DIR}/crosstown-config.cmake"
  "${PROJECT_BINARY_DIR}/crosstown-config-version.cmake"
  DESTINATION "${crosstown_cmake_dir}" COMPONENT core)
