// Argument checks of the adam_step op, shared by the CPU and CUDA implementations. They look at
// shapes, dtypes, devices and scalars only (no tensor value is read, so no device sync) and raise
// c10::Error (ValueError/TypeError in Python) naming the argument.
#pragma once

#include <torch/types.h>

#include <cmath>

namespace anomgan {

struct AdamGeometry {
  int64_t B, D;
};

inline AdamGeometry check_adam_step(const at::Tensor& z, const at::Tensor& grad, const at::Tensor& exp_avg,
                                    const at::Tensor& exp_avg_sq, const at::Tensor& step,
                                    const at::Tensor& active, const c10::optional<at::Tensor>& lr_tensor,
                                    double lr, double beta1, double beta2, double eps, c10::DeviceType dev) {
  TORCH_CHECK_VALUE(z.dim() == 2, "adam_step: z must be (B, D), got ", z.sizes());
  TORCH_CHECK_TYPE(z.scalar_type() == at::kFloat || z.scalar_type() == at::kDouble,
                   "adam_step: z must be float32 or float64, got ", z.scalar_type());
  TORCH_CHECK_VALUE(z.device().type() == dev, "adam_step: z must be on ", c10::DeviceTypeName(dev),
                    ", got ", z.device());
  const AdamGeometry g{z.size(0), z.size(1)};
  const char* names[3] = {"grad", "exp_avg", "exp_avg_sq"};
  const at::Tensor* ts[3] = {&grad, &exp_avg, &exp_avg_sq};
  for (int i = 0; i < 3; ++i) {
    TORCH_CHECK_VALUE(ts[i]->sizes() == z.sizes(), "adam_step: ", names[i], " must have z's shape ",
                      z.sizes(), ", got ", ts[i]->sizes());
    TORCH_CHECK_TYPE(ts[i]->scalar_type() == z.scalar_type(), "adam_step: ", names[i],
                     " must have z's dtype ", z.scalar_type(), ", got ", ts[i]->scalar_type());
    TORCH_CHECK_VALUE(ts[i]->device() == z.device(), "adam_step: ", names[i], " must be on ",
                      z.device(), ", got ", ts[i]->device());
  }
  TORCH_CHECK_TYPE(step.scalar_type() == at::kLong, "adam_step: step must be int64, got ", step.scalar_type());
  TORCH_CHECK_TYPE(active.scalar_type() == at::kBool, "adam_step: active must be bool, got ",
                   active.scalar_type());
  TORCH_CHECK_VALUE(step.dim() == 1 && step.size(0) == g.B, "adam_step: step must be (B,)=(", g.B,
                    "), got ", step.sizes());
  TORCH_CHECK_VALUE(active.dim() == 1 && active.size(0) == g.B, "adam_step: active must be (B,)=(",
                    g.B, "), got ", active.sizes());
  TORCH_CHECK_VALUE(step.device() == z.device() && active.device() == z.device(),
                    "adam_step: step and active must be on ", z.device(), ", got ", step.device(),
                    " and ", active.device());
  if (lr_tensor.has_value()) {
    const at::Tensor& l = *lr_tensor;
    TORCH_CHECK_TYPE(l.scalar_type() == at::kDouble, "adam_step: lr_tensor must be float64, got ",
                     l.scalar_type());
    TORCH_CHECK_VALUE(l.dim() == 1 && l.size(0) == g.B, "adam_step: lr_tensor must be (B,)=(", g.B,
                      "), got ", l.sizes());
    TORCH_CHECK_VALUE(l.device() == z.device(), "adam_step: lr_tensor must be on ", z.device(),
                      ", got ", l.device());
  } else {
    TORCH_CHECK_VALUE(std::isfinite(lr) && lr >= 0.0, "adam_step: lr must be a finite number >= 0, got ", lr);
  }
  TORCH_CHECK_VALUE(beta1 >= 0.0 && beta1 < 1.0, "adam_step: beta1 must be in [0, 1), got ", beta1);
  TORCH_CHECK_VALUE(beta2 >= 0.0 && beta2 < 1.0, "adam_step: beta2 must be in [0, 1), got ", beta2);
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0.0, "adam_step: eps must be a finite number >= 0, got ", eps);
  return g;
}

}  // namespace anomgan
