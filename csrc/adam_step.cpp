// Schema of the batched in-place Adam step (AnoGAN latent search). Implementations register per
// device: csrc/cpu/adam_step_cpu.cpp (CPU), csrc/cuda/adam_step_cuda.cpp (CUDA). The fake
// kernel is registered from Python (anomgan/ops/_fakes.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(anomgan, m) {
  // z, grad, exp_avg, exp_avg_sq: (B, D) float32/float64, any strides; step (B,) int64; active
  // (B,) bool; lr_tensor: None (then every sample uses lr) or (B,) float64. For each active
  // sample: step += 1, then torch.optim.Adam's update of z, exp_avg and exp_avg_sq in place.
  // Inactive samples are not written. Reads nothing back to the host.
  m.def("adam_step(Tensor(a!) z, Tensor grad, Tensor(b!) exp_avg, Tensor(c!) exp_avg_sq,"
        " Tensor(d!) step, Tensor active, Tensor? lr_tensor, float lr, float beta1, float beta2,"
        " float eps) -> ()");
}
