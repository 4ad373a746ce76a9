"""The one compiled piece: exec/_spawn.c, how a node starts a launch's commands (the rest of the
project is in pyproject.toml). Optional: where it cannot be built, exec/spawn.py starts them
from Python, the same way, only slower."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("brasil.exec._spawn", ["src/brasil/exec/_spawn.c"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra"],
                             optional=True)])
