"""Build anomgan and its kernels.

Always builds the C++ CPU extension ``anomgan._C`` (OpenMP when torch has it, -O3,
vectorisable loops). Adds the CUDA sources (the kernels csrc/cuda/<op>_kernel.cu and their thin
C++ glue csrc/cuda/<op>_cuda.cpp) when torch has CUDA and nvcc is found, or when
ANOMGAN_FORCE_CUDA=1 (or FORCE_CUDA=1). The version is anomgan/__init__.py's __version__.

Install:  pip install -r requirements.txt && pip install --no-build-isolation .
"""
import ast
import glob
import os
import re
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit(
        "anomgan's build needs torch already installed (it compiles against it). Run\n"
        "    pip install -r requirements.txt\n"
        "first, then `pip install --no-build-isolation .`"
    )

HERE = os.path.dirname(os.path.abspath(__file__))


def requirements(kind):
    """Lines of requirements.txt tagged `# kind`, without the tag."""
    out = []
    with open(os.path.join(HERE, "requirements.txt")) as fh:
        for line in fh:
            m = re.match(r"^\s*([^#\s][^#]*?)\s*#\s*(\w+)", line)
            if m and m.group(2) == kind:
                out.append(m.group(1))
    return out


def package_version():
    """__version__ of anomgan/__init__.py, read as text: importing anomgan needs the extension
    this script builds."""
    with open(os.path.join(HERE, "anomgan", "__init__.py")) as fh:
        m = re.search(r"^__version__\s*=\s*(.*)$", fh.read(), re.MULTILINE)
    if m is None:
        sys.exit("setup.py: anomgan/__init__.py has no `__version__ = ...` line")
    return ast.literal_eval(m.group(1).strip())


def want_cuda():
    if any(os.environ.get(v, "0") == "1" for v in ("ANOMGAN_FORCE_CUDA", "FORCE_CUDA")):
        return True
    return torch.cuda.is_available() and CUDA_HOME is not None


def extensions():
    cxx_flags = ["-O3", "-std=c++20", "-fno-math-errno", "-ffp-contract=fast"]
    link_flags = []
    if torch.backends.openmp.is_available():
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    if want_cuda():
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        nvcc_flags = ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo"]
        return [
            CUDAExtension(
                "anomgan._C",
                sources,
                define_macros=[("ANOMGAN_WITH_CUDA", "1")],
                extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
                extra_link_args=link_flags,
            )
        ]
    return [
        CppExtension(
            "anomgan._C",
            sources,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
        )
    ]


setup(
    name="anomgan",
    version=package_version(),
    description="GAN-based visual anomaly detection for industrial inspection, with fused kernels",
    packages=find_packages(include=["anomgan", "anomgan.*"]),
    package_data={"anomgan": ["demo_data/*.npz"]},
    python_requires=">=3.10",
    install_requires=requirements("runtime"),
    # pip install anomgan[export] / anomgan[pretrained]
    extras_require={"export": requirements("export"), "pretrained": requirements("pretrained")},
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    entry_points={"console_scripts": ["anomgan=anomgan.apps.cli:main"]},
)
