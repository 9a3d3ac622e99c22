# Install rules of damo (CMakeLists.txt includes this when DAMO_INSTALL is on, after the
# damo, damo_shared and damo_cli targets). `make install PREFIX=... DESTDIR=...` runs them.
#
#   lib/libdamo.so.X.Y.Z, libdamo.so.X, libdamo.so   the shared library (damo_* exported)
#   lib/libdamo.a                                     the static archive (all symbols)
#   include/damo.h
#   lib/pkgconfig/damo.pc                             pkg-config --cflags --libs [--static] damo
#   lib/cmake/damo/                                   find_package(damo CONFIG): damo::damo,
#                                                     COMPONENTS static: damo::damo_static
#   bin/damo, share/man/man1/damo.1
include(CMakePackageConfigHelpers)

set(DAMO_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/damo)

install(TARGETS damo_shared EXPORT damoTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS damo EXPORT damoStaticTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS damo_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${CMAKE_CURRENT_SOURCE_DIR}/include/damo.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${CMAKE_CURRENT_SOURCE_DIR}/docs/damo.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)

# The CMake package: the two export sets, the config that loads them and its version file
# (0.x: a minor version may change the API, so only the same major.minor matches).
install(EXPORT damoTargets NAMESPACE damo:: DESTINATION ${DAMO_CMAKE_DIR})
install(EXPORT damoStaticTargets NAMESPACE damo:: DESTINATION ${DAMO_CMAKE_DIR})
if(MPI_C_FOUND)
  set(DAMO_WITH_MPI TRUE)
else()
  set(DAMO_WITH_MPI FALSE)
endif()
configure_package_config_file(${CMAKE_CURRENT_SOURCE_DIR}/cmake/damoConfig.cmake.in
                              ${CMAKE_CURRENT_BINARY_DIR}/damoConfig.cmake INSTALL_DESTINATION ${DAMO_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/damoConfigVersion.cmake VERSION ${PROJECT_VERSION}
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/damoConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/damoConfigVersion.cmake
        DESTINATION ${DAMO_CMAKE_DIR})

# damo.pc. A program linking libdamo.so needs only -ldamo; a static link also needs what the
# archive calls: the libraries that have a .pc of their own go in Requires.private, the
# others (OpenMP's runtime, MPI, libm, and any of the first kind without a .pc) in
# Libs.private. The prefix is CMAKE_INSTALL_PREFIX at configure time (the Makefile's
# install configures with PREFIX).
foreach(dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${dir}}")
    set(DAMO_PC_${dir} "${CMAKE_INSTALL_${dir}}")
  else()
    set(DAMO_PC_${dir} "\${prefix}/${CMAKE_INSTALL_${dir}}")
  endif()
endforeach()
find_package(PkgConfig QUIET)
set(DAMO_PC_REQUIRES_PRIVATE "")
set(DAMO_PC_LIBS_PRIVATE "")
foreach(dep zlib:z libcjson:cjson libpcre2-8:pcre2-8 libutf8proc:utf8proc stb:stb)
  string(REPLACE ":" ";" dep "${dep}")
  list(GET dep 0 module)
  list(GET dep 1 lib)
  set(module_found 1)
  if(PKG_CONFIG_FOUND)
    execute_process(COMMAND ${PKG_CONFIG_EXECUTABLE} --exists ${module} RESULT_VARIABLE module_found)
  endif()
  if(module_found EQUAL 0)
    list(APPEND DAMO_PC_REQUIRES_PRIVATE ${module})
  else()
    list(APPEND DAMO_PC_LIBS_PRIVATE -l${lib})
  endif()
endforeach()
if(MPI_C_FOUND)
  # MPI's libraries by their paths: Debian's Open MPI keeps libmpi.so outside the linker's
  # folders, and a path stays right under a PKG_CONFIG_SYSROOT_DIR (which moves -L folders).
  list(APPEND DAMO_PC_LIBS_PRIVATE ${MPI_C_LIBRARIES})
endif()
if(OpenMP_C_LIB_NAMES)
  foreach(lib ${OpenMP_C_LIB_NAMES})
    list(APPEND DAMO_PC_LIBS_PRIVATE -l${lib})
  endforeach()
else()
  list(APPEND DAMO_PC_LIBS_PRIVATE ${OpenMP_C_FLAGS})
endif()
list(APPEND DAMO_PC_LIBS_PRIVATE -lm)
list(REMOVE_DUPLICATES DAMO_PC_LIBS_PRIVATE)
string(REPLACE ";" ", " DAMO_PC_REQUIRES_PRIVATE "${DAMO_PC_REQUIRES_PRIVATE}")
string(REPLACE ";" " " DAMO_PC_LIBS_PRIVATE "${DAMO_PC_LIBS_PRIVATE}")
configure_file(${CMAKE_CURRENT_SOURCE_DIR}/cmake/damo.pc.in ${CMAKE_CURRENT_BINARY_DIR}/damo.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/damo.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
