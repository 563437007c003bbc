// Argument checks of blend_tiles_add (CPU). They run before the kernel touches memory and raise
// c10::Error (ValueError/TypeError in Python) naming the argument, what it got and what it expects.
#pragma once

#include <torch/types.h>

namespace anomgan {

struct BlendGeometry {
  int64_t B, H, W, n, t;
};

inline BlendGeometry check_blend_tiles_add(const at::Tensor& acc, const at::Tensor& maps,
                                           const at::Tensor& ny, const at::Tensor& nx,
                                           const at::Tensor& origins) {
  const char* op = "blend_tiles_add";
  TORCH_CHECK_TYPE(acc.scalar_type() == at::kDouble, op, ": acc must be float64, got ", acc.scalar_type());
  TORCH_CHECK_VALUE(acc.dim() == 3 && acc.is_contiguous(), op, ": acc must be a contiguous (B, H, W) tensor, got shape ",
                    acc.sizes(), " and strides ", acc.strides());
  TORCH_CHECK_TYPE(maps.scalar_type() == at::kFloat || maps.scalar_type() == at::kDouble, op,
                   ": maps must be float32 or float64, got ", maps.scalar_type());
  TORCH_CHECK_VALUE(maps.dim() == 3 && maps.size(1) == maps.size(2) && maps.size(1) >= 1, op,
                    ": maps must be (n, t, t), got ", maps.sizes());
  const int64_t n = maps.size(0), t = maps.size(1);
  for (const auto* w : {&ny, &nx}) {
    TORCH_CHECK_TYPE(w->scalar_type() == at::kDouble, op, ": ny and nx must be float64, got ", w->scalar_type());
    TORCH_CHECK_VALUE(w->dim() == 2 && w->size(0) == n && w->size(1) == t, op,
                      ": ny and nx must be (n, t) = (", n, ", ", t, "), got ", w->sizes());
  }
  TORCH_CHECK_TYPE(origins.scalar_type() == at::kLong, op, ": origins must be int64, got ", origins.scalar_type());
  TORCH_CHECK_VALUE(origins.dim() == 2 && origins.size(0) == n && origins.size(1) == 3, op,
                    ": origins must be (n, 3) = (", n, ", 3), got ", origins.sizes());
  for (const auto* x : {&maps, &ny, &nx, &origins})
    TORCH_CHECK_VALUE(x->device().is_cpu() && acc.device().is_cpu(), op, ": every tensor must be on the CPU, got ",
                      x->device(), " and ", acc.device());
  BlendGeometry g{acc.size(0), acc.size(1), acc.size(2), n, t};
  TORCH_CHECK_VALUE(t <= g.H && t <= g.W, op, ": tiles of ", t, "x", t, " do not fit in acc of ", g.H, "x", g.W);
  // every tile must lie inside acc: checked here, so the kernel never writes out of bounds
  const auto o = origins.contiguous();
  const int64_t* op_ = o.data_ptr<int64_t>();
  for (int64_t k = 0; k < n; ++k) {
    const int64_t b = op_[3 * k], y = op_[3 * k + 1], x = op_[3 * k + 2];
    TORCH_CHECK_VALUE(b >= 0 && b < g.B && y >= 0 && y + t <= g.H && x >= 0 && x + t <= g.W, op,
                      ": tile ", k, " at (image ", b, ", y ", y, ", x ", x, ") does not lie inside acc of shape ",
                      acc.sizes(), " (tile size ", t, ")");
  }
  return g;
}

}  // namespace anomgan
