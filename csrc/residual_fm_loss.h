// Argument checks of the residual_fm_loss ops, shared by the CPU and CUDA implementations.
// They run before any kernel touches memory and raise c10::Error (ValueError/TypeError in
// Python) naming the argument, what it got and what it expects.
#pragma once

#include <torch/types.h>

#include <string>

#include "poison.h"

namespace anomgan {

struct ResidualFMGeometry {
  int64_t B, N, M;          // batch, elements per sample of x/gz, of fx/fgz
  int64_t sx, sgz, sfx, sfgz;  // batch strides (elements)
  double wr, wf;            // loss = wr * sum|x - gz| + wf * sum|fx - fgz| per sample
};

// True when t's elements after the batch dimension are laid out contiguously.
inline bool sample_rows_contiguous(const at::Tensor& t) {
  int64_t expected = 1;
  for (int64_t d = t.dim() - 1; d >= 1; --d) {
    if (t.size(d) != 1 && t.stride(d) != expected) return false;
    expected *= t.size(d);
  }
  return true;
}

inline void check_fm_tensor(const at::Tensor& t, const char* op, const char* name,
                            c10::DeviceType dev) {
  TORCH_CHECK_VALUE(t.dim() >= 1, op, ": ", name, " must have a batch dimension, got a 0-d tensor");
  auto dt = t.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kDouble,
                   op, ": ", name, " must be float32, float16, bfloat16 or float64, got ", dt);
  TORCH_CHECK_VALUE(t.device().type() == dev, op, ": ", name, " must be on ",
                    c10::DeviceTypeName(dev), ", got ", t.device());
  TORCH_CHECK_VALUE(sample_rows_contiguous(t), op, ": ", name,
                    " must have contiguous samples (strides after the batch dimension of a "
                    "contiguous tensor), got sizes ", t.sizes(), " strides ", t.strides());
}

inline ResidualFMGeometry check_residual_fm(const at::Tensor& x, const at::Tensor& gz,
                                            const at::Tensor& fx, const at::Tensor& fgz,
                                            double lam, c10::string_view reduction,
                                            c10::DeviceType dev, const char* op = "residual_fm_loss") {
  check_fm_tensor(x, op, "x", dev);
  check_fm_tensor(gz, op, "gz", dev);
  check_fm_tensor(fx, op, "fx", dev);
  check_fm_tensor(fgz, op, "fgz", dev);
  TORCH_CHECK_VALUE(x.sizes() == gz.sizes(), op, ": x and gz must have the same shape, got ",
                    x.sizes(), " and ", gz.sizes());
  TORCH_CHECK_VALUE(fx.sizes() == fgz.sizes(), op, ": fx and fgz must have the same shape, got ",
                    fx.sizes(), " and ", fgz.sizes());
  TORCH_CHECK_VALUE(x.size(0) == fx.size(0), op, ": x and fx must have the same batch size, got ",
                    x.sizes(), " and ", fx.sizes());
  const auto dt = x.scalar_type();
  TORCH_CHECK_TYPE(gz.scalar_type() == dt && fx.scalar_type() == dt && fgz.scalar_type() == dt, op,
                   ": x, gz, fx and fgz must have one dtype, got ", dt, ", ", gz.scalar_type(), ", ",
                   fx.scalar_type(), " and ", fgz.scalar_type());
  for (const at::Tensor* t : {&gz, &fx, &fgz})
    TORCH_CHECK_VALUE(t->device() == x.device(), op, ": x, gz, fx and fgz must be on one device, got ",
                      x.device(), " and ", t->device());
  TORCH_CHECK_VALUE(lam >= 0.0 && lam <= 1.0, op, ": lam must be in [0, 1], got ", lam);
  const bool mean = reduction == "mean";
  TORCH_CHECK_VALUE(mean || reduction == "sum", op, ": reduction must be 'mean' or 'sum', got '",
                    std::string(reduction), "'");
  ResidualFMGeometry g{};
  g.B = x.size(0);
  int64_t n = 1, mm = 1;
  for (int64_t d = 1; d < x.dim(); ++d) n *= x.size(d);
  for (int64_t d = 1; d < fx.dim(); ++d) mm *= fx.size(d);
  TORCH_CHECK_VALUE(n >= 1, op, ": each sample of x must have at least one element, got ", x.sizes());
  TORCH_CHECK_VALUE(mm >= 1, op, ": each sample of fx must have at least one element, got ", fx.sizes());
  g.N = n;
  g.M = mm;
  g.sx = x.stride(0);
  g.sgz = gz.stride(0);
  g.sfx = fx.stride(0);
  g.sfgz = fgz.stride(0);
  g.wr = mean ? (1.0 - lam) / double(n) : 1.0 - lam;
  g.wf = mean ? lam / double(mm) : lam;
  return g;
}

inline ResidualFMGeometry check_residual_fm_backward(const at::Tensor& grad, const at::Tensor& x,
                                                     const at::Tensor& gz, const at::Tensor& fx,
                                                     const at::Tensor& fgz, double lam,
                                                     c10::string_view reduction, c10::DeviceType dev) {
  auto g = check_residual_fm(x, gz, fx, fgz, lam, reduction, dev, "residual_fm_loss_bwd");
  const auto od = out_dtype(x.scalar_type());
  TORCH_CHECK_VALUE(grad.dim() == 1 && grad.size(0) == g.B, "residual_fm_loss_bwd: g must be (B,)=(",
                    g.B, "), got ", grad.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == od, "residual_fm_loss_bwd: g must be ", od, ", got ",
                   grad.scalar_type());
  TORCH_CHECK_VALUE(grad.device() == x.device(), "residual_fm_loss_bwd: g must be on ", x.device(),
                    ", got ", grad.device());
  return g;
}

}  // namespace anomgan
