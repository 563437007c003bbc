// What the CUDA glue files (csrc/cuda/<op>_cuda.cpp) share around a launcher call: device
// workspace from torch's caching allocator, and a launcher's error turned into a c10::Error.
// Included by the glue only (torch headers): the kernels (<op>_kernel.cu) compile with nvcc alone.
#pragma once

#include <cuda_runtime_api.h>
#include <torch/types.h>

#include <cstddef>

namespace anomgan {

// `bytes` of scratch on like's device, from torch's caching allocator (stream-ordered: no sync).
inline at::Tensor workspace(size_t bytes, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
}

// Raises (RuntimeError in Python) when a launcher returned an error.
inline void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorName(err), " (",
              cudaGetErrorString(err), ")");
}

}  // namespace anomgan
