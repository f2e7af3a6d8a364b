"""Builds the optional C kernels of the alignment core (DTW) and of the affinity stream.

`optional=True`: where no C compiler is available the install still succeeds and
`actalign.align` falls back to its vectorised numpy implementation (same results).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "actalign._dtw",
            sources=["src/actalign/_dtw.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        Extension(
            "actalign._affinity",
            sources=["src/actalign/_affinity.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
    ]
)
