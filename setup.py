"""The compiled parts: kvwhisper/cpu/_kernels.c and _amx.c, each optional (everything else is in pyproject.toml).

Where it cannot be built (no C compiler, not x86-64), the install goes on without it and the decode step
runs on torch's own operations (oneDNN products, scaled_dot_product_attention): see kvwhisper/cpu/kernels.py.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            f"kvwhisper.cpu.{name}",
            sources=[f"kvwhisper/cpu/{name}.c"],
            extra_compile_args=["-O3", "-fopenmp"],
            extra_link_args=["-fopenmp"],
            optional=True,
        )
        for name in ("_kernels", "_amx")
    ]
)
