// Launchers of the residual_fm_loss CUDA kernels (csrc/cuda/residual_fm_loss_kernel.cu). Plain
// pointers and a stream, no torch types: the .cu compiles with nvcc alone. The caller
// (csrc/cuda/residual_fm_loss_cuda.cpp) has checked every argument.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace anomgan {
namespace cuda {

// Element type of x, gz, fx, fgz (and of the gradients). Losses, partial sums and the incoming
// gradient are double for F64, else float.
enum class FloatKind : int { F32 = 0, F64 = 1, F16 = 2, BF16 = 3 };

struct ResidualFMArgs {
  FloatKind kind;
  const void* x;
  const void* gz;
  const void* fx;
  const void* fgz;
  int64_t B, N, M;             // batch, elements per sample of x/gz, of fx/fgz
  int64_t sx, sgz, sfx, sfgz;  // batch strides in elements; each sample's elements contiguous
  double wr, wf;               // loss = wr * sum|x - gz| + wf * sum|fx - fgz|
};

// Bytes of device workspace the forward needs (per-chunk partial sums).
size_t residual_fm_loss_workspace_bytes(const ResidualFMArgs& a);

// loss: (B,) float (double for F64). workspace: residual_fm_loss_workspace_bytes(a) bytes.
cudaError_t launch_residual_fm_loss_fwd(const ResidualFMArgs& a, void* loss, void* workspace,
                                        cudaStream_t stream);

// g: (B,) contiguous float (double for F64). grad_gz: B*N and grad_fgz: B*M contiguous
// elements of the input type: grad_gz = g*wr*sign(gz - x), grad_fgz = g*wf*sign(fgz - fx).
cudaError_t launch_residual_fm_loss_bwd(const ResidualFMArgs& a, const void* g, void* grad_gz,
                                        void* grad_fgz, cudaStream_t stream);

}  // namespace cuda
}  // namespace anomgan
