"""Builds the one C extension, ``jdct_cli._decoder``; all metadata lives in pyproject.toml.

libjpeg-turbo is found with ``pkg-config libjpeg``; set ``JDCT_LIBJPEG_PREFIX`` to a prefix
(containing ``include/jpeglib.h`` and ``lib/libjpeg.so``) to use another build.
"""
import os
import shutil
import subprocess
import sys

import numpy
from setuptools import Extension, setup

MISSING_HEADER = (
    "jdct needs libjpeg-turbo's headers (jpeglib.h) and none were found: install them with "
    "`apt-get install -y libjpeg62-turbo-dev` (Debian/Ubuntu: libjpeg-turbo8-dev; Fedora: "
    "libjpeg-turbo-devel; macOS: brew install jpeg-turbo) or set JDCT_LIBJPEG_PREFIX to its prefix."
)


def _pkg_config(*args):
    if shutil.which("pkg-config") is None:
        return None
    try:
        out = subprocess.run(["pkg-config", *args, "libjpeg"], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError:
        return None
    return out.stdout.split()


def libjpeg_flags():
    """Include dirs, library dirs and libraries to link libjpeg-turbo (prefix env var wins)."""
    prefix = os.environ.get("JDCT_LIBJPEG_PREFIX")
    if prefix:
        include_dirs = [os.path.join(prefix, "include")]
        library_dirs = [os.path.join(prefix, d) for d in ("lib", "lib64") if os.path.isdir(os.path.join(prefix, d))]
        return include_dirs, library_dirs, ["jpeg"]
    cflags = _pkg_config("--cflags") or []
    libs = _pkg_config("--libs") or ["-ljpeg"]
    include_dirs = [f[2:] for f in cflags if f.startswith("-I")]
    library_dirs = [f[2:] for f in libs if f.startswith("-L")]
    libraries = [f[2:] for f in libs if f.startswith("-l")] or ["jpeg"]
    return include_dirs, library_dirs, libraries


def check_header(include_dirs):
    candidates = include_dirs + ["/usr/include", "/usr/local/include", "/opt/homebrew/include"]
    if not any(os.path.exists(os.path.join(d, "jpeglib.h")) for d in candidates):
        sys.exit(MISSING_HEADER)


include_dirs, library_dirs, libraries = libjpeg_flags()
building = any(cmd in sys.argv for cmd in ("build_ext", "build", "bdist_wheel", "develop", "install", "editable_wheel"))
if building:
    check_header(include_dirs)

from Cython.Build import cythonize  # noqa: E402  (imported late: the header check must speak first)

extensions = [
    Extension(
        "jdct_cli._decoder",
        sources=["_decoder.pyx"],
        include_dirs=include_dirs + [numpy.get_include()],
        library_dirs=library_dirs,
        libraries=libraries,
        extra_compile_args=["-O3"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(ext_modules=cythonize(extensions, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True}))
