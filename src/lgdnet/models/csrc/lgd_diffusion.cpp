// The whole diffusion of an LGD block at inference (Eq. 2 and 3), one call per block:
//
//   diffuse_(x, g, W^{x,g}, W^{g,x}, W^{g,g})      x = F(x_{l-1}), g = g_{l-1}
//     x <- ReLU(x + US(W^{x,g} g))                   (Eq. 2, in place)
//     returns g_l = ReLU(W^{g,x} P(x) + W^{g,g} g)   (Eq. 3)
//
// Each W = W1 W2 is given as its two factors (reduce W2 (r, C_a), expand W1 (C_b, r)). The
// products are those the block makes one module at a time, in the same order: the thin-product
// kernel where a factor has at least ``min_weight_elements`` values and g at most ``max_rows``
// rows, BLAS (at::mm) otherwise; so the result equals the block's, bit for bit. What the call
// saves is the Python between the products: on 2 cores, the first Python after a block's
// convolutions runs from a cache they have flushed.
// Registered with torch.library as lgdnet::diffuse_.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>

#include "kernels.h"

namespace {

at::Tensor project(const at::Tensor& v, const at::Tensor& reduce, const at::Tensor& expand,
                   int64_t max_rows, int64_t min_weight_elements) {
  const at::Tensor x = v.contiguous();
  const bool thin = x.size(0) <= max_rows &&
                    std::max(reduce.numel(), expand.numel()) >= min_weight_elements;
  if (thin)
    return lgdnet::thin_product(lgdnet::thin_product(x, reduce.contiguous()), expand.contiguous());
  return at::mm(at::mm(x, reduce.t()), expand.t());
}

at::Tensor diffuse_(at::Tensor x, const at::Tensor& g, const at::Tensor& reduce_xg,
                    const at::Tensor& expand_xg, const at::Tensor& reduce_gx,
                    const at::Tensor& expand_gx, const at::Tensor& reduce_gg,
                    const at::Tensor& expand_gg, int64_t max_rows, int64_t min_weight_elements) {
  TORCH_CHECK(g.dim() == 2, "lgdnet diffuse_: g must be (N, C), got ", g.sizes());
  const at::Tensor residual = project(g, reduce_xg, expand_xg, max_rows, min_weight_elements);
  const double scale = static_cast<double>(residual.numel()) / static_cast<double>(x.numel());
  const at::Tensor pooled = lgdnet::epilogue_forward(x, residual, scale);
  at::Tensor local = project(pooled, reduce_gx, expand_gx, max_rows, min_weight_elements);
  const at::Tensor global = project(g, reduce_gg, expand_gg, max_rows, min_weight_elements);
  return local.add_(global).relu_();
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lgdnet, m) {
  m.def("diffuse_(Tensor(a!) x, Tensor g, Tensor reduce_xg, Tensor expand_xg, Tensor reduce_gx, "
        "Tensor expand_gx, Tensor reduce_gg, Tensor expand_gg, int max_rows, "
        "int min_weight_elements) -> Tensor");
}

TORCH_LIBRARY_IMPL(lgdnet, CPU, m) {
  m.impl("diffuse_", &diffuse_);
}
