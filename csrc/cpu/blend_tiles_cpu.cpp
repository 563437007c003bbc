// Blending of per-tile maps into a float64 accumulator on the CPU.
//
// Algorithm: acc[b, y0 + i, x0 + j] += (maps[k, i, j] * ny[k, i]) * nx[k, j] for every tile k,
// in float64. Work items are bands of accumulator rows (all images' rows, flattened), run with
// at::parallel_for: a band visits the tiles in order k and adds the rows of each tile that fall
// inside it, so no two threads write one element, and every element sums its tiles in tile
// order, exactly as a sequential loop (or index_add_ over the tiles' flat indices) would: the
// result does not depend on the number of threads. The inner loop over j is unit-stride and
// vectorisable.
//
// Memory traffic: maps read once (n t² elements), acc read and written once per covering tile
// (the overlap factor, ~1.7 for tiles overlapping by a quarter), ny and nx O(n t); no
// temporaries (the PyTorch reference materialises n t² float64 values and int64 indices).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../blend_tiles.h"

namespace anomgan {
namespace {

template <typename scalar_t>
void blend_rows(double* acc, const scalar_t* maps, const double* ny, const double* nx,
                const int64_t* org, const BlendGeometry& g, int64_t r0, int64_t r1) {
  const int64_t t = g.t;
  for (int64_t k = 0; k < g.n; ++k) {
    const int64_t row0 = org[3 * k] * g.H + org[3 * k + 1];  // first flattened acc row of tile k
    const int64_t lo = std::max(r0, row0), hi = std::min(r1, row0 + t);
    const double* __restrict__ wx = nx + k * t;
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t i = r - row0;
      const scalar_t* __restrict__ m = maps + (k * t + i) * t;
      double* __restrict__ a = acc + r * g.W + org[3 * k + 2];
      const double wy = ny[k * t + i];
#pragma omp simd
      for (int64_t j = 0; j < t; ++j) a[j] += (double(m[j]) * wy) * wx[j];
    }
  }
}

void blend_tiles_add_cpu(const at::Tensor& acc, const at::Tensor& maps_in, const at::Tensor& ny_in,
                         const at::Tensor& nx_in, const at::Tensor& origins_in) {
  const BlendGeometry g = check_blend_tiles_add(acc, maps_in, ny_in, nx_in, origins_in);
  if (g.n == 0) return;
  const auto maps = maps_in.contiguous();
  const auto ny = ny_in.contiguous(), nx = nx_in.contiguous(), org = origins_in.contiguous();
  double* ap = acc.data_ptr<double>();
  const int64_t rows = g.B * g.H;
  // a band is at least a tile high, so the per-band scan over the tiles stays cheap
  const int64_t grain = std::max<int64_t>(g.t, 16);
  AT_DISPATCH_FLOATING_TYPES(maps.scalar_type(), "blend_tiles_add_cpu", [&] {
    const scalar_t* mp = maps.data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
      blend_rows<scalar_t>(ap, mp, ny.data_ptr<double>(), nx.data_ptr<double>(), org.data_ptr<int64_t>(), g,
                           r0, r1);
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(anomgan, CPU, m) { m.impl("blend_tiles_add", &blend_tiles_add_cpu); }

}  // namespace anomgan
