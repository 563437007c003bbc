// Batched in-place Adam step on the CPU.
//
// Algorithm. Work items are samples, run with at::parallel_for (OpenMP) in groups of enough
// elements to be worth a thread. An inactive sample is skipped (nothing written). An active one
// increments its step t, computes its bias corrections 1 - beta1^t and sqrt(1 - beta2^t) and its
// step size lr / (1 - beta1^t) in double (as torch.optim.Adam does on the host), then walks its D
// elements once with torch's element arithmetic in z's dtype: lerp for exp_avg,
// fma((1-beta2)*g, g, v*beta2) for exp_avg_sq, z + (-step_size*m) / (sqrt(v)/bc2_sqrt + eps).
//
// Memory traffic: reads z, grad and both moments once and writes z and the moments once
// (7·B·D elements for active samples), plus B steps, flags and learning rates.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "../adam_step.h"

namespace anomgan {
namespace {

void adam_step_cpu(const at::Tensor& z, const at::Tensor& grad, const at::Tensor& exp_avg,
                   const at::Tensor& exp_avg_sq, const at::Tensor& step, const at::Tensor& active,
                   const c10::optional<at::Tensor>& lr_tensor, double lr, double beta1, double beta2,
                   double eps) {
  const AdamGeometry g = check_adam_step(z, grad, exp_avg, exp_avg_sq, step, active, lr_tensor, lr,
                                         beta1, beta2, eps, c10::DeviceType::CPU);
  if (g.B == 0) return;
  int64_t* stp = step.mutable_data_ptr<int64_t>();
  const int64_t ss = step.stride(0);
  const bool* actp = active.const_data_ptr<bool>();
  const int64_t as = active.stride(0);
  const double* lrp = lr_tensor.has_value() ? lr_tensor->const_data_ptr<double>() : nullptr;
  const int64_t ls = lr_tensor.has_value() ? lr_tensor->stride(0) : 0;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, g.D));
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "adam_step_cpu", [&] {
    using T = scalar_t;
    T* zp = z.mutable_data_ptr<T>();
    const T* gp = grad.const_data_ptr<T>();
    T* mp = exp_avg.mutable_data_ptr<T>();
    T* vp = exp_avg_sq.mutable_data_ptr<T>();
    const int64_t z0 = z.stride(0), z1 = z.stride(1), g0 = grad.stride(0), g1 = grad.stride(1);
    const int64_t m0 = exp_avg.stride(0), m1 = exp_avg.stride(1);
    const int64_t v0 = exp_avg_sq.stride(0), v1 = exp_avg_sq.stride(1);
    // torch rounds the Python-float scalars to the tensor's dtype
    const T w1 = T(1.0 - beta1), b2 = T(beta2), w2 = T(1.0 - beta2), epsT = T(eps);
    const bool w1_small = std::abs(1.0 - beta1) < 0.5;  // lerp's two formulas, as torch picks
    at::parallel_for(0, g.B, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        if (!actp[b * as]) continue;
        const int64_t t = stp[b * ss] + 1;
        stp[b * ss] = t;
        const double bc1 = 1.0 - std::pow(beta1, double(t));
        const double bc2_sqrt = std::sqrt(1.0 - std::pow(beta2, double(t)));
        const double lr_b = lrp ? lrp[b * ls] : lr;
        const T neg_step = T(-(lr_b / bc1)), bc2s = T(bc2_sqrt);
        T* zb = zp + b * z0;
        const T* gb = gp + b * g0;
        T* mb = mp + b * m0;
        T* vb = vp + b * v0;
        for (int64_t d = 0; d < g.D; ++d) {
          const T gr = gb[d * g1];
          const T m_old = mb[d * m1];
          // torch's CPU lerp and addcmul round once per fused multiply-add
          const T m = w1_small ? std::fma(w1, gr - m_old, m_old) : std::fma(-(T(1) - w1), gr - m_old, gr);
          const T v = std::fma(w2 * gr, gr, vb[d * v1] * b2);
          const T denom = std::sqrt(v) / bc2s + epsT;
          zb[d * z1] = zb[d * z1] + neg_step * m / denom;
          mb[d * m1] = m;
          vb[d * v1] = v;
        }
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(anomgan, CPU, m) { m.impl("adam_step", &adam_step_cpu); }

}  // namespace anomgan
