"""Build hook for the optional C selection kernels of ExactIndex (everything else is in pyproject.toml).

``optional=True``: without a C compiler the install still succeeds and ExactIndex uses
its numba kernels (same results; ~0.3 s more start-up per command, see
src/fmrec/index/_cbackend.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "fmrec.index._ctopk",
            sources=["src/fmrec/index/_ctopk.c"],
            depends=["src/fmrec/index/_ctopk_impl.h"],
            extra_compile_args=["-O3", "-std=c99"],
            libraries=["m"],
            optional=True,
        )
    ]
)
