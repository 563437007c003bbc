// Launcher of the batched Adam step CUDA kernel (csrc/cuda/adam_step_kernel.cu). Plain pointers
// and a stream, no torch types: the .cu compiles with nvcc alone. The caller
// (csrc/cuda/adam_step_cuda.cpp) has checked every argument.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace anomgan {
namespace cuda {

struct AdamArgs {
  bool is_double;        // element type of z, grad, exp_avg, exp_avg_sq: double, else float
  void* z;
  const void* grad;
  void* exp_avg;
  void* exp_avg_sq;
  int64_t* step;         // (B,) incremented for active samples
  const bool* active;    // (B,)
  const double* lr_per_sample;  // (B,) or nullptr: then every sample uses lr
  int64_t B, D;
  int64_t zs0, zs1, gs0, gs1, ms0, ms1, vs0, vs1, ss, as, ls;  // strides in elements
  double lr, beta1, beta2, eps;
};

// One block per sample; reads nothing back to the host (capturable in a CUDA graph).
cudaError_t launch_adam_step(const AdamArgs& a, cudaStream_t stream);

}  // namespace cuda
}  // namespace anomgan
