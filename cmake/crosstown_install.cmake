# Install rules and the package config that makes `find_package(crosstown)` work.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS crosstown_core
  EXPORT crosstown-targets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY "${PROJECT_SOURCE_DIR}/lib/include/crosstown"
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
set(CROSSTOWN_HAS_TESTING_TOOLKIT ${CROSSTOWN_TESTING_TOOLKIT})
if(CROSSTOWN_TESTING_TOOLKIT)
  install(TARGETS crosstown_testing EXPORT crosstown-targets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(DIRECTORY "${PROJECT_SOURCE_DIR}/lib/testing/include/crosstown"
    DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
endif()

set(crosstown_cmake_dir "${CMAKE_INSTALL_LIBDIR}/cmake/crosstown")
install(EXPORT crosstown-targets
  NAMESPACE crosstown::
  FILE crosstown-targets.cmake
  DESTINATION "${crosstown_cmake_dir}")

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
  DESTINATION "${crosstown_cmake_dir}")
