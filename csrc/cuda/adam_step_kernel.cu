// Batched in-place Adam step on CUDA (no torch headers: compiles with nvcc alone).
//
// Algorithm. One block per sample, so the sample's step count is read and written inside one
// block: every thread reads it, the block synchronises, thread 0 writes t = step + 1. An
// inactive sample's block returns having written nothing. Every thread forms the bias
// corrections 1 - beta1^t, sqrt(1 - beta2^t) and the step size lr / (1 - beta1^t) in double
// (as torch.optim.Adam does on the host), then the block strides over the D elements with
// torch's element arithmetic in z's type: lerp and addcmul as fused multiply-adds,
// IEEE-rounded sqrt and divisions (__fsqrt_rn/__fdiv_rn: unaffected by --use_fast_math).
//
// Memory traffic: reads z, grad and both moments once and writes z and the moments once
// (7·B·D elements for the active samples), plus B steps, flags and learning rates.
#include "adam_step_kernel.cuh"

namespace anomgan {
namespace cuda {
namespace {

constexpr int kThreads = 128;

__device__ __forceinline__ float fma_t(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double fma_t(double a, double b, double c) { return fma(a, b, c); }
__device__ __forceinline__ float sqrt_rn(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double sqrt_rn(double a) { return __dsqrt_rn(a); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }

template <typename T>
__global__ void __launch_bounds__(kThreads) adam_kernel(AdamArgs a) {
  const int64_t b = blockIdx.x;
  if (!a.active[b * a.as]) return;  // uniform over the block
  const int64_t t = a.step[b * a.ss] + 1;
  __syncthreads();  // every thread has read the old step
  if (threadIdx.x == 0) a.step[b * a.ss] = t;
  const double bc1 = 1.0 - pow(a.beta1, double(t));
  const double bc2_sqrt = sqrt(1.0 - pow(a.beta2, double(t)));
  const double lr_b = a.lr_per_sample ? a.lr_per_sample[b * a.ls] : a.lr;
  const T neg_step = T(-(lr_b / bc1)), bc2s = T(bc2_sqrt), eps = T(a.eps);
  const T w1 = T(1.0 - a.beta1), b2 = T(a.beta2), w2 = T(1.0 - a.beta2);
  const bool w1_small = fabs(1.0 - a.beta1) < 0.5;  // torch's lerp picks its formula so
  T* z = static_cast<T*>(a.z) + b * a.zs0;
  const T* g = static_cast<const T*>(a.grad) + b * a.gs0;
  T* m = static_cast<T*>(a.exp_avg) + b * a.ms0;
  T* v = static_cast<T*>(a.exp_avg_sq) + b * a.vs0;
  for (int64_t d = threadIdx.x; d < a.D; d += kThreads) {
    const T gr = g[d * a.gs1], m_old = m[d * a.ms1];
    const T mn = w1_small ? fma_t(w1, gr - m_old, m_old) : fma_t(-(T(1) - w1), gr - m_old, gr);
    const T vn = fma_t(w2 * gr, gr, v[d * a.vs1] * b2);
    const T denom = div_rn(sqrt_rn(vn), bc2s) + eps;
    z[d * a.zs1] = z[d * a.zs1] + div_rn(neg_step * mn, denom);
    m[d * a.ms1] = mn;
    v[d * a.vs1] = vn;
  }
}

}  // namespace

cudaError_t launch_adam_step(const AdamArgs& a, cudaStream_t stream) {
  if (a.B == 0) return cudaSuccess;
  if (a.is_double)
    adam_kernel<double><<<dim3(unsigned(a.B)), kThreads, 0, stream>>>(a);
  else
    adam_kernel<float><<<dim3(unsigned(a.B)), kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace anomgan
