# Cross-compiles for 64-bit ARM Linux with Debian's GNU cross toolchain, and runs the test
# programs through QEMU's user-mode emulator:
#   apt-get install g++-aarch64-linux-gnu qemu-user
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
# scripts/test-arm64.sh does both and runs the kernel and golden tests.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# CTest and add_test prefix target programs with this command. -L points the emulator at
# the ARM64 dynamic loader and libraries that the cross toolchain installs.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/aarch64-linux-gnu)

# Libraries come only from the ARM64 tree. Headers and CMake package configs are searched
# there first and then on the build machine, because the header-only dependencies (Eigen,
# xsimd, stb, doctest, nlohmann-json) are installed once, for the build machine.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# Debian installs xsimd's package config under the build machine's multiarch folder
# (/usr/lib/x86_64-linux-gnu/cmake/xsimd), which find_package does not search when it
# targets aarch64-linux-gnu.
list(APPEND CMAKE_PREFIX_PATH /usr/lib/${CMAKE_HOST_SYSTEM_PROCESSOR}-linux-gnu/cmake)
