// The kernels one translation unit of the extension calls in another: the fused diffusion
// (lgd_diffusion.cpp) runs the epilogue (lgd_epilogue.cpp) and the thin products
// (thin_linear.cpp) without going back through the dispatcher.
#pragma once

#include <ATen/ATen.h>

namespace lgdnet {

// x <- ReLU(x + US(r)) in place; returns scale * its sum over positions (lgd_epilogue.cpp)
at::Tensor epilogue_forward(at::Tensor x, const at::Tensor& r, double scale);
// x w^T for a few rows x (N, K) and a weight w (M, K) (thin_linear.cpp)
at::Tensor thin_product(const at::Tensor& x, const at::Tensor& w);

}  // namespace lgdnet
