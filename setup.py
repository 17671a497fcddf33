"""The one compiled part: kvwhisper/engine/_halfgemv.c, optional (everything else is in pyproject.toml).

Where it cannot be built (no C compiler, not x86-64), the install goes on without it and the decoder's
products run through oneDNN as before (kvwhisper/engine/packed.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "kvwhisper.engine._halfgemv",
            sources=["kvwhisper/engine/_halfgemv.c"],
            extra_compile_args=["-O3", "-fopenmp"],
            extra_link_args=["-fopenmp"],
            optional=True,
        )
    ]
)
