// Patch-wise top-n L1 score on the CPU.
//
// Algorithm (forward). Work items are (image, band of window rows), run with at::parallel_for
// (OpenMP). When stride divides patch (the usual 16/8), windows are sums of stride x stride
// block sums, made in one vectorised pass (forward_band_blocks). Otherwise a band walks its
// pixel rows once, top to bottom: for each row it forms the
// per-pixel error e[w] = sum_c |x - y| (unit-stride, vectorisable), a running row prefix sum
// (double) that gives every window's horizontal sum in O(1), and adds that row of window sums to
// a running vertical sum (double), subtracting the row that leaves the window from a ring
// buffer of the last `patch` rows. When a window row is complete its means are written out.
// No pixel is read twice except the (patch - stride) halo rows at band edges. Per-task scratch:
// O(W + patch * Wp) doubles. The top n of each image is a partial selection (insertion into n
// registers-like slots for n <= 16, nth_element beyond), ties to the lowest flat index.
//
// Algorithm (backward). Each window's incoming gradient (g_map + g_score/n if selected) / (C p²)
// is prefix-summed down the window columns once per image; a pixel's weight is then two
// differences of prefix sums (its covering window rows, then columns), so the spread costs O(1)
// per pixel, and a row of weights is recomputed only when its covering window rows change;
// grad_y = weight * sign(y - x).
//
// Memory traffic: forward reads x and y once (2·B·C·H·W elements) and writes B·Hp·Wp floats;
// backward reads x and y once and writes grad_y once.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "../patch_topn_l1.h"
#include "../poison.h"

namespace anomgan {
namespace {

template <typename scalar_t>
using acc_type_t = typename std::conditional<std::is_same<scalar_t, double>::value, double, float>::type;

// e[w] += sum over channels of |x - y| for one pixel row, w in [0, Wc).
template <typename scalar_t, typename acc_t>
inline void add_error_row(const scalar_t* __restrict__ xr, const scalar_t* __restrict__ yr,
                          int64_t C, int64_t xsc, int64_t ysc, int64_t Wc, acc_t* __restrict__ e) {
  for (int64_t c = 0; c < C; ++c) {
    const scalar_t* __restrict__ xc = xr + c * xsc;
    const scalar_t* __restrict__ yc = yr + c * ysc;
#pragma omp simd
    for (int64_t w = 0; w < Wc; ++w) e[w] += std::abs(acc_t(xc[w]) - acc_t(yc[w]));
  }
}

// Fast path when stride divides patch (q = patch / stride): every window is the sum of q x q
// stride x stride blocks. A block row is one pass over `stride` pixel rows accumulating column
// sums (unit-stride, vectorised), then one horizontal pass folding them into block sums; the
// last q block rows live in a ring, and a window row is q*q block sums per window.
template <typename scalar_t, typename acc_t>
void forward_band_blocks(const scalar_t* xb, const scalar_t* yb, const int64_t* xs,
                         const int64_t* ys, const PatchGeometry& g, int64_t i0, int64_t i1,
                         acc_t* map) {
  const int64_t s = g.stride, q = g.patch / g.stride, Wp = g.Wp;
  const int64_t K = Wp - 1 + q;  // block columns that some window covers
  const int64_t Wc = K * s;
  const double inv = 1.0 / double(g.C * g.patch * g.patch);
  std::vector<acc_t> col(Wc);
  std::vector<double> ring(q * K, 0.0);
  const int64_t r1 = i1 - 1 + q;  // block rows [i0, r1)
  for (int64_t r = i0; r < r1; ++r) {
    std::fill(col.begin(), col.end(), acc_t(0));
    for (int64_t t = 0; t < s; ++t) {
      const int64_t h = r * s + t;
      add_error_row(xb + h * xs[2], yb + h * ys[2], g.C, xs[1], ys[1], Wc, col.data());
    }
    double* slot = ring.data() + (r % q) * K;
    for (int64_t k = 0; k < K; ++k) {
      double a = 0.0;
      for (int64_t t = 0; t < s; ++t) a += double(col[k * s + t]);
      slot[k] = a;
    }
    const int64_t i = r - q + 1;  // the window row whose last block row is r
    if (i < i0) continue;
    acc_t* out = map + i * Wp;
    for (int64_t j = 0; j < Wp; ++j) {
      double sum = 0.0;
      for (int64_t a = 0; a < q; ++a) {
        const double* row = ring.data() + ((i + a) % q) * K + j;
        for (int64_t b = 0; b < q; ++b) sum += row[b];
      }
      out[j] = acc_t(sum * inv);
    }
  }
}

// Window means of window rows [i0, i1) of one image into map (Hp x Wp, row-major).
template <typename scalar_t, typename acc_t>
void forward_band(const scalar_t* xb, const scalar_t* yb, const int64_t* xs, const int64_t* ys,
                  const PatchGeometry& g, int64_t i0, int64_t i1, acc_t* map) {
  const int64_t p = g.patch, s = g.stride, Wp = g.Wp;
  const int64_t Wc = (Wp - 1) * s + p;  // columns that some window covers
  const double inv = 1.0 / double(g.C * p * p);
  std::vector<acc_t> e(Wc);
  std::vector<double> pre(Wc + 1, 0.0), ring(p * Wp, 0.0), vs(Wp, 0.0);
  const int64_t h0 = i0 * s, h1 = (i1 - 1) * s + p;
  for (int64_t h = h0; h < h1; ++h) {
    const int64_t r = h - h0;
    std::fill(e.begin(), e.end(), acc_t(0));
    add_error_row(xb + h * xs[2], yb + h * ys[2], g.C, xs[1], ys[1], Wc, e.data());
    double run = 0.0;
    for (int64_t w = 0; w < Wc; ++w) {
      run += double(e[w]);
      pre[w + 1] = run;
    }
    double* slot = ring.data() + (r % p) * Wp;
    if (r >= p)
      for (int64_t j = 0; j < Wp; ++j) vs[j] -= slot[j];
    for (int64_t j = 0; j < Wp; ++j) {
      const double rw = pre[j * s + p] - pre[j * s];
      slot[j] = rw;
      vs[j] += rw;
    }
    const int64_t top = h + 1 - p;  // first row of the window that ends at row h
    if (top >= h0 && top % s == 0) {
      acc_t* out = map + (top / s) * Wp;
      for (int64_t j = 0; j < Wp; ++j) out[j] = acc_t(vs[j] * inv);
    }
  }
}

// Mean of the n largest of m[0, len) and their flat indices, ties to the lower index.
// Any NaN makes the score NaN (indices then 0..n-1).
template <typename acc_t>
void select_topn(const acc_t* m, int64_t len, int64_t n, int64_t* idx, acc_t* score) {
  for (int64_t k = 0; k < len; ++k) {
    if (std::isnan(m[k])) {
      for (int64_t q = 0; q < n; ++q) idx[q] = q;
      *score = std::numeric_limits<acc_t>::quiet_NaN();
      return;
    }
  }
  if (n <= 16) {
    acc_t val[16];
    int64_t cnt = 0;
    for (int64_t k = 0; k < len; ++k) {
      const acc_t v = m[k];
      if (cnt == n && !(v > val[n - 1])) continue;
      int64_t q = cnt < n ? cnt++ : n - 1;
      while (q > 0 && v > val[q - 1]) {  // strict: an equal earlier value stays ahead
        val[q] = val[q - 1];
        idx[q] = idx[q - 1];
        --q;
      }
      val[q] = v;
      idx[q] = k;
    }
  } else {
    std::vector<int64_t> order(len);
    std::iota(order.begin(), order.end(), int64_t(0));
    auto before = [m](int64_t a, int64_t b) { return m[a] > m[b] || (m[a] == m[b] && a < b); };
    std::nth_element(order.begin(), order.begin() + (n - 1), order.end(), before);
    std::sort(order.begin(), order.begin() + n, before);
    std::copy(order.begin(), order.begin() + n, idx);
  }
  double sum = 0.0;
  for (int64_t q = 0; q < n; ++q) sum += double(m[idx[q]]);
  *score = acc_t(sum / double(n));
}

// gr[w] = wrow[w] * sign(y[w] - x[w]), sign(0) = sign(NaN) = 0.
template <typename scalar_t, typename acc_t>
inline void sign_scale_row(const scalar_t* __restrict__ xr, const scalar_t* __restrict__ yr,
                           const acc_t* __restrict__ wrow, int64_t W, scalar_t* __restrict__ gr) {
#pragma omp simd
  for (int64_t w = 0; w < W; ++w) {
    const acc_t d = acc_t(yr[w]) - acc_t(xr[w]);
    gr[w] = scalar_t(wrow[w] * acc_t((d > acc_t(0)) - (d < acc_t(0))));
  }
}

// Work items of a pass over B images of `rows` rows each: (image, band of rows), about 4 per
// thread, so that small batches of large images still fill the threads.
struct Bands {
  int64_t count, rows;  // bands per image, rows per band
};

Bands bands_of(int64_t B, int64_t rows) {
  const int64_t tasks_wanted = 4 * int64_t(at::get_num_threads());
  const int64_t count = std::max<int64_t>(1, std::min<int64_t>(rows, (tasks_wanted + B - 1) / B));
  return {count, (rows + count - 1) / count};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> patch_topn_l1_fwd_cpu(const at::Tensor& x,
                                                                     const at::Tensor& y,
                                                                     int64_t patch, int64_t stride,
                                                                     int64_t n) {
  const PatchGeometry g = check_patch_forward(x, y, patch, stride, n, c10::DeviceType::CPU);
  const PatchOutputs out = new_patch_outputs(g, x);
  if (g.B == 0) return out.as_tuple();
  const Bands bd = bands_of(g.B, g.Hp);  // of window rows
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "patch_topn_l1_fwd_cpu", [&] {
    using acc_t = acc_type_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* yp = y.const_data_ptr<scalar_t>();
    const int64_t xs[3] = {x.stride(0), x.stride(1), x.stride(2)};
    const int64_t ys[3] = {y.stride(0), y.stride(1), y.stride(2)};
    acc_t* mp = out.pmap.mutable_data_ptr<acc_t>();
    at::parallel_for(0, g.B * bd.count, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = t / bd.count, i0 = (t % bd.count) * bd.rows;
        const int64_t i1 = std::min(g.Hp, i0 + bd.rows);
        if (i0 >= i1) continue;
        if (g.patch % g.stride == 0)
          forward_band_blocks<scalar_t, acc_t>(xp + b * xs[0], yp + b * ys[0], xs, ys, g, i0, i1,
                                               mp + b * g.Hp * g.Wp);
        else
          forward_band<scalar_t, acc_t>(xp + b * xs[0], yp + b * ys[0], xs, ys, g, i0, i1,
                                        mp + b * g.Hp * g.Wp);
      }
    });
    acc_t* sp = out.scores.mutable_data_ptr<acc_t>();
    int64_t* ip = out.top_idx.mutable_data_ptr<int64_t>();
    at::parallel_for(0, g.B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        select_topn<acc_t>(mp + b * g.Hp * g.Wp, g.Hp * g.Wp, n, ip + b * n, sp + b);
    });
  });
  return out.as_tuple();
}

at::Tensor patch_topn_l1_bwd_cpu(const at::Tensor& g_scores_in, const at::Tensor& g_map_in,
                                 const at::Tensor& x, const at::Tensor& y,
                                 const at::Tensor& top_idx_in, int64_t patch, int64_t stride) {
  const PatchGeometry g = check_patch_backward(g_scores_in, g_map_in, x, y, top_idx_in, patch,
                                               stride, c10::DeviceType::CPU);
  at::Tensor grad_y = new_grad_like(y);
  if (g.B == 0) return grad_y;
  const at::Tensor g_scores = g_scores_in.contiguous(), g_map = g_map_in.contiguous();
  const at::Tensor top_idx = top_idx_in.contiguous();
  const int64_t p = g.patch, s = g.stride, Hp = g.Hp, Wp = g.Wp, n = g.n;
  TORCH_CHECK_VALUE(top_idx.numel() == 0 ||
                        (top_idx.min().item<int64_t>() >= 0 && top_idx.max().item<int64_t>() < Hp * Wp),
                    "patch_topn_l1_bwd: top_idx must hold window indices in [0, ", Hp * Wp, ")");
  // colpre[b][i][j] = sum_{i' < i} weight[b][i'][j]   ((Hp + 1) x Wp doubles per image)
  std::vector<double> colpre(size_t(g.B) * (Hp + 1) * Wp);
  const double inv = 1.0 / double(g.C * p * p);
  AT_DISPATCH_FLOATING_TYPES(g_map.scalar_type(), "patch_topn_l1_bwd_weights", [&] {
    const scalar_t* gm = g_map.const_data_ptr<scalar_t>();
    const scalar_t* gs = g_scores.const_data_ptr<scalar_t>();
    const int64_t* ti = top_idx.const_data_ptr<int64_t>();
    at::parallel_for(0, g.B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<double> wt(Hp * Wp);
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t k = 0; k < Hp * Wp; ++k) wt[k] = double(gm[b * Hp * Wp + k]);
        for (int64_t q = 0; q < n; ++q) wt[ti[b * n + q]] += double(gs[b]) / double(n);
        double* cp = colpre.data() + b * (Hp + 1) * Wp;
        for (int64_t j = 0; j < Wp; ++j) cp[j] = 0.0;
        for (int64_t i = 0; i < Hp; ++i)
          for (int64_t j = 0; j < Wp; ++j) cp[(i + 1) * Wp + j] = cp[i * Wp + j] + wt[i * Wp + j] * inv;
      }
    });
  });
  // covering windows of column w: [jlo[w], jhi[w]] (empty when jlo > jhi)
  std::vector<int64_t> jlo(g.W), jhi(g.W);
  for (int64_t w = 0; w < g.W; ++w) {
    jlo[w] = w < p ? 0 : (w - p + s) / s;
    jhi[w] = std::min(Wp - 1, w / s);
  }
  const Bands bd = bands_of(g.B, g.H);  // of pixel rows
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "patch_topn_l1_bwd_cpu", [&] {
    using acc_t = acc_type_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* yp = y.const_data_ptr<scalar_t>();
    scalar_t* gp = grad_y.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, g.B * bd.count, 1, [&](int64_t t0, int64_t t1) {
      std::vector<double> q(Wp + 1);
      std::vector<acc_t> wrow(g.W);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = t / bd.count, h0 = (t % bd.count) * bd.rows;
        const int64_t h1 = std::min(g.H, h0 + bd.rows);
        const double* cp = colpre.data() + b * (Hp + 1) * Wp;
        int64_t prev_lo = -1, prev_hi = -2;  // wrow is a function of (ilo, ihi) only
        for (int64_t h = h0; h < h1; ++h) {
          const int64_t ilo = h < p ? 0 : (h - p + s) / s, ihi = std::min(Hp - 1, h / s);
          if (ilo == prev_lo && ihi == prev_hi) {
            // same covering window rows as the previous pixel row: reuse wrow
          } else if (ilo > ihi) {
            std::fill(wrow.begin(), wrow.end(), acc_t(0));
          } else {
            q[0] = 0.0;
            for (int64_t j = 0; j < Wp; ++j) q[j + 1] = q[j] + (cp[(ihi + 1) * Wp + j] - cp[ilo * Wp + j]);
            for (int64_t w = 0; w < g.W; ++w)
              wrow[w] = jlo[w] <= jhi[w] ? acc_t(q[jhi[w] + 1] - q[jlo[w]]) : acc_t(0);
          }
          prev_lo = ilo;
          prev_hi = ihi;
          for (int64_t c = 0; c < g.C; ++c) {
            const scalar_t* xr = xp + b * x.stride(0) + c * x.stride(1) + h * x.stride(2);
            const scalar_t* yr = yp + b * y.stride(0) + c * y.stride(1) + h * y.stride(2);
            sign_scale_row(xr, yr, wrow.data(), g.W, gp + ((b * g.C + c) * g.H + h) * g.W);
          }
        }
      }
    });
  });
  return grad_y;
}

}  // namespace

TORCH_LIBRARY_IMPL(anomgan, CPU, m) {
  m.impl("patch_topn_l1_fwd", &patch_topn_l1_fwd_cpu);
  m.impl("patch_topn_l1_bwd", &patch_topn_l1_bwd_cpu);
}

}  // namespace anomgan
