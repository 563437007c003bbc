// CUDA registration of the patch_topn_l1 ops: shared argument checks (../patch_topn_l1.h),
// output allocation (anomgan::new_output, poisonable in tests), workspace from torch's caching
// allocator, then the plain-CUDA launchers of patch_topn_l1_kernel.cu on the current stream.
// Compiled only by CUDA builds (setup.py adds csrc/cuda/* and defines ANOMGAN_WITH_CUDA).
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <type_traits>

#include "../patch_topn_l1.h"
#include "../poison.h"
#include "launch.h"
#include "patch_topn_l1_kernel.cuh"

namespace anomgan {
namespace {

template <typename scalar_t> struct CudaType { using type = scalar_t; };
template <> struct CudaType<at::Half> { using type = __half; };
template <> struct CudaType<at::BFloat16> { using type = __nv_bfloat16; };

cuda::PatchDims dims_of(const PatchGeometry& g, const at::Tensor& x, const at::Tensor& y) {
  cuda::PatchDims d{};
  d.B = g.B; d.C = g.C; d.H = g.H; d.W = g.W;
  d.patch = g.patch; d.stride = g.stride; d.n = g.n; d.Hp = g.Hp; d.Wp = g.Wp;
  for (int q = 0; q < 3; ++q) {
    d.xs[q] = x.stride(q);
    d.ys[q] = y.stride(q);
  }
  return d;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> patch_topn_l1_fwd_cuda(const at::Tensor& x,
                                                                      const at::Tensor& y,
                                                                      int64_t patch, int64_t stride,
                                                                      int64_t n) {
  const PatchGeometry g = check_patch_forward(x, y, patch, stride, n, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  const PatchOutputs out = new_patch_outputs(g, x);
  if (g.B == 0) return out.as_tuple();
  TORCH_CHECK_VALUE(g.Hp * g.Wp < (int64_t(1) << 31), "patch_topn_l1: the CUDA kernels handle "
                    "fewer than 2^31 windows per image, got ", g.Hp, "x", g.Wp);
  const bool dbl = x.scalar_type() == at::kDouble;
  const cuda::PatchDims d = dims_of(g, x, y);
  at::Tensor ws = workspace(cuda::patch_topn_l1_fwd_workspace_bytes(d, dbl), x);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "patch_topn_l1_fwd_cuda", [&] {
    using T = typename CudaType<scalar_t>::type;
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    err = cuda::patch_topn_l1_fwd_cuda(reinterpret_cast<const T*>(x.const_data_ptr<scalar_t>()),
                                       reinterpret_cast<const T*>(y.const_data_ptr<scalar_t>()), d,
                                       out.scores.mutable_data_ptr<acc_t>(),
                                       out.pmap.mutable_data_ptr<acc_t>(),
                                       out.top_idx.mutable_data_ptr<int64_t>(), ws.mutable_data_ptr(),
                                       stream);
  });
  check_launch(err, "patch_topn_l1_fwd");
  return out.as_tuple();
}

at::Tensor patch_topn_l1_bwd_cuda(const at::Tensor& g_scores_in, const at::Tensor& g_map_in,
                                  const at::Tensor& x, const at::Tensor& y,
                                  const at::Tensor& top_idx_in, int64_t patch, int64_t stride) {
  const PatchGeometry g = check_patch_backward(g_scores_in, g_map_in, x, y, top_idx_in, patch,
                                               stride, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor grad_y = new_grad_like(y);
  if (g.B == 0) return grad_y;
  const at::Tensor g_scores = g_scores_in.contiguous(), g_map = g_map_in.contiguous();
  const at::Tensor top_idx = top_idx_in.contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // The range check costs a device sync; it is skipped while a CUDA graph is being captured
  // (where a sync is illegal). The kernels never dereference an out-of-range index either way.
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  check_launch(cudaStreamIsCapturing(stream, &capture), "patch_topn_l1_bwd");
  if (capture == cudaStreamCaptureStatusNone) {
    const bool bad = ((top_idx < 0) | (top_idx >= g.Hp * g.Wp)).any().item<bool>();
    TORCH_CHECK_VALUE(!bad, "patch_topn_l1_bwd: top_idx must hold window indices in [0, ",
                      g.Hp * g.Wp, ")");
  }
  const bool dbl = x.scalar_type() == at::kDouble;
  const cuda::PatchDims d = dims_of(g, x, y);
  at::Tensor ws = workspace(cuda::patch_topn_l1_bwd_workspace_bytes(d, dbl), x);
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "patch_topn_l1_bwd_cuda", [&] {
    using T = typename CudaType<scalar_t>::type;
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    err = cuda::patch_topn_l1_bwd_cuda(g_scores.const_data_ptr<acc_t>(), g_map.const_data_ptr<acc_t>(),
                                       reinterpret_cast<const T*>(x.const_data_ptr<scalar_t>()),
                                       reinterpret_cast<const T*>(y.const_data_ptr<scalar_t>()),
                                       top_idx.const_data_ptr<int64_t>(), d,
                                       reinterpret_cast<T*>(grad_y.mutable_data_ptr<scalar_t>()),
                                       ws.mutable_data_ptr(), stream);
  });
  check_launch(err, "patch_topn_l1_bwd");
  return grad_y;
}

}  // namespace

TORCH_LIBRARY_IMPL(anomgan, CUDA, m) {
  m.impl("patch_topn_l1_fwd", &patch_topn_l1_fwd_cuda);
  m.impl("patch_topn_l1_bwd", &patch_topn_l1_bwd_cuda);
}

}  // namespace anomgan
