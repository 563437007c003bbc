// The Python module anomgan._C. Importing it loads this shared library, whose static
// initialisers register the anomgan:: ops (TORCH_LIBRARY_FRAGMENT in each op's file) with the
// dispatcher. It exposes no Python functions of its own: everything is under torch.ops.anomgan.
#include <Python.h>

#include <torch/library.h>

#include "poison.h"

namespace anomgan {
std::atomic<bool>& poison_outputs_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}
}  // namespace anomgan

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

namespace {
bool built_with_cuda() {
#ifdef ANOMGAN_WITH_CUDA
  return true;
#else
  return false;
#endif
}
bool set_poison_outputs(bool on) { return anomgan::poison_outputs_flag().exchange(on); }
}  // namespace

TORCH_LIBRARY_FRAGMENT(anomgan, m) {
  m.def("built_with_cuda() -> bool", &built_with_cuda);
  // Tests: make every kernel output start as NaN / a sentinel. Returns the previous setting.
  m.def("set_poison_outputs(bool on) -> bool", &set_poison_outputs);
}
