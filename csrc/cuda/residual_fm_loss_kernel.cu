// Fused residual + feature-matching loss on CUDA (no torch headers: compiles with nvcc alone).
//
// Algorithm (forward). Each sample's pairs (x, gz) and (fx, fgz) are cut into chunks of
// kChunk elements; one block per (sample, pair, chunk), flattened on grid.x (x chunks first).
// A thread sums |a - b| over a strided slice of the chunk (float; double for float64), the
// block reduces with warp shuffles and writes one partial. A second kernel (one warp per
// sample) sums each sample's partials in double in a fixed order and writes
// wr * r + wf * f: deterministic, no atomics.
//
// Algorithm (backward). One block per (sample, pair, kBlockElems elements) writes
// g[b] * w * sign(b - a), sign(0) = sign(NaN) = 0, in the input type.
//
// Memory traffic: forward reads the four inputs once (2·B·(N + M) elements) and writes
// B·(cx + cf) partials and B losses; backward reads them once and writes grad_gz and grad_fgz
// once (B·(N + M) elements).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "residual_fm_loss_kernel.cuh"

namespace anomgan {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 16384;      // forward: elements per block
constexpr int64_t kBlockElems = 1024;  // backward: elements per block

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_acc(typename Acc<T>::type v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ double from_acc<double>(double v) { return v; }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename A>
__device__ __forceinline__ A block_sum(A v) {
  __shared__ A warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  A s = A(0);
  if (warp == 0) {
    s = lane < kThreads / 32 ? warp_sums[lane] : A(0);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
  }
  return s;  // valid in thread 0
}

struct Chunks {
  int64_t cx, cf;
};

__host__ __device__ inline Chunks chunks_of(int64_t N, int64_t M) {
  return {(N + kChunk - 1) / kChunk, (M + kChunk - 1) / kChunk};
}

// The work item of block `pid` of a grid flattened over (pair, sample, piece): the B * nx pieces
// of the (x, gz) pair first (nx per sample), then the B * nf pieces of (fx, fgz). Both kernels
// cut their grid so; `piece` counts within the sample's pair, pa/pb point at the sample's rows.
template <typename T>
struct PairItem {
  bool f;                // the (fx, fgz) pair
  int64_t b, piece, n;   // sample, piece of its pair, elements per sample of the pair
  const T *pa, *pb;      // x/gz or fx/fgz of sample b
};

template <typename T>
__device__ __forceinline__ PairItem<T> pair_item(const ResidualFMArgs& a, int64_t pid, int64_t nx,
                                                 int64_t nf) {
  PairItem<T> it;
  it.f = pid >= a.B * nx;
  const int64_t q = it.f ? pid - a.B * nx : pid, per = it.f ? nf : nx;
  it.b = q / per;
  it.piece = q % per;
  it.n = it.f ? a.M : a.N;
  it.pa = static_cast<const T*>(it.f ? a.fx : a.x) + it.b * (it.f ? a.sfx : a.sx);
  it.pb = static_cast<const T*>(it.f ? a.fgz : a.gz) + it.b * (it.f ? a.sfgz : a.sgz);
  return it;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) partials_kernel(ResidualFMArgs a, typename Acc<T>::type* part) {
  using A = typename Acc<T>::type;
  const Chunks ch = chunks_of(a.N, a.M);
  const PairItem<T> it = pair_item<T>(a, blockIdx.x, ch.cx, ch.cf);
  const int64_t slot = it.f ? ch.cx + it.piece : it.piece;
  const int64_t i0 = it.piece * kChunk;
  const int64_t i1 = i0 + kChunk < it.n ? i0 + kChunk : it.n;
  A s = A(0);
  for (int64_t i = i0 + threadIdx.x; i < i1; i += kThreads) s += fabs(to_acc(it.pa[i]) - to_acc(it.pb[i]));
  s = block_sum(s);
  if (threadIdx.x == 0) part[it.b * (ch.cx + ch.cf) + slot] = s;
}

template <typename A>
__global__ void combine_kernel(ResidualFMArgs a, const A* part, A* loss) {
  const Chunks ch = chunks_of(a.N, a.M);
  const int64_t per = ch.cx + ch.cf;
  const int64_t b = blockIdx.x;
  const int lane = threadIdx.x;
  double r = 0.0, f = 0.0;
  for (int64_t c = lane; c < ch.cx; c += 32) r += double(part[b * per + c]);
  for (int64_t c = lane; c < ch.cf; c += 32) f += double(part[b * per + ch.cx + c]);
  for (int o = 16; o > 0; o >>= 1) {
    r += __shfl_down_sync(0xffffffffu, r, o);
    f += __shfl_down_sync(0xffffffffu, f, o);
  }
  if (lane == 0) loss[b] = A(a.wr * r + a.wf * f);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) sign_scale_kernel(ResidualFMArgs a, const typename Acc<T>::type* g,
                                                              T* grad_gz, T* grad_fgz) {
  using A = typename Acc<T>::type;
  const int64_t bx = (a.N + kBlockElems - 1) / kBlockElems, bf = (a.M + kBlockElems - 1) / kBlockElems;
  const PairItem<T> it = pair_item<T>(a, blockIdx.x, bx, bf);
  T* out = it.f ? grad_fgz + it.b * a.M : grad_gz + it.b * a.N;
  const A scale = A(double(g[it.b]) * (it.f ? a.wf : a.wr));
  const int64_t i0 = it.piece * kBlockElems;
  const int64_t i1 = i0 + kBlockElems < it.n ? i0 + kBlockElems : it.n;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += kThreads) {
    const A d = to_acc(it.pb[i]) - to_acc(it.pa[i]);
    out[i] = from_acc<T>(scale * A((d > A(0)) - (d < A(0))));
  }
}

template <typename T>
cudaError_t fwd_impl(const ResidualFMArgs& a, void* loss, void* workspace, cudaStream_t stream) {
  using A = typename Acc<T>::type;
  const Chunks ch = chunks_of(a.N, a.M);
  A* part = static_cast<A*>(workspace);
  partials_kernel<T><<<dim3(unsigned(a.B * (ch.cx + ch.cf))), kThreads, 0, stream>>>(a, part);
  combine_kernel<A><<<dim3(unsigned(a.B)), 32, 0, stream>>>(a, part, static_cast<A*>(loss));
  return cudaGetLastError();
}

template <typename T>
cudaError_t bwd_impl(const ResidualFMArgs& a, const void* g, void* grad_gz, void* grad_fgz,
                     cudaStream_t stream) {
  using A = typename Acc<T>::type;
  const int64_t bx = (a.N + kBlockElems - 1) / kBlockElems, bf = (a.M + kBlockElems - 1) / kBlockElems;
  sign_scale_kernel<T><<<dim3(unsigned(a.B * (bx + bf))), kThreads, 0, stream>>>(
      a, static_cast<const A*>(g), static_cast<T*>(grad_gz), static_cast<T*>(grad_fgz));
  return cudaGetLastError();
}

}  // namespace

size_t residual_fm_loss_workspace_bytes(const ResidualFMArgs& a) {
  const Chunks ch = chunks_of(a.N, a.M);
  const size_t elem = a.kind == FloatKind::F64 ? sizeof(double) : sizeof(float);
  return size_t(a.B * (ch.cx + ch.cf)) * elem;
}

cudaError_t launch_residual_fm_loss_fwd(const ResidualFMArgs& a, void* loss, void* workspace,
                                        cudaStream_t stream) {
  if (a.B == 0) return cudaSuccess;
  switch (a.kind) {
    case FloatKind::F32: return fwd_impl<float>(a, loss, workspace, stream);
    case FloatKind::F64: return fwd_impl<double>(a, loss, workspace, stream);
    case FloatKind::F16: return fwd_impl<__half>(a, loss, workspace, stream);
    case FloatKind::BF16: return fwd_impl<__nv_bfloat16>(a, loss, workspace, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_residual_fm_loss_bwd(const ResidualFMArgs& a, const void* g, void* grad_gz,
                                        void* grad_fgz, cudaStream_t stream) {
  if (a.B == 0) return cudaSuccess;
  switch (a.kind) {
    case FloatKind::F32: return bwd_impl<float>(a, g, grad_gz, grad_fgz, stream);
    case FloatKind::F64: return bwd_impl<double>(a, g, grad_gz, grad_fgz, stream);
    case FloatKind::F16: return bwd_impl<__half>(a, g, grad_gz, grad_fgz, stream);
    case FloatKind::BF16: return bwd_impl<__nv_bfloat16>(a, g, grad_gz, grad_fgz, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace anomgan
