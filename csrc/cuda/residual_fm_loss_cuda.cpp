// CUDA registration of the residual_fm_loss ops: shared argument checks (../residual_fm_loss.h),
// output allocation (anomgan::new_output, poisonable in tests), workspace from torch's caching
// allocator, then the plain-CUDA launchers of residual_fm_loss_kernel.cu on the current stream.
// Compiled only by CUDA builds (setup.py adds csrc/cuda/* and defines ANOMGAN_WITH_CUDA).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../poison.h"
#include "../residual_fm_loss.h"
#include "launch.h"
#include "residual_fm_loss_kernel.cuh"

namespace anomgan {
namespace {

cuda::FloatKind kind_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda::FloatKind::F32;
    case at::kDouble: return cuda::FloatKind::F64;
    case at::kHalf: return cuda::FloatKind::F16;
    case at::kBFloat16: return cuda::FloatKind::BF16;
    default: break;
  }
  TORCH_CHECK_TYPE(false, "residual_fm_loss: unsupported dtype ", t);
}

cuda::ResidualFMArgs args_of(const ResidualFMGeometry& g, const at::Tensor& x, const at::Tensor& gz,
                             const at::Tensor& fx, const at::Tensor& fgz) {
  cuda::ResidualFMArgs a{};
  a.kind = kind_of(x.scalar_type());
  a.x = x.const_data_ptr();
  a.gz = gz.const_data_ptr();
  a.fx = fx.const_data_ptr();
  a.fgz = fgz.const_data_ptr();
  a.B = g.B;
  a.N = g.N;
  a.M = g.M;
  a.sx = g.sx;
  a.sgz = g.sgz;
  a.sfx = g.sfx;
  a.sfgz = g.sfgz;
  a.wr = g.wr;
  a.wf = g.wf;
  return a;
}

at::Tensor residual_fm_loss_fwd_cuda(const at::Tensor& x, const at::Tensor& gz, const at::Tensor& fx,
                                     const at::Tensor& fgz, double lam, c10::string_view reduction) {
  const ResidualFMGeometry g = check_residual_fm(x, gz, fx, fgz, lam, reduction, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor loss = new_output({g.B}, x.options().dtype(out_dtype(x.scalar_type())));
  if (g.B == 0) return loss;
  const cuda::ResidualFMArgs a = args_of(g, x, gz, fx, fgz);
  at::Tensor ws = workspace(cuda::residual_fm_loss_workspace_bytes(a), x);
  check_launch(cuda::launch_residual_fm_loss_fwd(a, loss.mutable_data_ptr(), ws.mutable_data_ptr(),
                                                 c10::cuda::getCurrentCUDAStream()),
               "residual_fm_loss_fwd");
  return loss;
}

std::tuple<at::Tensor, at::Tensor> residual_fm_loss_bwd_cuda(const at::Tensor& grad_in, const at::Tensor& x,
                                                            const at::Tensor& gz, const at::Tensor& fx,
                                                            const at::Tensor& fgz, double lam,
                                                            c10::string_view reduction) {
  const ResidualFMGeometry g =
      check_residual_fm_backward(grad_in, x, gz, fx, fgz, lam, reduction, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor grad_gz = new_grad_like(gz), grad_fgz = new_grad_like(fgz);
  if (g.B == 0) return {grad_gz, grad_fgz};
  const at::Tensor grad = grad_in.contiguous();
  check_launch(cuda::launch_residual_fm_loss_bwd(args_of(g, x, gz, fx, fgz), grad.const_data_ptr(),
                                                 grad_gz.mutable_data_ptr(), grad_fgz.mutable_data_ptr(),
                                                 c10::cuda::getCurrentCUDAStream()),
               "residual_fm_loss_bwd");
  return {grad_gz, grad_fgz};
}

}  // namespace

TORCH_LIBRARY_IMPL(anomgan, CUDA, m) {
  m.impl("residual_fm_loss_fwd", &residual_fm_loss_fwd_cuda);
  m.impl("residual_fm_loss_bwd", &residual_fm_loss_bwd_cuda);
}

}  // namespace anomgan
