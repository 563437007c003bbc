// Output allocation for every anomgan kernel (CPU and CUDA glue). In tests, poisoning is
// switched on (torch.ops.anomgan.set_poison_outputs) so that every output starts as NaN (floats)
// or a sentinel (integers): an element a kernel forgets to write shows up instead of passing as
// whatever at::empty happened to hold.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <limits>

namespace anomgan {

std::atomic<bool>& poison_outputs_flag();  // defined in csrc/module.cpp

constexpr int64_t kPoisonInt = -1234567891;

inline at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
  if (poison_outputs_flag().load(std::memory_order_relaxed)) {
    if (at::isFloatingType(t.scalar_type()))
      t.fill_(std::numeric_limits<double>::quiet_NaN());
    else
      t.fill_(kPoisonInt);
  }
  return t;
}

// dtype of the float outputs (scores, maps, losses) for inputs of dtype `in`: double for double,
// else float (half/bfloat16 inputs are accumulated and returned in float). Python: out_dtype in
// anomgan/ops/_backends.py.
inline at::ScalarType out_dtype(at::ScalarType in) {
  return in == at::kDouble ? at::kDouble : at::kFloat;
}

// A gradient output: t's shape, dtype and device, contiguous (whatever t's strides).
inline at::Tensor new_grad_like(const at::Tensor& t) {
  return new_output(t.sizes(), t.options().memory_format(at::MemoryFormat::Contiguous));
}

}  // namespace anomgan
