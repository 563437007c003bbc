// Schemas of the patch-wise top-n L1 ops. Implementations register per device:
// csrc/cpu/patch_topn_l1_cpu.cpp (CPU), csrc/cuda/patch_topn_l1_cuda.cpp (CUDA).
// Autograd is registered from Python (anomgan/ops/patch_topn_l1.py), the fake kernels too
// (anomgan/ops/_fakes.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(anomgan, m) {
  // x, y: (B, C, H, W), last dim unit-stride. Returns scores (B,), patch_map (B, Hp, Wp) and
  // the flat indices (i*Wp + j) of the n selected windows (B, n), ties to the lowest index.
  m.def("patch_topn_l1_fwd(Tensor x, Tensor y, int patch, int stride, int n)"
        " -> (Tensor scores, Tensor patch_map, Tensor top_idx)");
  // Gradient w.r.t. y of <g_scores, scores> + <g_map, patch_map>; contiguous, y's dtype.
  m.def("patch_topn_l1_bwd(Tensor g_scores, Tensor g_map, Tensor x, Tensor y, Tensor top_idx,"
        " int patch, int stride) -> Tensor");
}
