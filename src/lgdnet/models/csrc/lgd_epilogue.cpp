// The LGD block's epilogue in one pass over the map each way (Eq. 2 and the P of Eq. 3).
//
//   forward:  x <- ReLU(x + US(r)) in place, returns P(x) = scale * sum over positions
//   backward: g = (dL/dx + US(s)) * [x > 0], returns g and its sum over positions
//
// The map is read as (N, A, C, B), row-major: contiguous clips (N, C, T, H, W) are A = 1,
// B = T*H*W; contiguous frames (N*T, C, H, W) are A = T, B = H*W; any channels-last map is
// A = positions, B = 1. r and s are (N, C), contiguous. Sums run in float over short runs
// (32 lanes over up to 8192 values, or 256 rows) and are added up in double. With AVX2, the
// float backward writes maps of 16 MiB and more with non-temporal stores, the float loops
// over channels-last rows are written in 8-wide vectors (row_run8), the forward's in 16-wide
// ones with AVX-512 (row_run16), and those over contiguous planes in 8-wide vectors, frame by
// frame (planes8).
// Registered with torch.library as lgdnet::add_relu_pool_ and lgdnet::add_relu_pool_backward.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <vector>

#include "kernels.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

struct Shape {
  int64_t n, a, c, b;
};

bool channels_last(const at::Tensor& x) {
  return x.dim() == 5 ? x.is_contiguous(at::MemoryFormat::ChannelsLast3d)
                      : x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

Shape shape_of(const at::Tensor& x, const at::Tensor& r) {
  TORCH_CHECK(x.dim() == 4 || x.dim() == 5, "lgdnet epilogue: a 4-D or 5-D map, got ", x.dim(), "-D");
  TORCH_CHECK(r.dim() == 2 && r.is_contiguous(), "lgdnet epilogue: a contiguous (N, C) vector");
  TORCH_CHECK(x.scalar_type() == r.scalar_type(), "lgdnet epilogue: map and vector dtypes differ");
  const int64_t n = r.size(0), c = r.size(1);
  TORCH_CHECK(x.size(1) == c && n > 0 && x.size(0) % n == 0,
              "lgdnet epilogue: map ", x.sizes(), " does not match vector ", r.sizes());
  if (x.numel() == 0) return {n, 0, c, 0};
  if (channels_last(x)) {
    // a map with one position is both layouts; read it as channels-last
    return {n, x.numel() / (n * c), c, 1};
  }
  TORCH_CHECK(x.is_contiguous(), "lgdnet epilogue: the map must be contiguous or channels-last");
  return {n, x.size(0) / n, c, x.numel() / (x.size(0) * c)};
}

// Orders a thread's non-temporal stores (the backward's, on large maps) before the threads
// join; nothing to do without them.
inline void store_fence() {
#if defined(__AVX2__)
  _mm_sfence();
#endif
}

constexpr int64_t kLanes = 32;     // independent partial sums (vector registers)
constexpr int64_t kFoldRows = 256;  // channels-last rows summed in float before double
constexpr int64_t kFoldValues = 8192;  // contiguous values per (n, c) summed in float

// Channels-last: each (n, a) row holds C values. A thread takes a run of rows, sums each
// channel in float over up to kFoldRows rows (fewer for wide rows, so that a run stays in
// cache), folds into double, and adds its per-sample sums into the result under a lock (one
// flush per sample per thread).
// op(n, first, last, acc) handles rows [first, last) of sample n, adding them into acc[0..C).
template <typename T, typename Op>
void rows(const Shape& s, double* total, Op op) {
  std::mutex lock;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, s.c));
  const int64_t run = std::max<int64_t>(8, std::min<int64_t>(kFoldRows, 65536 / std::max<int64_t>(1, s.c)));
  at::parallel_for(0, s.n * s.a, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> partial(s.c);
    std::vector<double> acc(s.c);
    int64_t row = begin;
    while (row < end) {
      const int64_t n = row / s.a, stop = std::min(end, (n + 1) * s.a);
      std::fill(acc.begin(), acc.end(), 0.0);
      while (row < stop) {
        const int64_t fold = std::min(stop, row + run);
        std::fill(partial.begin(), partial.end(), T(0));
        op(n, row, fold, partial.data());
        row = fold;
        for (int64_t c = 0; c < s.c; ++c) acc[c] += partial[c];
      }
      std::lock_guard<std::mutex> guard(lock);
      for (int64_t c = 0; c < s.c; ++c) total[n * s.c + c] += acc[c];
    }
    store_fence();
  });
}

// Contiguous: each (n, c) owns A planes of B values; threads take (n, c) pairs.
// op(n, c, offset, lanes) handles the B values at ``offset``, adding value b into
// lanes[b % kLanes]. The lanes run on over the A planes and are folded into double every
// kFoldValues values, so short planes (7x7 maps) pay for one fold per (n, c), not per plane.
template <typename T, typename Op>
void planes(const Shape& s, double* total, Op op) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, s.a * s.b));
  at::parallel_for(0, s.n * s.c, grain, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / s.c, c = nc % s.c;
      double acc = 0.0;
      T lanes[kLanes] = {};
      int64_t pending = 0;
      for (int64_t a = 0; a < s.a; ++a) {
        op(n, c, ((n * s.a + a) * s.c + c) * s.b, lanes);
        pending += s.b;
        if (pending >= kFoldValues || a + 1 == s.a) {
          for (int64_t j = 0; j < kLanes; ++j) {
            acc += lanes[j];
            lanes[j] = T(0);
          }
          pending = 0;
        }
      }
      total[nc] = acc;
    }
    store_fence();
  });
}

// Rows [first, last) of C values each, row i at i * C: f(index, v[c]) makes the element's new
// value (and stores what it must), which is added into acc[c].
template <typename T, typename F>
inline void row_run(int64_t c_total, int64_t first, int64_t last, const T* __restrict v,
                    T* __restrict acc, F f) {
  for (int64_t row = first; row < last; ++row) {
    const int64_t base = row * c_total;
    for (int64_t c = 0; c < c_total; ++c) acc[c] += f(base + c, v[c]);
  }
}

template <typename T>
inline T relu(T v) {
  return v < T(0) ? T(0) : v;  // a select, so loops vectorise; NaN passes, as in torch
}

#if defined(__AVX2__)
// Rows [first, last) of C floats (C a multiple of 8, row i at i * C), in explicit 8-wide
// vectors, one row at a time: on LGD-2D's res2 maps the forward takes 0.41-0.47 of the
// generic row_run's time (benchmarks/epilogue_ab_results.md); blocking four rows per sweep
// was as slow as row_run. f(offset, v8) makes the 8 elements' new values at
// ``offset`` (and stores what it must); the sums are added in row_run's order.
template <typename F>
inline void row_run8(int64_t c_total, int64_t first, int64_t last, const float* __restrict v,
                     float* __restrict acc, F f) {
  for (int64_t row = first; row < last; ++row) {
    const int64_t base = row * c_total;
    for (int64_t c = 0; c < c_total; c += 8)
      _mm256_storeu_ps(acc + c, _mm256_add_ps(_mm256_loadu_ps(acc + c), f(base + c, _mm256_loadu_ps(v + c))));
  }
}

// ReLU(x + v) of 8 floats, stored back: max(0, y) keeps a NaN, as relu() above does
inline __m256 add_relu8(float* __restrict x, __m256 v) {
  const __m256 y = _mm256_max_ps(_mm256_setzero_ps(), _mm256_add_ps(_mm256_loadu_ps(x), v));
  _mm256_storeu_ps(x, y);
  return y;
}

// Contiguous float maps in 8-wide vectors. A thread takes items of (n, a block of channels)
// and runs through an item frame by frame, each frame's planes in memory order. (Running
// through one (n, c)'s A planes in turn, whose starts lie C*B*4 bytes apart, a multiple of
// 4 KiB on ResNet maps, let the stores to one plane stall the loads from the next, 4K
// aliasing: on LGD-2D's 56x56 frames that took twice the ReLU's time.) A plane's values are
// summed in four vector registers (32 lanes) over runs of up to kFoldValues, then in double.
// op(n, c, offset, count, acc) handles ``count`` values at ``offset``.
inline __m256i tail_mask8(int64_t count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

inline double sum_in_double(const __m256* acc) {
  const __m256 a = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
  const __m256d s = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a)),
                                  _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
  const __m128d t = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
  return _mm_cvtsd_f64(_mm_add_sd(t, _mm_unpackhi_pd(t, t)));
}

template <typename Op>
void planes8(const Shape& s, double* total, Op op) {
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(s.c, 65536 / s.b));
  const int64_t blocks = (s.c + block - 1) / block;
  const int64_t grain = std::max<int64_t>(1, 32768 / (s.a * block * s.b));
  at::parallel_for(0, s.n * blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / blocks, c0 = (item % blocks) * block;
      const int64_t c1 = std::min(s.c, c0 + block);
      for (int64_t a = 0; a < s.a; ++a) {
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t offset = ((n * s.a + a) * s.c + c) * s.b;
          for (int64_t b = 0; b < s.b; b += kFoldValues) {
            __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                             _mm256_setzero_ps()};
            op(n, c, offset + b, std::min(kFoldValues, s.b - b), acc);
            total[n * s.c + c] += sum_in_double(acc);
          }
        }
      }
    }
    store_fence();
  });
}

// ReLU(p + v) over a run of B floats, in place; the values added into acc
inline void add_relu_plane8(int64_t b_total, float* __restrict p, float v, __m256* acc) {
  const __m256 vv = _mm256_set1_ps(v);
  int64_t b = 0;
  for (; b + 32 <= b_total; b += 32)
    for (int k = 0; k < 4; ++k) acc[k] = _mm256_add_ps(acc[k], add_relu8(p + b + 8 * k, vv));
  for (; b + 8 <= b_total; b += 8) acc[0] = _mm256_add_ps(acc[0], add_relu8(p + b, vv));
  if (b < b_total) {
    const __m256i m = tail_mask8(b_total - b);
    const __m256 y = _mm256_max_ps(_mm256_setzero_ps(), _mm256_add_ps(_mm256_maskload_ps(p + b, m), vv));
    _mm256_maskstore_ps(p + b, m, y);
    acc[1] = _mm256_add_ps(acc[1], _mm256_and_ps(y, _mm256_castsi256_ps(m)));
  }
}

#endif

#if defined(__AVX512F__)
// Rows [first, last) of C floats (C a multiple of 16, row i at i * C), in 16-wide vectors,
// a chunk of up to kChunk vectors (256 channels) at a time: the chunk's sums stay in
// registers while it runs down the rows, so an element costs one load and one store, as the
// ReLU's does; row_run8 loads and stores the sums for every row. The rows of a call (one
// fold of rows()) stay in L2 between the chunks. The sums are added in row order, as
// row_run8 adds them. Side by side on LGD-2D's maps in cache (benchmarks/
// epilogue_ab_results.md) it takes 0.5-0.98 of row_run8's time, but 1.15-1.9 on some
// 512-channel maps, depending on where the map lies in memory.
constexpr int kChunk = 16;
template <int V, typename F>
inline void chunk_run16(int64_t c_total, int64_t c0, int64_t first, int64_t last,
                        const float* __restrict v, float* __restrict acc, F f) {
  __m512 sum[V];
  for (int j = 0; j < V; ++j) sum[j] = _mm512_loadu_ps(acc + c0 + 16 * j);
  for (int64_t row = first; row < last; ++row) {
    const int64_t base = row * c_total + c0;
#pragma GCC unroll 16
    for (int j = 0; j < V; ++j)
      sum[j] = _mm512_add_ps(sum[j], f(base + 16 * j, _mm512_loadu_ps(v + c0 + 16 * j)));
  }
  for (int j = 0; j < V; ++j) _mm512_storeu_ps(acc + c0 + 16 * j, sum[j]);
}
template <typename F>
inline void row_run16(int64_t c_total, int64_t first, int64_t last, const float* __restrict v,
                      float* __restrict acc, F f) {
  int64_t c0 = 0;
  for (; c0 + 16 * kChunk <= c_total; c0 += 16 * kChunk)
    chunk_run16<kChunk>(c_total, c0, first, last, v, acc, f);
  for (; c0 < c_total; c0 += 16) chunk_run16<1>(c_total, c0, first, last, v, acc, f);
}
// ReLU(x + v) of 16 floats, stored back; max(0, y) keeps a NaN
inline __m512 add_relu16(float* __restrict x, __m512 v) {
  const __m512 y = _mm512_max_ps(_mm512_setzero_ps(), _mm512_add_ps(_mm512_loadu_ps(x), v));
  _mm512_storeu_ps(x, y);
  return y;
}
#endif

template <typename T>
void forward_kernel(const Shape& s, T* __restrict data, const T* __restrict vec, double* sum) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    if (s.b == 1 && s.c % 16 == 0) {
      rows<T>(s, sum, [&](int64_t n, int64_t first, int64_t last, T* __restrict acc) {
        row_run16(s.c, first, last, vec + n * s.c, acc,
                  [data](int64_t i, __m512 v) { return add_relu16(data + i, v); });
      });
      return;
    }
  }
#endif
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    if (s.b == 1 && s.c % 8 == 0) {
      rows<T>(s, sum, [&](int64_t n, int64_t first, int64_t last, T* __restrict acc) {
        row_run8(s.c, first, last, vec + n * s.c, acc,
                 [data](int64_t i, __m256 v) { return add_relu8(data + i, v); });
      });
      return;
    }
  }
#endif
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    if (s.b > 1) {
      planes8(s, sum, [&](int64_t n, int64_t c, int64_t offset, int64_t count, __m256* acc) {
        add_relu_plane8(count, data + offset, vec[n * s.c + c], acc);
      });
      return;
    }
  }
#endif
  if (s.b == 1) {
    rows<T>(s, sum, [&](int64_t n, int64_t first, int64_t last, T* __restrict acc) {
      row_run<T>(s.c, first, last, vec + n * s.c, acc, [data](int64_t i, T v) {
        const T y = relu(data[i] + v);
        data[i] = y;
        return y;
      });
    });
    return;
  }
  planes<T>(s, sum, [&](int64_t n, int64_t c, int64_t offset, T* __restrict lanes) {
    T* __restrict p = data + offset;
    const T v = vec[n * s.c + c];
    int64_t b = 0;
    for (; b + kLanes <= s.b; b += kLanes) {
      for (int64_t j = 0; j < kLanes; ++j) {
        const T y = relu(p[b + j] + v);
        p[b + j] = y;
        lanes[j] += y;
      }
    }
    for (int64_t j = 0; b < s.b; ++b, ++j) {
      const T y = relu(p[b] + v);
      p[b] = y;
      lanes[j] += y;
    }
  });
}

template <typename T>
inline T masked(T out, T grad) {
  return out > T(0) ? grad : T(0);
}

#if defined(__AVX2__)
// The backward writes a fresh gradient map. Where the map is larger than the caches it is
// written with non-temporal stores, which skip reading each line before writing it: on
// maps of 18-49 MiB the pass then takes 0.71-0.82x the time of the ReLU backward it replaces
// (benchmarks/epilogue_passes_results.md; 1.2-1.5x with ordinary stores).
constexpr int64_t kStreamBytes = int64_t(16) << 20;
// contiguous maps: planes of at least this many values (on 14x14 planes, whose runs end mid
// cache line, streaming takes twice the time of ordinary stores)
constexpr int64_t kStreamRun = 512;

inline __m256 masked8(const float* o, const float* d, __m256 v) {
  const __m256 positive = _mm256_cmp_ps(_mm256_loadu_ps(o), _mm256_setzero_ps(), _CMP_GT_OQ);
  return _mm256_and_ps(positive, _mm256_add_ps(_mm256_loadu_ps(d), v));
}

// rows [first, last) of C values (C a multiple of 8); ``stream``: non-temporal stores (rows
// 32-byte aligned in g)
template <bool stream>
void masked_rows(int64_t c_total, int64_t first, int64_t last, const float* __restrict gy,
                 const float* __restrict out, const float* __restrict v, float* __restrict g,
                 float* __restrict acc) {
  row_run8(c_total, first, last, v, acc, [=](int64_t i, __m256 vc) {
    const __m256 value = masked8(out + i, gy + i, vc);
    if constexpr (stream) {
      _mm256_stream_ps(g + i, value);
    } else {
      _mm256_storeu_ps(g + i, value);
    }
    return value;
  });
}

// masked8 of the first ``count`` (< 8) values at o, d, stored to r; the others are 0
inline __m256 masked_part8(int64_t count, const float* o, const float* d, __m256 v, float* r) {
  const __m256i m = tail_mask8(count);
  const __m256 positive = _mm256_cmp_ps(_mm256_maskload_ps(o, m), _mm256_setzero_ps(), _CMP_GT_OQ);
  const __m256 value = _mm256_and_ps(positive, _mm256_add_ps(_mm256_maskload_ps(d, m), v));
  _mm256_maskstore_ps(r, m, value);
  return value;
}

// One plane of B values of one channel, the values added into acc; ``stream``: non-temporal
// stores once r is 32-byte aligned (the values before that in one masked part).
template <bool stream>
void masked_plane8(int64_t b_total, const float* __restrict d, const float* __restrict o, float v,
                   float* __restrict r, __m256* acc) {
  const __m256 vv = _mm256_set1_ps(v);
  int64_t b = 0;
  if constexpr (stream) {
    const int64_t misaligned = (reinterpret_cast<std::uintptr_t>(r) & 31) / sizeof(float);
    if (misaligned != 0) {
      b = std::min<int64_t>(b_total, 8 - misaligned);
      acc[2] = _mm256_add_ps(acc[2], masked_part8(b, o, d, vv, r));
    }
  }
  for (; b + 32 <= b_total; b += 32) {
    for (int k = 0; k < 4; ++k) {
      const __m256 value = masked8(o + b + 8 * k, d + b + 8 * k, vv);
      if constexpr (stream) {
        _mm256_stream_ps(r + b + 8 * k, value);
      } else {
        _mm256_storeu_ps(r + b + 8 * k, value);
      }
      acc[k] = _mm256_add_ps(acc[k], value);
    }
  }
  for (; b + 8 <= b_total; b += 8) {
    const __m256 value = masked8(o + b, d + b, vv);
    if constexpr (stream) {
      _mm256_stream_ps(r + b, value);
    } else {
      _mm256_storeu_ps(r + b, value);
    }
    acc[0] = _mm256_add_ps(acc[0], value);
  }
  if (b < b_total) acc[1] = _mm256_add_ps(acc[1], masked_part8(b_total - b, o + b, d + b, vv, r + b));
}
#endif

template <typename T>
void backward_kernel(const Shape& s, const T* __restrict gy, const T* __restrict out,
                     const T* __restrict vec, T* __restrict g, double* sum) {
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    const bool large = s.n * s.a * s.c * s.b * int64_t(sizeof(float)) >= kStreamBytes;
    if (s.b == 1 && s.c % 8 == 0) {
      const bool stream = large && reinterpret_cast<std::uintptr_t>(g) % 32 == 0;
      rows<T>(s, sum, [&](int64_t n, int64_t first, int64_t last, T* __restrict acc) {
        if (stream) {
          masked_rows<true>(s.c, first, last, gy, out, vec + n * s.c, g, acc);
        } else {
          masked_rows<false>(s.c, first, last, gy, out, vec + n * s.c, g, acc);
        }
      });
      return;
    }
    if (s.b > 1) {
      const bool stream = large && s.b >= kStreamRun;
      planes8(s, sum, [&](int64_t n, int64_t c, int64_t offset, int64_t count, __m256* acc) {
        if (stream) {
          masked_plane8<true>(count, gy + offset, out + offset, vec[n * s.c + c], g + offset, acc);
        } else {
          masked_plane8<false>(count, gy + offset, out + offset, vec[n * s.c + c], g + offset, acc);
        }
      });
      return;
    }
  }
#endif
  if (s.b == 1) {
    rows<T>(s, sum, [&](int64_t n, int64_t first, int64_t last, T* __restrict acc) {
      row_run<T>(s.c, first, last, vec + n * s.c, acc, [out, gy, g](int64_t i, T v) {
        const T value = masked(out[i], gy[i] + v);
        g[i] = value;
        return value;
      });
    });
    return;
  }
  planes<T>(s, sum, [&](int64_t n, int64_t c, int64_t offset, T* __restrict lanes) {
    const T v = vec[n * s.c + c];
    const T* __restrict o = out + offset;
    const T* __restrict d = gy + offset;
    T* __restrict r = g + offset;
    int64_t b = 0;
    for (; b + kLanes <= s.b; b += kLanes) {
      for (int64_t j = 0; j < kLanes; ++j) {
        const T value = masked(o[b + j], d[b + j] + v);
        r[b + j] = value;
        lanes[j] += value;
      }
    }
    for (int64_t j = 0; b < s.b; ++b, ++j) {
      const T value = masked(o[b], d[b] + v);
      r[b] = value;
      lanes[j] += value;
    }
  });
}

// The (N, C) sums, scaled, in the dtype of ``like``.
template <typename T>
void write_sums(const std::vector<double>& total, double scale, T* out) {
  for (size_t i = 0; i < total.size(); ++i) out[i] = static_cast<T>(total[i] * scale);
}

at::Tensor add_relu_pool_(at::Tensor x, const at::Tensor& r, double scale) {
  const Shape s = shape_of(x, r);
  std::vector<double> total(s.n * s.c, 0.0);
  at::Tensor pooled = at::empty({s.n, s.c}, r.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lgdnet_add_relu_pool_", [&] {
    if (x.numel() > 0)
      forward_kernel<scalar_t>(s, x.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), total.data());
    write_sums(total, scale, pooled.data_ptr<scalar_t>());
  });
  return pooled;
}

std::tuple<at::Tensor, at::Tensor> add_relu_pool_backward(const at::Tensor& grad_y, const at::Tensor& y,
                                                          const at::Tensor& grad_pooled) {
  const Shape s = shape_of(y, grad_pooled);
  TORCH_CHECK(grad_y.sizes() == y.sizes() && grad_y.strides() == y.strides() &&
                  grad_y.scalar_type() == y.scalar_type(),
              "lgdnet epilogue: the gradient must have the map's shape, layout and dtype");
  at::Tensor grad = at::empty_like(y);
  std::vector<double> total(s.n * s.c, 0.0);
  at::Tensor grad_residual = at::empty({s.n, s.c}, y.options());
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "lgdnet_add_relu_pool_backward", [&] {
    if (y.numel() > 0)
      backward_kernel<scalar_t>(s, grad_y.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                                grad_pooled.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
                                total.data());
    write_sums(total, 1.0, grad_residual.data_ptr<scalar_t>());
  });
  return {grad, grad_residual};
}

}  // namespace

at::Tensor lgdnet::epilogue_forward(at::Tensor x, const at::Tensor& r, double scale) {
  return add_relu_pool_(x, r, scale);
}

std::tuple<at::Tensor, at::Tensor> lgdnet::epilogue_backward(const at::Tensor& grad_y, const at::Tensor& y,
                                                             const at::Tensor& s) {
  return add_relu_pool_backward(grad_y, y, s);
}

TORCH_LIBRARY(lgdnet, m) {
  m.def("add_relu_pool_(Tensor(a!) x, Tensor r, float scale) -> Tensor");
  m.def("add_relu_pool_backward(Tensor grad_y, Tensor y, Tensor grad_pooled) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(lgdnet, CPU, m) {
  m.impl("add_relu_pool_", &add_relu_pool_);
  m.impl("add_relu_pool_backward", &add_relu_pool_backward);
}
