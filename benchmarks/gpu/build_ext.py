"""Build jdct's C extension in place from setup.py's own Extension list, without the package metadata.

The GPU run's fallback when ``python setup.py build_ext --inplace`` fails on the GPU image for a
reason outside the extension (an older setuptools than pyproject.toml's build requirement refuses
its metadata, for instance): setup.py is executed with ``setuptools.setup`` capturing its
arguments, and only ``ext_modules`` (with whatever ``cmdclass`` it declares) are built, by a bare
``Distribution`` that never reads pyproject.toml. Same sources, flags and libraries as setup.py.
"""
from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def main() -> int:
    import setuptools
    from setuptools import Distribution

    captured: dict = {}
    real_setup = setuptools.setup
    setuptools.setup = lambda **kw: captured.update(kw)
    os.chdir(REPO)
    argv = sys.argv
    sys.argv = ["setup.py", "build_ext", "--inplace"]  # setup.py checks the headers only when building
    try:
        runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = real_setup
        sys.argv = argv
    if not captured.get("ext_modules"):
        print("setup.py declared no ext_modules", file=sys.stderr)
        return 1
    dist = Distribution({"name": "jdct", "ext_modules": captured["ext_modules"],
                         "cmdclass": captured.get("cmdclass", {})})
    cmd = dist.get_command_obj("build_ext")
    cmd.inplace = 1
    dist.run_command("build_ext")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
