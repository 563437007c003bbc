// CUDA registration of the adam_step op: shared argument checks (../adam_step.h; shapes, dtypes
// and devices only, no value read back), then the plain-CUDA launcher of adam_step_kernel.cu on
// the current stream. Nothing here synchronises, so the op can be captured in a CUDA graph.
// Compiled only by CUDA builds (setup.py adds csrc/cuda/* and defines ANOMGAN_WITH_CUDA).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../adam_step.h"
#include "adam_step_kernel.cuh"
#include "launch.h"

namespace anomgan {
namespace {

void adam_step_cuda(const at::Tensor& z, const at::Tensor& grad, const at::Tensor& exp_avg,
                    const at::Tensor& exp_avg_sq, const at::Tensor& step, const at::Tensor& active,
                    const c10::optional<at::Tensor>& lr_tensor, double lr, double beta1, double beta2,
                    double eps) {
  const AdamGeometry g = check_adam_step(z, grad, exp_avg, exp_avg_sq, step, active, lr_tensor, lr,
                                         beta1, beta2, eps, c10::DeviceType::CUDA);
  if (g.B == 0) return;
  const c10::cuda::CUDAGuard guard(z.device());
  cuda::AdamArgs a{};
  a.is_double = z.scalar_type() == at::kDouble;
  a.z = z.mutable_data_ptr();
  a.grad = grad.const_data_ptr();
  a.exp_avg = exp_avg.mutable_data_ptr();
  a.exp_avg_sq = exp_avg_sq.mutable_data_ptr();
  a.step = step.mutable_data_ptr<int64_t>();
  a.active = active.const_data_ptr<bool>();
  a.lr_per_sample = lr_tensor.has_value() ? lr_tensor->const_data_ptr<double>() : nullptr;
  a.B = g.B;
  a.D = g.D;
  a.zs0 = z.stride(0);
  a.zs1 = z.stride(1);
  a.gs0 = grad.stride(0);
  a.gs1 = grad.stride(1);
  a.ms0 = exp_avg.stride(0);
  a.ms1 = exp_avg.stride(1);
  a.vs0 = exp_avg_sq.stride(0);
  a.vs1 = exp_avg_sq.stride(1);
  a.ss = step.stride(0);
  a.as = active.stride(0);
  a.ls = lr_tensor.has_value() ? lr_tensor->stride(0) : 0;
  a.lr = lr;
  a.beta1 = beta1;
  a.beta2 = beta2;
  a.eps = eps;
  check_launch(cuda::launch_adam_step(a, c10::cuda::getCurrentCUDAStream()), "adam_step");
}

}  // namespace

TORCH_LIBRARY_IMPL(anomgan, CUDA, m) { m.impl("adam_step", &adam_step_cuda); }

}  // namespace anomgan
