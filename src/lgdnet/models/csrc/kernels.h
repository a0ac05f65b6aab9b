// The kernels one translation unit of the extension calls in another: the fused diffusion
// (lgd_diffusion.cpp) runs the epilogue (lgd_epilogue.cpp) and the thin products
// (thin_linear.cpp), forward and backward, without going back through the dispatcher.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace lgdnet {

// x <- ReLU(x + US(r)) in place; returns scale * its sum over positions (lgd_epilogue.cpp)
at::Tensor epilogue_forward(at::Tensor x, const at::Tensor& r, double scale);
// (g, sum over positions of g), g = (grad_y + US(s)) * [y > 0], grad_y in y's layout
std::tuple<at::Tensor, at::Tensor> epilogue_backward(const at::Tensor& grad_y, const at::Tensor& y,
                                                     const at::Tensor& s);
// x w^T for a few rows x (N, K) and a weight w (M, K) (thin_linear.cpp)
at::Tensor thin_product(const at::Tensor& x, const at::Tensor& w);
// d w for d (N, M), w (M, K): the gradient of x in x w^T
at::Tensor thin_input_grad(const at::Tensor& d, const at::Tensor& w);
// d^T x for d (N, M), x (N, K): the gradient of w in x w^T
at::Tensor thin_weight_grad(const at::Tensor& d, const at::Tensor& x);

}  // namespace lgdnet
