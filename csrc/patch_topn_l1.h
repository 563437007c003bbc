// Argument checks of the patch_topn_l1 ops, shared by the CPU and CUDA implementations.
// They run before any kernel touches memory and raise c10::Error (ValueError/TypeError in
// Python) naming the argument, what it got and what it expects.
#pragma once

#include <torch/types.h>

#include <tuple>

#include "poison.h"

namespace anomgan {

struct PatchGeometry {
  int64_t B, C, H, W, patch, stride, n, Hp, Wp;
};

// The forward's outputs, allocated by the CPU and CUDA glue alike before any kernel runs
// (poisonable, see poison.h): scores (B,) and patch_map (B, Hp, Wp) in out_dtype(x), top_idx
// (B, n) int64.
struct PatchOutputs {
  at::Tensor scores, pmap, top_idx;
  std::tuple<at::Tensor, at::Tensor, at::Tensor> as_tuple() const { return {scores, pmap, top_idx}; }
};

inline PatchOutputs new_patch_outputs(const PatchGeometry& g, const at::Tensor& x) {
  const auto opts = x.options().dtype(out_dtype(x.scalar_type()));
  return {new_output({g.B}, opts), new_output({g.B, g.Hp, g.Wp}, opts),
          new_output({g.B, g.n}, x.options().dtype(at::kLong))};
}

inline void check_float_image(const at::Tensor& t, const char* name, c10::DeviceType dev) {
  TORCH_CHECK_VALUE(t.dim() == 4, "patch_topn_l1: ", name, " must be (B, C, H, W), got ",
                    t.dim(), " dimensions");
  auto dt = t.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kDouble,
                   "patch_topn_l1: ", name, " must be float32, float16, bfloat16 or float64, got ",
                   dt);
  TORCH_CHECK_VALUE(t.device().type() == dev, "patch_topn_l1: ", name, " must be on ",
                    c10::DeviceTypeName(dev), ", got ", t.device());
  TORCH_CHECK_VALUE(t.size(3) <= 1 || t.stride(3) == 1, "patch_topn_l1: ", name,
                    " must have a unit-stride last dimension, got strides ", t.strides());
}

inline PatchGeometry check_patch_forward(const at::Tensor& x, const at::Tensor& y, int64_t patch,
                                         int64_t stride, int64_t n, c10::DeviceType dev) {
  check_float_image(x, "x", dev);
  check_float_image(y, "y", dev);
  TORCH_CHECK_VALUE(x.sizes() == y.sizes(), "patch_topn_l1: x and y must have the same shape, got ",
                    x.sizes(), " and ", y.sizes());
  TORCH_CHECK_TYPE(x.scalar_type() == y.scalar_type(),
                   "patch_topn_l1: x and y must have the same dtype, got ", x.scalar_type(),
                   " and ", y.scalar_type());
  TORCH_CHECK_VALUE(x.device() == y.device(), "patch_topn_l1: x and y must be on the same device, got ",
                    x.device(), " and ", y.device());
  TORCH_CHECK_VALUE(patch >= 1, "patch_topn_l1: patch must be >= 1, got ", patch);
  TORCH_CHECK_VALUE(stride >= 1, "patch_topn_l1: stride must be >= 1, got ", stride);
  TORCH_CHECK_VALUE(n >= 1, "patch_topn_l1: n must be >= 1, got ", n);
  PatchGeometry g{x.size(0), x.size(1), x.size(2), x.size(3), patch, stride, n, 0, 0};
  TORCH_CHECK_VALUE(g.C >= 1, "patch_topn_l1: x must have at least one channel, got ", x.sizes());
  TORCH_CHECK_VALUE(patch <= g.H && patch <= g.W, "patch_topn_l1: patch must be <= the image size, got patch=",
                    patch, " for ", g.H, "x", g.W, " images");
  g.Hp = (g.H - patch) / stride + 1;
  g.Wp = (g.W - patch) / stride + 1;
  TORCH_CHECK_VALUE(n <= g.Hp * g.Wp, "patch_topn_l1: n must be <= the number of windows (",
                    g.Hp * g.Wp, "), got ", n);
  return g;
}

inline PatchGeometry check_patch_backward(const at::Tensor& g_scores, const at::Tensor& g_map,
                                          const at::Tensor& x, const at::Tensor& y,
                                          const at::Tensor& top_idx, int64_t patch, int64_t stride,
                                          c10::DeviceType dev) {
  TORCH_CHECK_VALUE(top_idx.dim() == 2 && top_idx.size(0) == x.size(0),
                    "patch_topn_l1_bwd: top_idx must be (B, n), got ", top_idx.sizes());
  auto g = check_patch_forward(x, y, patch, stride, top_idx.size(1), dev);
  const auto od = out_dtype(x.scalar_type());
  TORCH_CHECK_TYPE(top_idx.scalar_type() == at::kLong, "patch_topn_l1_bwd: top_idx must be int64, got ",
                   top_idx.scalar_type());
  TORCH_CHECK_VALUE(g_scores.dim() == 1 && g_scores.size(0) == g.B,
                    "patch_topn_l1_bwd: g_scores must be (B,)=(", g.B, "), got ", g_scores.sizes());
  TORCH_CHECK_VALUE(g_map.dim() == 3 && g_map.size(0) == g.B && g_map.size(1) == g.Hp &&
                        g_map.size(2) == g.Wp,
                    "patch_topn_l1_bwd: g_map must be (B, Hp, Wp)=(", g.B, ", ", g.Hp, ", ", g.Wp,
                    "), got ", g_map.sizes());
  TORCH_CHECK_TYPE(g_scores.scalar_type() == od && g_map.scalar_type() == od,
                   "patch_topn_l1_bwd: g_scores and g_map must be ", od, ", got ",
                   g_scores.scalar_type(), " and ", g_map.scalar_type());
  for (const at::Tensor* t : {&g_scores, &g_map, &top_idx})
    TORCH_CHECK_VALUE(t->device() == x.device(), "patch_topn_l1_bwd: all tensors must be on ",
                      x.device(), ", got ", t->device());
  return g;
}

}  // namespace anomgan
