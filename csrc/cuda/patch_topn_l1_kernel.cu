// Patch-wise top-n L1 score on CUDA (plain CUDA: no torch headers; launchers declared in
// patch_topn_l1_kernel.cuh, torch glue in patch_topn_l1_cuda.cpp). Semantic model: the CPU
// kernel csrc/cpu/patch_topn_l1_cpu.cpp. Accumulation in float (double for double inputs).
//
// Forward, three launches over the whole batch (one launch covers all B images):
//  1a Block path (stride s divides patch p, k = p/s <= 8, s <= 256): each CTA takes one row of
//     s x s blocks of one image (a tile of <= 2048 columns), streams its s pixel rows of every
//     channel of x and y with 16-byte vector loads (when pointers/strides allow; else scalar),
//     keeps per-column sums of sum_c |x - y| in registers, and writes block sums
//     (B, Hb, Wb) = (B, Hp-1+k, Wp-1+k). 2a: window sum = sum of its k x k block sums.
//  1b General path (any s, p): each CTA takes one pixel row h and a tile of 256 windows; it
//     stages sum_c |x - y| of the row's span in shared memory (chunks of 8 KB; columns in gaps
//     between windows when s > p are skipped) and each thread sums its window's p columns:
//     row sums (B, Hc, Wp). 2b: window sum = sum of p row sums down the column.
//  3  Selection, one CTA per image: every thread keeps its 8 best (value desc, index asc)
//     windows in registers; n rounds of a block arg-max over the thread heads pick the top n
//     in order (a thread whose list runs dry rescans below the last pick, so any n works).
//     Ties go to the lowest flat index; any NaN window gives score NaN and indices 0..n-1.
//     Window indices are 32-bit here: Hp * Wp must be < 2^31 (the wrapper checks).
// Backward, three launches: window weights summed over the covering windows of g_map
// ((B, Hb, Wb) on the block path, (B, Hc, Wp) column sums on the general path); g_scores/n
// added (atomically) under the n selected windows; then grad_y = sign(y - x) * weight /
// (C p^2) elementwise, vectorised like 1a, the weight computed once per pixel for all C.
//
// Memory traffic (elements of the covered Hc x Wc region; Hc = (Hp-1)s+p, Wc = (Wp-1)s+p):
//  forward reads x and y once (2 B C Hc Wc, the general path adds a (p-s) column halo per
//  256 windows), writes + rereads B Hc Wc / s^2 (block) or B Hc Wp (general) floats of
//  scratch, writes B Hp Wp floats of map and rereads it (L2) for the selection.
//  backward reads x and y once, writes grad_y once (B C H W), plus the small weight scratch.
#include "patch_topn_l1_kernel.cuh"

#include <climits>
#include <cmath>
#include <cstdint>

namespace anomgan {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kSelectList = 8;      // per-thread candidate list of the selection
constexpr int kMaxBlockK = 8;       // block path: at most k x k = 64 block sums per window
constexpr int64_t kMaxBlockStride = 256;
constexpr int64_t kMaxGrid = int64_t(1) << 24;

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };
template <typename T> using acc_t = typename AccOf<T>::type;

// 16-byte vector width per element type.
template <typename T> constexpr int vec_of() { return int(16 / sizeof(T)); }

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ void from_acc(float v, float* o) { *o = v; }
__device__ __forceinline__ void from_acc(double v, double* o) { *o = v; }
__device__ __forceinline__ void from_acc(float v, __half* o) { *o = __float2half_rn(v); }
__device__ __forceinline__ void from_acc(float v, __nv_bfloat16* o) { *o = __float2bfloat16_rn(v); }

// +inf / quiet NaN without relying on constexpr host functions in device code.
template <typename A> __device__ __forceinline__ A inf_of();
template <> __device__ __forceinline__ float inf_of<float>() { return __int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double inf_of<double>() {
  return __longlong_as_double(0x7ff0000000000000LL);
}
template <typename A> __device__ __forceinline__ A nan_of();
template <> __device__ __forceinline__ float nan_of<float>() { return __int_as_float(0x7fc00000); }
template <> __device__ __forceinline__ double nan_of<double>() {
  return __longlong_as_double(0x7ff8000000000000LL);
}

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

// Sum over the VEC lanes at p[0..VEC) of |x - y| into acc; `full` when all VEC lie in the row.
template <typename T, int VEC, typename A>
__device__ __forceinline__ void add_abs_diff(const T* __restrict__ xp, const T* __restrict__ yp,
                                             bool full, int64_t left, A (&acc)[VEC]) {
  if (full) {
    const Pack<T, VEC> xv = *reinterpret_cast<const Pack<T, VEC>*>(xp);
    const Pack<T, VEC> yv = *reinterpret_cast<const Pack<T, VEC>*>(yp);
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[e] += fabs(to_acc(xv.v[e]) - to_acc(yv.v[e]));
  } else {
#pragma unroll
    for (int e = 0; e < VEC; ++e)
      if (e < left) acc[e] += fabs(to_acc(xp[e]) - to_acc(yp[e]));
  }
}

// ---------------------------------------------------------------- forward, block path
// Task = (image b, block row bi, column tile t of TB blocks = TB*s columns).
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads, 2)
block_sum_kernel(const T* __restrict__ x, const T* __restrict__ y, PatchDims d, int64_t Hb,
                 int64_t Wb, int64_t TB, int64_t ntiles, acc_t<T>* __restrict__ bsum) {
  using A = acc_t<T>;
  extern __shared__ unsigned char smem_raw[];
  A* colsum = reinterpret_cast<A*>(smem_raw);  // TB * s
  const int64_t s = d.stride, Wc = Wb * s, tile_cols = TB * s;
  const int64_t ntasks = d.B * Hb * ntiles;
  for (int64_t task = blockIdx.x; task < ntasks; task += gridDim.x) {
    const int64_t t = task % ntiles, bi = (task / ntiles) % Hb, b = task / (ntiles * Hb);
    const int64_t c0 = t * tile_cols;
    const int64_t cols = min(c0 + tile_cols, Wc) - c0;  // a multiple of s
    const int64_t nvec = (cols + VEC - 1) / VEC;
    for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
      const int64_t col = c0 + v * VEC;
      const bool full = col + VEC <= d.W;
      const int64_t left = d.W - col;
      A acc[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[e] = A(0);
      for (int64_t c = 0; c < d.C; ++c) {
        const T* xr = x + b * d.xs[0] + c * d.xs[1] + bi * s * d.xs[2] + col;
        const T* yr = y + b * d.ys[0] + c * d.ys[1] + bi * s * d.ys[2] + col;
        if (full) {
#pragma unroll 4
          for (int64_t r = 0; r < s; ++r, xr += d.xs[2], yr += d.ys[2])
            add_abs_diff<T, VEC, A>(xr, yr, true, VEC, acc);
        } else {
          for (int64_t r = 0; r < s; ++r, xr += d.xs[2], yr += d.ys[2])
            add_abs_diff<T, VEC, A>(xr, yr, false, left, acc);
        }
      }
#pragma unroll
      for (int e = 0; e < VEC; ++e)
        if (v * VEC + e < tile_cols) colsum[v * VEC + e] = acc[e];
    }
    __syncthreads();
    for (int64_t q = threadIdx.x; q < cols / s; q += blockDim.x) {
      A sum = A(0);
      for (int64_t r = 0; r < s; ++r) sum += colsum[q * s + r];
      bsum[(b * Hb + bi) * Wb + t * TB + q] = sum;
    }
    __syncthreads();
  }
}

template <typename A>
__global__ void __launch_bounds__(kThreads)
block_window_kernel(const A* __restrict__ bsum, PatchDims d, int64_t Hb, int64_t Wb, int k, A inv,
                    A* __restrict__ pmap) {
  const int64_t total = d.B * d.Hp * d.Wp;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total;
       o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = o % d.Wp, i = (o / d.Wp) % d.Hp, b = o / (d.Wp * d.Hp);
    const A* base = bsum + (b * Hb + i) * Wb + j;
    A sum = A(0);
    for (int a = 0; a < k; ++a)
      for (int c = 0; c < k; ++c) sum += base[a * Wb + c];
    pmap[o] = sum * inv;
  }
}

// ---------------------------------------------------------------- forward, general path
// Task = (image b, pixel row h < Hc, tile of blockDim.x windows); writes rsum[b, h, j] =
// sum over the window's p columns of sum_c |x - y| at row h.
template <typename T>
__global__ void __launch_bounds__(kThreads, 2)
row_window_kernel(const T* __restrict__ x, const T* __restrict__ y, PatchDims d, int64_t Hc,
                  int64_t ntiles, acc_t<T>* __restrict__ rsum) {
  using A = acc_t<T>;
  constexpr int CH = 8192 / sizeof(A);
  __shared__ A ebuf[CH];
  const int64_t s = d.stride, p = d.patch;
  const int64_t ntasks = d.B * Hc * ntiles;
  for (int64_t task = blockIdx.x; task < ntasks; task += gridDim.x) {
    const int64_t t = task % ntiles, h = (task / ntiles) % Hc, b = task / (ntiles * Hc);
    const int64_t j0 = t * blockDim.x, j1 = min(d.Wp, j0 + int64_t(blockDim.x));
    const int64_t j = j0 + threadIdx.x;
    A acc = A(0);
    if (s <= p || h % s < p) {  // uniform over the CTA: rows in gaps between windows sum to 0
      const T* xr = x + b * d.xs[0] + h * d.xs[2];
      const T* yr = y + b * d.ys[0] + h * d.ys[2];
      const int64_t lo_span = j0 * s, hi_span = (j1 - 1) * s + p;
      for (int64_t cs = lo_span; cs < hi_span; cs += CH) {
        const int64_t ce = min(cs + int64_t(CH), hi_span);
        for (int64_t col = cs + threadIdx.x; col < ce; col += blockDim.x) {
          A e = A(0);
          if (s <= p || col % s < p)
            for (int64_t c = 0; c < d.C; ++c)
              e += fabs(to_acc(xr[c * d.xs[1] + col]) - to_acc(yr[c * d.ys[1] + col]));
          ebuf[col - cs] = e;
        }
        __syncthreads();
        if (j < j1) {
          const int64_t lo = max(j * s, cs), hi = min(j * s + p, ce);
          for (int64_t w = lo; w < hi; ++w) acc += ebuf[w - cs];
        }
        __syncthreads();
      }
    }
    if (j < j1) rsum[(b * Hc + h) * d.Wp + j] = acc;
  }
}

template <typename A>
__global__ void __launch_bounds__(kThreads)
column_window_kernel(const A* __restrict__ rsum, PatchDims d, int64_t Hc, A inv,
                     A* __restrict__ pmap) {
  const int64_t total = d.B * d.Hp * d.Wp;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total;
       o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = o % d.Wp, i = (o / d.Wp) % d.Hp, b = o / (d.Wp * d.Hp);
    const A* base = rsum + (b * Hc + i * d.stride) * d.Wp + j;
    A sum = A(0);
    for (int64_t r = 0; r < d.patch; ++r) sum += base[r * d.Wp];
    pmap[o] = sum * inv;
  }
}

// ---------------------------------------------------------------- selection
template <typename A>
__device__ __forceinline__ bool better(A av, int ai, A bv, int bi) {
  return av > bv || (av == bv && ai < bi);
}

template <typename A, int L>
__device__ __forceinline__ void list_insert(A (&val)[L], int (&idx)[L], A v, int k) {
  if (!better(v, k, val[L - 1], idx[L - 1])) return;
  bool placed = false;
#pragma unroll
  for (int q = L - 1; q >= 0; --q) {
    if (!placed) {
      if (q > 0 && better(v, k, val[q - 1], idx[q - 1])) {
        val[q] = val[q - 1];
        idx[q] = idx[q - 1];
      } else {
        val[q] = v;
        idx[q] = k;
        placed = true;
      }
    }
  }
}

// Fills the list with the thread's L best elements strictly below (tv, ti) in the order
// (value desc, index asc); returns whether more such elements exist than fit.
template <typename A, int L>
__device__ __forceinline__ bool list_fill(const A* __restrict__ m, int64_t len, A tv, int ti,
                                          A (&val)[L], int (&idx)[L]) {
#pragma unroll
  for (int q = 0; q < L; ++q) {
    val[q] = -inf_of<A>();
    idx[q] = INT_MAX;
  }
  int64_t seen = 0;
  for (int64_t k = threadIdx.x; k < len; k += blockDim.x) {
    const A v = m[k];
    if (better(tv, ti, v, int(k))) {
      ++seen;
      list_insert<A, L>(val, idx, v, int(k));
    }
  }
  return seen > L;
}

template <typename A, int L>
__global__ void __launch_bounds__(512, 1)
select_topn_kernel(const A* __restrict__ pmap, int64_t B, int64_t len, int64_t n,
                   A* __restrict__ scores, int64_t* __restrict__ top_idx) {
  __shared__ A warp_v[16];
  __shared__ int warp_i[16];
  __shared__ A win_v;
  __shared__ int win_i;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
  const A kSentV = -inf_of<A>();
  const int kSentI = INT_MAX;
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const A* m = pmap + b * len;
    bool nan = false;
    for (int64_t k = tid; k < len; k += blockDim.x) nan |= isnan(m[k]);
    if (__syncthreads_or(nan)) {
      for (int64_t q = tid; q < n; q += blockDim.x) top_idx[b * n + q] = q;
      if (tid == 0) scores[b] = nan_of<A>();
      continue;
    }
    A val[L];
    int idx[L];
    // everything is below (+inf, -1) in the order, so this keeps the thread's L best
    bool more = list_fill<A, L>(m, len, inf_of<A>(), -1, val, idx);
    double sum = 0.0;
    for (int64_t r = 0; r < n; ++r) {
      A hv = val[0];
      int hi = idx[0];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
        const A ov = __shfl_xor_sync(0xffffffffu, hv, off);
        const int oi = __shfl_xor_sync(0xffffffffu, hi, off);
        if (better(ov, oi, hv, hi)) { hv = ov; hi = oi; }
      }
      if (lane == 0) { warp_v[warp] = hv; warp_i[warp] = hi; }
      __syncthreads();
      if (warp == 0) {
        hv = lane < nwarps ? warp_v[lane] : kSentV;
        hi = lane < nwarps ? warp_i[lane] : kSentI;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
          const A ov = __shfl_xor_sync(0xffffffffu, hv, off);
          const int oi = __shfl_xor_sync(0xffffffffu, hi, off);
          if (better(ov, oi, hv, hi)) { hv = ov; hi = oi; }
        }
        if (lane == 0) { win_v = hv; win_i = hi; }
      }
      __syncthreads();
      const A wv = win_v;
      const int wi = win_i;
      if (tid == 0) {
        top_idx[b * n + r] = wi;
        sum += double(wv);
      }
      if (wi % int(blockDim.x) == tid) {  // the owner pops its head
#pragma unroll
        for (int q = 0; q < L - 1; ++q) { val[q] = val[q + 1]; idx[q] = idx[q + 1]; }
        val[L - 1] = kSentV;
        idx[L - 1] = kSentI;
        if (idx[0] == kSentI && more) more = list_fill<A, L>(m, len, wv, wi, val, idx);
      }
    }
    if (tid == 0) scores[b] = A(sum / double(n));
    __syncthreads();  // win_v / warp_v are rewritten by the next image
  }
}

// ---------------------------------------------------------------- backward
// Block path: wblk[b, bh, bw] = sum of g_map over the windows covering block (bh, bw).
// General path: vcol[b, h, j] = sum of g_map[b, i, j] over the window rows i covering row h.
template <typename A>
__global__ void __launch_bounds__(kThreads)
gather_weight_kernel(const A* __restrict__ g_map, PatchDims d, int64_t rows, int64_t cols,
                     bool block_path, A* __restrict__ out) {
  const int64_t total = d.B * rows * cols;
  const int64_t s = d.stride, p = d.patch, k = block_path ? p / s : 0;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total;
       o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = o % cols, r = (o / cols) % rows, b = o / (cols * rows);
    const A* gm = g_map + b * d.Hp * d.Wp;
    A sum = A(0);
    if (block_path) {
      const int64_t i0 = max(int64_t(0), r - k + 1), i1 = min(d.Hp - 1, r);
      const int64_t j0 = max(int64_t(0), c - k + 1), j1 = min(d.Wp - 1, c);
      for (int64_t i = i0; i <= i1; ++i)
        for (int64_t j = j0; j <= j1; ++j) sum += gm[i * d.Wp + j];
    } else {
      const int64_t i0 = r < p ? 0 : (r - p + s) / s, i1 = min(d.Hp - 1, r / s);
      for (int64_t i = i0; i <= i1; ++i) sum += gm[i * d.Wp + c];
    }
    out[o] = sum;
  }
}

// Adds g_scores[b]/n under each selected window (duplicates add again; bad indices skipped).
template <typename A>
__global__ void __launch_bounds__(kThreads)
scatter_selected_kernel(const A* __restrict__ g_scores, const int64_t* __restrict__ top_idx,
                        PatchDims d, int64_t rows, int64_t cols, bool block_path,
                        A* __restrict__ out) {
  const int64_t total = d.B * d.n;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total;
       o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = o / d.n, w = top_idx[o];
    if (w < 0 || w >= d.Hp * d.Wp) continue;
    const int64_t i = w / d.Wp, j = w % d.Wp;
    const A add = g_scores[b] / A(d.n);
    A* ob = out + b * rows * cols;
    if (block_path) {
      const int64_t k = d.patch / d.stride;
      for (int64_t a = 0; a < k; ++a)
        for (int64_t c = 0; c < k; ++c) atomicAdd(ob + (i + a) * cols + (j + c), add);
    } else {
      for (int64_t r = 0; r < d.patch; ++r) atomicAdd(ob + (i * d.stride + r) * cols + j, add);
    }
  }
}

// Task = (image b, pixel row h, VEC columns); loops over channels.
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads)
grad_kernel(const T* __restrict__ x, const T* __restrict__ y, const acc_t<T>* __restrict__ wsum,
            PatchDims d, int64_t Hc, int64_t rows, int64_t cols, bool block_path, acc_t<T> inv,
            T* __restrict__ grad) {
  using A = acc_t<T>;
  const int64_t nvec = (d.W + VEC - 1) / VEC;
  const int64_t total = d.B * d.H * nvec;
  const int64_t s = d.stride, p = d.patch;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total;
       o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t v = o % nvec, h = (o / nvec) % d.H, b = o / (nvec * d.H);
    const int64_t w0 = v * VEC;
    const bool full = w0 + VEC <= d.W;
    A wt[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const int64_t w = w0 + e;
      A sum = A(0);
      if (h < Hc && w < d.W) {
        if (block_path) {
          if (w < cols * s) sum = wsum[(b * rows + h / s) * cols + w / s];
        } else {
          const A* vr = wsum + (b * rows + h) * cols;
          const int64_t j0 = w < p ? 0 : (w - p + s) / s, j1 = min(d.Wp - 1, w / s);
          for (int64_t j = j0; j <= j1; ++j) sum += vr[j];
        }
      }
      wt[e] = sum * inv;
    }
    for (int64_t c = 0; c < d.C; ++c) {
      const T* xp = x + b * d.xs[0] + c * d.xs[1] + h * d.xs[2] + w0;
      const T* yp = y + b * d.ys[0] + c * d.ys[1] + h * d.ys[2] + w0;
      T* gp = grad + ((b * d.C + c) * d.H + h) * d.W + w0;
      if (full) {
        const Pack<T, VEC> xv = *reinterpret_cast<const Pack<T, VEC>*>(xp);
        const Pack<T, VEC> yv = *reinterpret_cast<const Pack<T, VEC>*>(yp);
        Pack<T, VEC> gv;
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const A df = to_acc(yv.v[e]) - to_acc(xv.v[e]);
          from_acc(wt[e] * A((df > A(0)) - (df < A(0))), &gv.v[e]);
        }
        *reinterpret_cast<Pack<T, VEC>*>(gp) = gv;
      } else {
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          if (w0 + e < d.W) {
            const A df = to_acc(yp[e]) - to_acc(xp[e]);
            from_acc(wt[e] * A((df > A(0)) - (df < A(0))), &gp[e]);
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------- host side
struct Layout {
  bool block;
  int64_t Hc, Wc, k, Hb, Wb;   // block path: Hb x Wb blocks of s x s
  int64_t rows, cols;          // scratch (per image): Hb x Wb (block) or Hc x Wp (general)
};

Layout layout_of(const PatchDims& d) {
  Layout l{};
  l.Hc = (d.Hp - 1) * d.stride + d.patch;
  l.Wc = (d.Wp - 1) * d.stride + d.patch;
  l.block = d.patch % d.stride == 0 && d.patch / d.stride <= kMaxBlockK &&
            d.stride <= kMaxBlockStride;
  if (l.block) {
    l.k = d.patch / d.stride;
    l.Hb = l.Hc / d.stride;
    l.Wb = l.Wc / d.stride;
    l.rows = l.Hb;
    l.cols = l.Wb;
  } else {
    l.rows = l.Hc;
    l.cols = d.Wp;
  }
  return l;
}

unsigned grid_for(int64_t work_items, int64_t per_block) {
  const int64_t g = (work_items + per_block - 1) / per_block;
  return unsigned(g < 1 ? 1 : (g > kMaxGrid ? kMaxGrid : g));
}

template <typename T>
bool vector_ok(const T* x, const T* y, const PatchDims& d, const void* out = nullptr) {
  constexpr int VEC = vec_of<T>();
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  bool ok = aligned(x) && aligned(y) && (out == nullptr || (aligned(out) && d.W % VEC == 0));
  for (int q = 0; q < 3; ++q) ok = ok && d.xs[q] % VEC == 0 && d.ys[q] % VEC == 0;
  return ok;
}

size_t scratch_bytes(const PatchDims& d, bool is_double) {
  const Layout l = layout_of(d);
  return size_t(d.B) * size_t(l.rows) * size_t(l.cols) * (is_double ? sizeof(double) : sizeof(float));
}

int select_threads(int64_t len) {
  int64_t t = (len + 15) / 16;  // ~16 windows a thread
  t = (t + 31) / 32 * 32;
  return int(t < 32 ? 32 : (t > 512 ? 512 : t));
}

template <typename T>
cudaError_t forward_impl(const T* x, const T* y, const PatchDims& d, acc_t<T>* scores,
                         acc_t<T>* pmap, int64_t* top_idx, void* workspace, cudaStream_t stream) {
  using A = acc_t<T>;
  if (d.B == 0) return cudaSuccess;
  const Layout l = layout_of(d);
  A* scratch = static_cast<A*>(workspace);
  const A inv = A(1.0 / (double(d.C) * double(d.patch) * double(d.patch)));
  const int64_t nwin = d.B * d.Hp * d.Wp;
  if (l.block) {
    const int64_t TB = 8 * (d.stride >= 256 ? 1 : 256 / d.stride);
    const int64_t ntiles = (l.Wb + TB - 1) / TB;
    const size_t smem = size_t(TB * d.stride) * sizeof(A);
    const unsigned grid = grid_for(d.B * l.Hb * ntiles, 1);
    if (vector_ok(x, y, d))
      block_sum_kernel<T, vec_of<T>()><<<grid, kThreads, smem, stream>>>(x, y, d, l.Hb, l.Wb, TB, ntiles, scratch);
    else
      block_sum_kernel<T, 1><<<grid, kThreads, smem, stream>>>(x, y, d, l.Hb, l.Wb, TB, ntiles, scratch);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    block_window_kernel<A><<<grid_for(nwin, kThreads), kThreads, 0, stream>>>(
        scratch, d, l.Hb, l.Wb, int(l.k), inv, pmap);
  } else {
    const int64_t ntiles = (d.Wp + kThreads - 1) / kThreads;
    row_window_kernel<T><<<grid_for(d.B * l.Hc * ntiles, 1), kThreads, 0, stream>>>(
        x, y, d, l.Hc, ntiles, scratch);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    column_window_kernel<A><<<grid_for(nwin, kThreads), kThreads, 0, stream>>>(
        scratch, d, l.Hc, inv, pmap);
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t len = d.Hp * d.Wp;
  if (len >= INT_MAX) return cudaErrorInvalidValue;  // the selection uses 32-bit indices
  select_topn_kernel<A, kSelectList><<<grid_for(d.B, 1), select_threads(len), 0, stream>>>(
      pmap, d.B, len, d.n, scores, top_idx);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward_impl(const acc_t<T>* g_scores, const acc_t<T>* g_map, const T* x, const T* y,
                          const int64_t* top_idx, const PatchDims& d, T* grad, void* workspace,
                          cudaStream_t stream) {
  using A = acc_t<T>;
  if (d.B == 0) return cudaSuccess;
  const Layout l = layout_of(d);
  A* wsum = static_cast<A*>(workspace);
  const A inv = A(1.0 / (double(d.C) * double(d.patch) * double(d.patch)));
  gather_weight_kernel<A><<<grid_for(d.B * l.rows * l.cols, kThreads), kThreads, 0, stream>>>(
      g_map, d, l.rows, l.cols, l.block, wsum);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  scatter_selected_kernel<A><<<grid_for(d.B * d.n, kThreads), kThreads, 0, stream>>>(
      g_scores, top_idx, d, l.rows, l.cols, l.block, wsum);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if (vector_ok(x, y, d, grad)) {
    constexpr int VEC = vec_of<T>();
    grad_kernel<T, VEC><<<grid_for(d.B * d.H * ((d.W + VEC - 1) / VEC), kThreads), kThreads, 0, stream>>>(
        x, y, wsum, d, l.Hc, l.rows, l.cols, l.block, inv, grad);
  } else {
    grad_kernel<T, 1><<<grid_for(d.B * d.H * d.W, kThreads), kThreads, 0, stream>>>(
        x, y, wsum, d, l.Hc, l.rows, l.cols, l.block, inv, grad);
  }
  return cudaGetLastError();
}

}  // namespace

bool patch_topn_l1_uses_block_path(const PatchDims& d) { return layout_of(d).block; }

size_t patch_topn_l1_fwd_workspace_bytes(const PatchDims& d, bool is_double) {
  return scratch_bytes(d, is_double);
}
size_t patch_topn_l1_bwd_workspace_bytes(const PatchDims& d, bool is_double) {
  return scratch_bytes(d, is_double);
}

#define ANOMGAN_FWD(T, A)                                                                       \
  cudaError_t patch_topn_l1_fwd_cuda(const T* x, const T* y, const PatchDims& d, A* scores,    \
                                     A* patch_map, int64_t* top_idx, void* workspace,           \
                                     cudaStream_t stream) {                                     \
    return forward_impl<T>(x, y, d, scores, patch_map, top_idx, workspace, stream);             \
  }
#define ANOMGAN_BWD(T, A)                                                                       \
  cudaError_t patch_topn_l1_bwd_cuda(const A* g_scores, const A* g_map, const T* x, const T* y, \
                                     const int64_t* top_idx, const PatchDims& d, T* grad_y,     \
                                     void* workspace, cudaStream_t stream) {                    \
    return backward_impl<T>(g_scores, g_map, x, y, top_idx, d, grad_y, workspace, stream);      \
  }
ANOMGAN_FWD(float, float)
ANOMGAN_FWD(__half, float)
ANOMGAN_FWD(__nv_bfloat16, float)
ANOMGAN_FWD(double, double)
ANOMGAN_BWD(float, float)
ANOMGAN_BWD(__half, float)
ANOMGAN_BWD(__nv_bfloat16, float)
ANOMGAN_BWD(double, double)
#undef ANOMGAN_FWD
#undef ANOMGAN_BWD

}  // namespace cuda
}  // namespace anomgan
