// Host launchers of the patch-wise top-n L1 CUDA kernels (csrc/cuda/patch_topn_l1_kernel.cu).
// Plain CUDA: no torch headers, so the .cu compiles with nvcc alone; the torch wrapper is
// csrc/cuda/patch_topn_l1_cuda.cpp. The semantics are those of the CPU kernel
// (csrc/cpu/patch_topn_l1_cpu.cpp) and the contract in anomgan/ops/patch_topn_l1.py.
//
// All sizes and strides are int64 element counts. x and y may have any batch/channel/row
// strides but must be unit-stride along W. Outputs (scores, patch_map, top_idx, grad_y) are
// contiguous. Every launcher enqueues on `stream`, never synchronises, and returns the first
// launch error (cudaSuccess otherwise). The caller provides a device workspace of at least
// *_workspace_bytes(dims) bytes (e.g. from torch's caching allocator).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace anomgan {
namespace cuda {

struct PatchDims {
  int64_t B, C, H, W;       // image batch shape
  int64_t patch, stride, n;  // window size, window step, windows selected per image
  int64_t Hp, Wp;            // windows per column / row: (H - patch) / stride + 1, ...
  int64_t xs[3], ys[3];      // strides of x and y along B, C, H (W is unit-stride)
};

// True when the forward and backward use the block-sum fast path (stride divides patch and the
// window spans few blocks); otherwise the general row/column path. Exposed for tests/benchmarks.
bool patch_topn_l1_uses_block_path(const PatchDims& d);

// Workspace bytes of the forward / backward; `is_double` for float64 inputs.
size_t patch_topn_l1_fwd_workspace_bytes(const PatchDims& d, bool is_double);
size_t patch_topn_l1_bwd_workspace_bytes(const PatchDims& d, bool is_double);

// Forward: scores (B,), patch_map (B, Hp, Wp) in float (double for double inputs), top_idx
// (B, n): flat window indices i*Wp + j in descending order of the window mean, ties to the
// lowest index; an image with a NaN window gets a NaN score and indices 0..n-1.
// Requires Hp * Wp < 2^31 (returns cudaErrorInvalidValue otherwise).
cudaError_t patch_topn_l1_fwd_cuda(const float* x, const float* y, const PatchDims& d,
                                   float* scores, float* patch_map, int64_t* top_idx,
                                   void* workspace, cudaStream_t stream);
cudaError_t patch_topn_l1_fwd_cuda(const __half* x, const __half* y, const PatchDims& d,
                                   float* scores, float* patch_map, int64_t* top_idx,
                                   void* workspace, cudaStream_t stream);
cudaError_t patch_topn_l1_fwd_cuda(const __nv_bfloat16* x, const __nv_bfloat16* y,
                                   const PatchDims& d, float* scores, float* patch_map,
                                   int64_t* top_idx, void* workspace, cudaStream_t stream);
cudaError_t patch_topn_l1_fwd_cuda(const double* x, const double* y, const PatchDims& d,
                                   double* scores, double* patch_map, int64_t* top_idx,
                                   void* workspace, cudaStream_t stream);

// Backward: grad_y (B, C, H, W), contiguous, of x's dtype =
//   sign(y - x) / (C patch^2) * sum over the windows covering the pixel of
//   (g_map[window] + g_scores/n for each time the window appears in top_idx); sign(0) = 0.
// g_scores (B,), g_map (B, Hp, Wp) and top_idx (B, n) must be contiguous. Indices outside
// [0, Hp*Wp) are ignored (never dereferenced); the wrapper rejects them beforehand.
cudaError_t patch_topn_l1_bwd_cuda(const float* g_scores, const float* g_map, const float* x,
                                   const float* y, const int64_t* top_idx, const PatchDims& d,
                                   float* grad_y, void* workspace, cudaStream_t stream);
cudaError_t patch_topn_l1_bwd_cuda(const float* g_scores, const float* g_map, const __half* x,
                                   const __half* y, const int64_t* top_idx, const PatchDims& d,
                                   __half* grad_y, void* workspace, cudaStream_t stream);
cudaError_t patch_topn_l1_bwd_cuda(const float* g_scores, const float* g_map,
                                   const __nv_bfloat16* x, const __nv_bfloat16* y,
                                   const int64_t* top_idx, const PatchDims& d,
                                   __nv_bfloat16* grad_y, void* workspace, cudaStream_t stream);
cudaError_t patch_topn_l1_bwd_cuda(const double* g_scores, const double* g_map, const double* x,
                                   const double* y, const int64_t* top_idx, const PatchDims& d,
                                   double* grad_y, void* workspace, cudaStream_t stream);

}  // namespace cuda
}  // namespace anomgan
