// The whole diffusion of an LGD block (Eq. 2 and 3), one call per block and direction:
//
//   diffuse_(x, g, W^{x,g}, W^{g,x}, W^{g,g})      x = F(x_{l-1}), g = g_{l-1}
//     x <- ReLU(x + US(W^{x,g} g))                   (Eq. 2, in place)
//     returns g_l = ReLU(W^{g,x} P(x) + W^{g,g} g)   (Eq. 3)
//   diffuse_train_(...): the same, returning (g_l, P(x), and the three hidden vectors W2 v)
//   diffuse_backward(dL/dx_l, dL/dg_l, what diffuse_train_ kept, ..., needs) -> the gradients
//     of F(x_{l-1}), g and the six factors (an empty tensor where ``needs`` has no bit)
//
// Each W = W1 W2 is given as its two factors (reduce W2 (r, C_a), expand W1 (C_b, r)). The
// products are those the block makes one module at a time, in the same order: the thin-product
// kernel where a factor has at least ``min_weight_elements`` values and g at most ``max_rows``
// rows, BLAS (at::mm) otherwise; so the forward equals the block's, bit for bit. What the calls
// save is the Python between the products: on 2 cores, the first Python after a block's
// convolutions runs from a cache they have flushed.
// Registered with torch.library as lgdnet::diffuse_, lgdnet::diffuse_train_ and
// lgdnet::diffuse_backward.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "kernels.h"

namespace {

// One factor product of a projection: v w^T, and its two gradients, by the thin-product
// kernel or BLAS.
struct Factor {
  bool thin;
  at::Tensor forward(const at::Tensor& v, const at::Tensor& w) const {
    return thin ? lgdnet::thin_product(v, w) : at::mm(v, w.t());
  }
  at::Tensor input_grad(const at::Tensor& d, const at::Tensor& w) const {
    return thin ? lgdnet::thin_input_grad(d, w) : at::mm(d, w);
  }
  at::Tensor weight_grad(const at::Tensor& d, const at::Tensor& v) const {
    return thin ? lgdnet::thin_weight_grad(d, v) : at::mm(d.t(), v);
  }
};

Factor factor(int64_t rows, const at::Tensor& reduce, const at::Tensor& expand, int64_t max_rows,
              int64_t min_weight_elements) {
  return {rows <= max_rows && std::max(reduce.numel(), expand.numel()) >= min_weight_elements};
}

at::Tensor project(const at::Tensor& v, const at::Tensor& reduce, const at::Tensor& expand,
                   int64_t max_rows, int64_t min_weight_elements) {
  const at::Tensor x = v.contiguous();
  const Factor f = factor(x.size(0), reduce, expand, max_rows, min_weight_elements);
  return f.forward(f.forward(x, reduce.contiguous()), expand.contiguous());
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

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> diffuse_train_(
    at::Tensor x, const at::Tensor& g, const at::Tensor& reduce_xg, const at::Tensor& expand_xg,
    const at::Tensor& reduce_gx, const at::Tensor& expand_gx, const at::Tensor& reduce_gg,
    const at::Tensor& expand_gg, int64_t max_rows, int64_t min_weight_elements) {
  TORCH_CHECK(g.dim() == 2 && g.is_contiguous(), "lgdnet diffuse_train_: g must be a contiguous (N, C)");
  const int64_t n = g.size(0);
  const Factor xg = factor(n, reduce_xg, expand_xg, max_rows, min_weight_elements);
  const Factor gx = factor(n, reduce_gx, expand_gx, max_rows, min_weight_elements);
  const Factor gg = factor(n, reduce_gg, expand_gg, max_rows, min_weight_elements);
  at::Tensor hidden_xg = xg.forward(g, reduce_xg);
  const at::Tensor residual = xg.forward(hidden_xg, expand_xg);
  const double scale = static_cast<double>(residual.numel()) / static_cast<double>(x.numel());
  at::Tensor pooled = lgdnet::epilogue_forward(x, residual, scale);
  at::Tensor hidden_gx = gx.forward(pooled, reduce_gx);
  at::Tensor hidden_gg = gg.forward(g, reduce_gg);
  at::Tensor g_new = gx.forward(hidden_gx, expand_gx).add_(gg.forward(hidden_gg, expand_gg)).relu_();
  return {g_new, pooled, hidden_xg, hidden_gx, hidden_gg};
}

// Gradients in the order of the inputs of diffuse_train_: F(x_{l-1}), g, then the factors
// reduce_xg, expand_xg, reduce_gx, expand_gx, reduce_gg, expand_gg; bit i of ``needs`` asks for
// gradient i.
std::vector<at::Tensor> diffuse_backward(
    const c10::optional<at::Tensor>& grad_y_in, const c10::optional<at::Tensor>& grad_g_in,
    const at::Tensor& y, const at::Tensor& g, const at::Tensor& pooled, const at::Tensor& hidden_xg,
    const at::Tensor& hidden_gx, const at::Tensor& hidden_gg, const at::Tensor& g_new,
    const at::Tensor& reduce_xg, const at::Tensor& expand_xg, const at::Tensor& reduce_gx,
    const at::Tensor& expand_gx, const at::Tensor& reduce_gg, const at::Tensor& expand_gg,
    int64_t needs, int64_t max_rows, int64_t min_weight_elements) {
  auto need = [needs](int i) { return ((needs >> i) & 1) != 0; };
  const int64_t n = g.size(0);
  const Factor xg = factor(n, reduce_xg, expand_xg, max_rows, min_weight_elements);
  const Factor gx = factor(n, reduce_gx, expand_gx, max_rows, min_weight_elements);
  const Factor gg = factor(n, reduce_gg, expand_gg, max_rows, min_weight_elements);
  std::vector<at::Tensor> grads(8);
  // through Eq. (3)'s ReLU
  const at::Tensor d = grad_g_in.has_value() && grad_g_in->defined()
                           ? (*grad_g_in * g_new.gt(0)).contiguous()
                           : at::zeros_like(g_new);
  // W^{g,x} on P(x_l), then dL/dP
  if (need(5)) grads[5] = gx.weight_grad(d, hidden_gx);
  at::Tensor grad_hidden = gx.input_grad(d, expand_gx);
  if (need(4)) grads[4] = gx.weight_grad(grad_hidden, pooled);
  const at::Tensor grad_pooled = gx.input_grad(grad_hidden, reduce_gx);
  // the epilogue (Eq. 2 and P) in one pass: dL/dF(x) and dL/dr, r = W^{x,g} g
  at::Tensor grad_y;
  if (!grad_y_in.has_value() || !grad_y_in->defined()) {
    grad_y = at::zeros_like(y);
  } else if (grad_y_in->strides() != y.strides() || grad_y_in->scalar_type() != y.scalar_type()) {
    grad_y = at::empty_like(y).copy_(*grad_y_in);  // into y's layout
  } else {
    grad_y = *grad_y_in;
  }
  const at::Tensor scaled = grad_pooled / static_cast<double>(y.numel() / grad_pooled.numel());
  auto [grad_out, grad_residual] = lgdnet::epilogue_backward(grad_y, y, scaled);
  if (need(0)) grads[0] = grad_out;
  // W^{x,g} on g
  if (need(3)) grads[3] = xg.weight_grad(grad_residual, hidden_xg);
  grad_hidden = xg.input_grad(grad_residual, expand_xg);
  if (need(2)) grads[2] = xg.weight_grad(grad_hidden, g);
  at::Tensor grad_g;
  if (need(1)) grad_g = xg.input_grad(grad_hidden, reduce_xg);
  // W^{g,g} on g
  if (need(7)) grads[7] = gg.weight_grad(d, hidden_gg);
  if (need(6) || need(1)) {
    grad_hidden = gg.input_grad(d, expand_gg);
    if (need(6)) grads[6] = gg.weight_grad(grad_hidden, g);
    if (need(1)) grad_g.add_(gg.input_grad(grad_hidden, reduce_gg));
  }
  grads[1] = grad_g;
  for (auto& grad : grads)
    if (!grad.defined()) grad = at::empty({0}, y.options());
  return grads;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lgdnet, m) {
  m.def("diffuse_(Tensor(a!) x, Tensor g, Tensor reduce_xg, Tensor expand_xg, Tensor reduce_gx, "
        "Tensor expand_gx, Tensor reduce_gg, Tensor expand_gg, int max_rows, "
        "int min_weight_elements) -> Tensor");
  m.def("diffuse_train_(Tensor(a!) x, Tensor g, Tensor reduce_xg, Tensor expand_xg, "
        "Tensor reduce_gx, Tensor expand_gx, Tensor reduce_gg, Tensor expand_gg, int max_rows, "
        "int min_weight_elements) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("diffuse_backward(Tensor? grad_y, Tensor? grad_g, Tensor y, Tensor g, Tensor pooled, "
        "Tensor hidden_xg, Tensor hidden_gx, Tensor hidden_gg, Tensor g_new, Tensor reduce_xg, "
        "Tensor expand_xg, Tensor reduce_gx, Tensor expand_gx, Tensor reduce_gg, "
        "Tensor expand_gg, int needs, int max_rows, int min_weight_elements) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(lgdnet, CPU, m) {
  m.impl("diffuse_", &diffuse_);
  m.impl("diffuse_train_", &diffuse_train_);
  m.impl("diffuse_backward", &diffuse_backward);
}
