"""Package list and the one compiled module for setuptools; everything else is in pyproject.toml.

The hardware profiles have one home, the top-level ``hw_profiles/`` folder. It
is mapped into the package as ``edgeagent.hw_profiles`` so that a wheel (and a
plain ``pip install .``) carries them as package data; an editable install or a
source checkout reads the folder itself (see ``edgeagent.profiles``).
"""

from setuptools import Extension, find_namespace_packages, setup

setup(
    # Namespace discovery, so a sub-package without __init__.py is not silently left out.
    packages=[
        *find_namespace_packages(include=["edgeagent", "edgeagent.*"], exclude=["*__pycache__*"]),
        "edgeagent.hw_profiles",
    ],
    package_dir={"edgeagent.hw_profiles": "hw_profiles"},
    # the work between the kernels of a decoded token (edgeagent/engine/_glue.c): plain C at
    # the platform's baseline instruction set, so the aarch64 build runs on every board
    ext_modules=[
        Extension(
            "edgeagent.engine._glue",
            sources=["edgeagent/engine/_glue.c"],
            # -ffp-contract=fast: fused multiply-adds where the target has them (every aarch64
            # core; ISO C mode would turn them off), none on baseline x86-64
            extra_compile_args=["-O3", "-std=c99", "-ffp-contract=fast", "-Wall", "-Wextra"],
        )
    ],
    package_data={
        "edgeagent.hw_profiles": ["*.toml"],
        "edgeagent.demo": ["speech.wav", "speech.json"],  # the clip `edgeagent demo` plays
    },
)
