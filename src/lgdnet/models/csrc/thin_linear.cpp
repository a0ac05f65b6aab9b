// Products of a few vectors with a weight matrix: the LGD block's low-rank projections
// (Sec. 3.1, W = W1 W2) act on the global vectors g, (N, C) with N the clips of a batch.
//
//   thin_linear(x, w)              x (N, K), w (M, K) -> x w^T   (N, M)   forward
//   thin_linear_input_grad(d, w)   d (N, M), w (M, K) -> d w     (N, K)   dL/dx
//   thin_linear_weight_grad(d, x)  d (N, M), x (N, K) -> d^T x   (M, K)   dL/dw
//
// Each reads (or writes) w once, row by row, and keeps the N vectors in cache: for N of a few
// rows a general matrix product (BLAS) spends most of its time packing w instead. Every output
// element is summed by one thread in a fixed order, so results do not depend on the thread
// count. Registered with torch.library next to the epilogue (lgd_epilogue.cpp).

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "kernels.h"

namespace {

constexpr int64_t kLanes = 16;      // independent partial sums of a dot product
constexpr int64_t kWork = 16384;    // weight elements a thread takes at least
constexpr int64_t kColumns = 256;   // columns of dL/dx a thread accumulates at once

void check(const at::Tensor& a, const at::Tensor& b, const char* what) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2, "lgdnet ", what, ": 2-D tensors, got ", a.dim(),
              "-D and ", b.dim(), "-D");
  TORCH_CHECK(a.is_contiguous() && b.is_contiguous(), "lgdnet ", what, ": contiguous tensors");
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "lgdnet ", what, ": dtypes differ");
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu(), "lgdnet ", what, ": CPU tensors");
}

template <typename T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t k) {
  T lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= k; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) lanes[j] += a[i + j] * b[i + j];
  for (int64_t j = 0; i < k; ++i, ++j) lanes[j] += a[i] * b[i];
  T total = T(0);
  for (int64_t j = 0; j < kLanes; ++j) total += lanes[j];
  return total;
}

at::Tensor thin_linear(const at::Tensor& x, const at::Tensor& w) {
  check(x, w, "thin_linear");
  TORCH_CHECK(x.size(1) == w.size(1), "lgdnet thin_linear: x ", x.sizes(), " and w ", w.sizes());
  const int64_t n = x.size(0), k = x.size(1), m = w.size(0);
  at::Tensor y = at::empty({n, m}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lgdnet_thin_linear", [&] {
    const scalar_t* X = x.data_ptr<scalar_t>();
    const scalar_t* W = w.data_ptr<scalar_t>();
    scalar_t* Y = y.data_ptr<scalar_t>();
    at::parallel_for(0, m, std::max<int64_t>(1, kWork / std::max<int64_t>(1, k)),
                     [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row)
        for (int64_t i = 0; i < n; ++i) Y[i * m + row] = dot(W + row * k, X + i * k, k);
    });
  });
  return y;
}

// dL/dx = d w. Wide rows (k >= 2 * kColumns): threads take blocks of columns and run down all
// m rows. Narrow rows (the expanding factor, k = rank): threads take fixed blocks of rows,
// each summed into its own (n, k) partial, and the partials are added in block order, so the
// result is the same for any thread count.
at::Tensor thin_linear_input_grad(const at::Tensor& d, const at::Tensor& w) {
  check(d, w, "thin_linear_input_grad");
  TORCH_CHECK(d.size(1) == w.size(0), "lgdnet thin_linear_input_grad: d ", d.sizes(), " and w ",
              w.sizes());
  const int64_t n = d.size(0), m = w.size(0), k = w.size(1);
  at::Tensor out = at::zeros({n, k}, d.options());
  AT_DISPATCH_FLOATING_TYPES(d.scalar_type(), "lgdnet_thin_linear_input_grad", [&] {
    const scalar_t* D = d.data_ptr<scalar_t>();
    const scalar_t* W = w.data_ptr<scalar_t>();
    scalar_t* O = out.data_ptr<scalar_t>();
    // rows [first, last) of w, columns [col, col + width), added into dst (n rows of stride k)
    auto accumulate = [&](int64_t first, int64_t last, int64_t col, int64_t width, scalar_t* dst) {
      for (int64_t row = first; row < last; ++row) {
        const scalar_t* __restrict wr = W + row * k + col;
        for (int64_t i = 0; i < n; ++i) {
          const scalar_t a = D[i * m + row];
          scalar_t* __restrict o = dst + i * k + col;
          for (int64_t j = 0; j < width; ++j) o[j] += a * wr[j];
        }
      }
    };
    if (k >= 2 * kColumns) {
      const int64_t blocks = (k + kColumns - 1) / kColumns;
      at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t block = begin; block < end; ++block) {
          const int64_t col = block * kColumns;
          accumulate(0, m, col, std::min(kColumns, k - col), O);
        }
      });
      return;
    }
    const int64_t rows = std::max<int64_t>(1, kWork / std::max<int64_t>(1, k));
    const int64_t blocks = (m + rows - 1) / rows;
    std::vector<scalar_t> partial(blocks * n * k, scalar_t(0));
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t block = begin; block < end; ++block)
        accumulate(block * rows, std::min(m, (block + 1) * rows), 0, k, partial.data() + block * n * k);
    });
    for (int64_t block = 0; block < blocks; ++block) {
      const scalar_t* __restrict src = partial.data() + block * n * k;
      for (int64_t j = 0; j < n * k; ++j) O[j] += src[j];
    }
  });
  return out;
}

at::Tensor thin_linear_weight_grad(const at::Tensor& d, const at::Tensor& x) {
  check(d, x, "thin_linear_weight_grad");
  TORCH_CHECK(d.size(0) == x.size(0), "lgdnet thin_linear_weight_grad: d ", d.sizes(), " and x ",
              x.sizes());
  const int64_t n = d.size(0), m = d.size(1), k = x.size(1);
  at::Tensor out = at::empty({m, k}, d.options());
  AT_DISPATCH_FLOATING_TYPES(d.scalar_type(), "lgdnet_thin_linear_weight_grad", [&] {
    const scalar_t* D = d.data_ptr<scalar_t>();
    const scalar_t* X = x.data_ptr<scalar_t>();
    scalar_t* O = out.data_ptr<scalar_t>();
    at::parallel_for(0, m, std::max<int64_t>(1, kWork / std::max<int64_t>(1, k)),
                     [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        scalar_t* __restrict o = O + row * k;
        std::fill(o, o + k, scalar_t(0));
        for (int64_t i = 0; i < n; ++i) {
          const scalar_t a = D[i * m + row];
          const scalar_t* __restrict xr = X + i * k;
          for (int64_t j = 0; j < k; ++j) o[j] += a * xr[j];
        }
      }
    });
  });
  return out;
}

}  // namespace

at::Tensor lgdnet::thin_product(const at::Tensor& x, const at::Tensor& w) {
  return thin_linear(x, w);
}

at::Tensor lgdnet::thin_input_grad(const at::Tensor& d, const at::Tensor& w) {
  return thin_linear_input_grad(d, w);
}

at::Tensor lgdnet::thin_weight_grad(const at::Tensor& d, const at::Tensor& x) {
  return thin_linear_weight_grad(d, x);
}

TORCH_LIBRARY_FRAGMENT(lgdnet, m) {
  m.def("thin_linear(Tensor x, Tensor w) -> Tensor");
  m.def("thin_linear_input_grad(Tensor d, Tensor w) -> Tensor");
  m.def("thin_linear_weight_grad(Tensor d, Tensor x) -> Tensor");
}

TORCH_LIBRARY_IMPL(lgdnet, CPU, m) {
  m.impl("thin_linear", &thin_linear);
  m.impl("thin_linear_input_grad", &thin_linear_input_grad);
  m.impl("thin_linear_weight_grad", &thin_linear_weight_grad);
}
