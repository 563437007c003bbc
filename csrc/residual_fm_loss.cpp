// Schemas of the fused residual + feature-matching loss ops (AnoGAN latent search).
// Implementations register per device: csrc/cpu/residual_fm_loss_cpu.cpp (CPU),
// csrc/cuda/residual_fm_loss_cuda.cpp (CUDA). Autograd is registered from Python
// (anomgan/ops/residual_fm_loss.py), the fake kernels too (anomgan/ops/_fakes.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(anomgan, m) {
  // x, gz: (B, ...) one shape; fx, fgz: (B, ...) one shape; one float dtype; each sample's
  // elements contiguous (any batch stride). reduction: "mean" or "sum". Returns the per-sample
  // loss (B,), float32 (float64 for float64 inputs).
  m.def("residual_fm_loss_fwd(Tensor x, Tensor gz, Tensor fx, Tensor fgz, float lam, str reduction)"
        " -> Tensor");
  // Gradients w.r.t. gz and fgz of <g, loss>: contiguous, in the inputs' dtype.
  m.def("residual_fm_loss_bwd(Tensor g, Tensor x, Tensor gz, Tensor fx, Tensor fgz, float lam,"
        " str reduction) -> (Tensor grad_gz, Tensor grad_fgz)");
}
