// Fused residual + feature-matching loss on the CPU.
//
// Algorithm (forward). Each sample's two pairs (x, gz) and (fx, fgz) are cut into chunks of
// kChunk elements; the work items (sample, pair, chunk) run with at::parallel_for (OpenMP).
// A chunk sums |a - b| in blocks of kBlock elements accumulated in float (double for float64)
// by a vectorised loop, each block sum added into a double; the chunk's double partial goes to
// its own slot, and each sample's loss is then wr * (sum of its x-chunks) + wf * (sum of its
// f-chunks), summed in chunk order (deterministic, independent of the thread count).
//
// Algorithm (backward). One elementwise pass over the same work items:
// grad_gz = g[b] * wr * sign(gz - x), grad_fgz = g[b] * wf * sign(fgz - fx), sign(0) = 0.
//
// Memory traffic: forward reads the four inputs once (2·B·(N + M) elements) and writes B
// floats; backward reads them once and writes grad_gz and grad_fgz once (B·(N + M) elements).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../poison.h"
#include "../residual_fm_loss.h"

namespace anomgan {
namespace {

constexpr int64_t kChunk = 1 << 15;  // elements per work item
constexpr int64_t kBlock = 256;      // elements per float partial sum

template <typename scalar_t>
using acc_type_t = typename std::conditional<std::is_same<scalar_t, double>::value, double, float>::type;

// sum over [0, n) of |a - b|: float blocks of kBlock, double across blocks.
template <typename scalar_t>
double abs_diff_sum(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, int64_t n) {
  using acc_t = acc_type_t<scalar_t>;
  double total = 0.0;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = std::min(n, i0 + kBlock);
    acc_t s = acc_t(0);
#pragma omp simd reduction(+ : s)
    for (int64_t i = i0; i < i1; ++i) s += std::abs(acc_t(a[i]) - acc_t(b[i]));
    total += double(s);
  }
  return total;
}

// out[i] = scale * sign(b[i] - a[i]), sign(0) = sign(NaN) = 0.
template <typename scalar_t>
void sign_scale(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, acc_type_t<scalar_t> scale,
                int64_t n, scalar_t* __restrict__ out) {
  using acc_t = acc_type_t<scalar_t>;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const acc_t d = acc_t(b[i]) - acc_t(a[i]);
    out[i] = scalar_t(scale * acc_t((d > acc_t(0)) - (d < acc_t(0))));
  }
}

// Work items: for each sample, cx chunks of the (x, gz) pair then cf chunks of (fx, fgz).
// grain: items per task so that a task has >= kChunk elements (tiny batches run on one thread).
struct Items {
  int64_t cx, cf, per_sample, grain;
  explicit Items(const ResidualFMGeometry& g)
      : cx((g.N + kChunk - 1) / kChunk), cf((g.M + kChunk - 1) / kChunk), per_sample(cx + cf),
        grain(std::max<int64_t>(1, kChunk * per_sample / (g.N + g.M))) {}
};

at::Tensor residual_fm_loss_fwd_cpu(const at::Tensor& x, const at::Tensor& gz, const at::Tensor& fx,
                                    const at::Tensor& fgz, double lam, c10::string_view reduction) {
  const ResidualFMGeometry g = check_residual_fm(x, gz, fx, fgz, lam, reduction, c10::DeviceType::CPU);
  const auto od = out_dtype(x.scalar_type());
  at::Tensor loss = new_output({g.B}, x.options().dtype(od));
  if (g.B == 0) return loss;
  const Items it(g);
  std::vector<double> partial(size_t(g.B * it.per_sample));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "residual_fm_loss_fwd_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gzp = gz.const_data_ptr<scalar_t>();
    const scalar_t* fxp = fx.const_data_ptr<scalar_t>();
    const scalar_t* fgzp = fgz.const_data_ptr<scalar_t>();
    at::parallel_for(0, g.B * it.per_sample, it.grain, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = t / it.per_sample, c = t % it.per_sample;
        if (c < it.cx) {
          const int64_t i0 = c * kChunk, len = std::min(kChunk, g.N - i0);
          partial[t] = abs_diff_sum(xp + b * g.sx + i0, gzp + b * g.sgz + i0, len);
        } else {
          const int64_t i0 = (c - it.cx) * kChunk, len = std::min(kChunk, g.M - i0);
          partial[t] = abs_diff_sum(fxp + b * g.sfx + i0, fgzp + b * g.sfgz + i0, len);
        }
      }
    });
  });
  AT_DISPATCH_FLOATING_TYPES(od, "residual_fm_loss_fwd_cpu_out", [&] {
    scalar_t* lp = loss.mutable_data_ptr<scalar_t>();
    for (int64_t b = 0; b < g.B; ++b) {
      const double* p = partial.data() + b * it.per_sample;
      double r = 0.0, f = 0.0;
      for (int64_t c = 0; c < it.cx; ++c) r += p[c];
      for (int64_t c = it.cx; c < it.per_sample; ++c) f += p[c];
      lp[b] = scalar_t(g.wr * r + g.wf * f);
    }
  });
  return loss;
}

std::tuple<at::Tensor, at::Tensor> residual_fm_loss_bwd_cpu(const at::Tensor& grad_in, const at::Tensor& x,
                                                           const at::Tensor& gz, const at::Tensor& fx,
                                                           const at::Tensor& fgz, double lam,
                                                           c10::string_view reduction) {
  const ResidualFMGeometry g =
      check_residual_fm_backward(grad_in, x, gz, fx, fgz, lam, reduction, c10::DeviceType::CPU);
  at::Tensor grad_gz = new_grad_like(gz), grad_fgz = new_grad_like(fgz);
  if (g.B == 0) return {grad_gz, grad_fgz};
  const Items it(g);
  // per-sample scales in double: g[b] * wr and g[b] * wf
  std::vector<double> sr(g.B), sf(g.B);
  AT_DISPATCH_FLOATING_TYPES(grad_in.scalar_type(), "residual_fm_loss_bwd_scales", [&] {
    const scalar_t* gp = grad_in.const_data_ptr<scalar_t>();
    const int64_t gs = grad_in.stride(0);
    for (int64_t b = 0; b < g.B; ++b) {
      sr[b] = double(gp[b * gs]) * g.wr;
      sf[b] = double(gp[b * gs]) * g.wf;
    }
  });
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "residual_fm_loss_bwd_cpu", [&] {
    using acc_t = acc_type_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gzp = gz.const_data_ptr<scalar_t>();
    const scalar_t* fxp = fx.const_data_ptr<scalar_t>();
    const scalar_t* fgzp = fgz.const_data_ptr<scalar_t>();
    scalar_t* ggp = grad_gz.mutable_data_ptr<scalar_t>();
    scalar_t* gfp = grad_fgz.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, g.B * it.per_sample, it.grain, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = t / it.per_sample, c = t % it.per_sample;
        if (c < it.cx) {
          const int64_t i0 = c * kChunk, len = std::min(kChunk, g.N - i0);
          sign_scale(xp + b * g.sx + i0, gzp + b * g.sgz + i0, acc_t(sr[b]), len, ggp + b * g.N + i0);
        } else {
          const int64_t i0 = (c - it.cx) * kChunk, len = std::min(kChunk, g.M - i0);
          sign_scale(fxp + b * g.sfx + i0, fgzp + b * g.sfgz + i0, acc_t(sf[b]), len, gfp + b * g.M + i0);
        }
      }
    });
  });
  return {grad_gz, grad_fgz};
}

}  // namespace

TORCH_LIBRARY_IMPL(anomgan, CPU, m) {
  m.impl("residual_fm_loss_fwd", &residual_fm_loss_fwd_cpu);
  m.impl("residual_fm_loss_bwd", &residual_fm_loss_bwd_cpu);
}

}  // namespace anomgan
