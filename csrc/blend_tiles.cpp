// Schema of the tile-blending accumulation (anomgan/scoring/tiling.py). CPU implementation:
// csrc/cpu/blend_tiles_cpu.cpp; on other devices the PyTorch reference runs. The fake kernel
// is registered from Python (anomgan/ops/_fakes.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(anomgan, m) {
  // acc: (B, H, W) float64 contiguous, updated in place; maps: (n, t, t) float32/float64; ny, nx:
  // (n, t) float64; origins: (n, 3) int64 (image, y0, x0) of each tile, every tile inside acc.
  // acc[b, y0 + i, x0 + j] += (maps[k, i, j] * ny[k, i]) * nx[k, j], tiles added in order k.
  m.def("blend_tiles_add(Tensor(a!) acc, Tensor maps, Tensor ny, Tensor nx, Tensor origins) -> ()");
}
