// Includes Eigen for the kernels with its own OpenMP threading off. Eigen sizes its GEMM
// cache blocks by its thread count, which changes the order of float sums. So the kernels
// split work into fixed tiles instead and run each tile's product on one thread.
#pragma once

// This also turns off Eigen's threading for code of the including program that uses Eigen.
#ifndef EIGEN_DONT_PARALLELIZE
#define EIGEN_DONT_PARALLELIZE
#endif
#include <Eigen/Core>

namespace blip::kernels::detail {

using RowMajorMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMatrixMap = Eigen::Map<const RowMajorMatrix, 0, Eigen::OuterStride<>>;
using MatrixMap = Eigen::Map<RowMajorMatrix, 0, Eigen::OuterStride<>>;

// Keeps Eigen's products single-threaded even when the program included Eigen with OpenMP
// before this header, so that the macro above came too late.
inline void keep_eigen_serial() {
#ifdef EIGEN_HAS_OPENMP
    static const bool done = [] {
        Eigen::setNbThreads(1);
        return true;
    }();
    (void)done;
#endif
}

}  // namespace blip::kernels::detail
