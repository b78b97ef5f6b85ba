"""Builds the one C extension, ``jdct_cli._decoder``; all metadata lives in pyproject.toml.

The extension is jdct's C layer (``csrc/*.c``, plain C over libjpeg-turbo) plus its Cython
binding (``_decoder.pyx``). With GCC or Clang both are compiled at ``-O3`` with ``-Wall -Wextra``
and are free of warnings (``make check-c`` compiles ``csrc/`` with ``-Werror``); other compilers
get their defaults. ``JDCT_CFLAGS`` adds flags (e.g. sanitizers: ``make asan``).

libjpeg-turbo is found with ``pkg-config libjpeg``; set ``JDCT_LIBJPEG_PREFIX`` to a prefix
(containing ``include/jpeglib.h`` and ``lib/libjpeg.so``) to use another build.
"""
import os
import shlex
import shutil
import subprocess
import sys
from glob import glob

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MISSING_HEADER = (
    "jdct needs libjpeg-turbo's headers (jpeglib.h) and none were found: install them with "
    "`apt-get install -y libjpeg62-turbo-dev` (Debian/Ubuntu: libjpeg-turbo8-dev; Fedora: "
    "libjpeg-turbo-devel; macOS: brew install jpeg-turbo) or set JDCT_LIBJPEG_PREFIX to its prefix."
)

C_SOURCES = sorted(glob("csrc/*.c"))
#: Flags for GCC and Clang: optimisation, the warnings csrc/ is kept free of, and POSIX threads
#: (csrc/jd_rect.c decodes batches on threads of its own).
GNU_FLAGS = ["-O3", "-Wall", "-Wextra", "-pthread"]


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


def compiler_family(compiler) -> str:
    """"gcc", "clang" or "other" for a setuptools compiler object (asks ``cc --version`` when
    the executable's name does not say)."""
    if getattr(compiler, "compiler_type", "") != "unix":
        return "other"
    exe = list(getattr(compiler, "compiler_so", None) or ["cc"])
    name = os.path.basename(exe[0])
    if "clang" in name:
        return "clang"
    if "gcc" in name:
        return "gcc"
    try:
        out = subprocess.run(exe[:1] + ["--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "other"
    if "clang" in out:
        return "clang"
    if "Free Software Foundation" in out or "gcc" in out.lower():
        return "gcc"
    return "other"


class BuildExt(build_ext):
    """build_ext choosing the flags for the compiler actually used (see the module docstring)."""

    def build_extensions(self):
        family = compiler_family(self.compiler)
        extra = shlex.split(os.environ.get("JDCT_CFLAGS", ""))
        for ext in self.extensions:
            gnu = family in ("gcc", "clang")
            ext.extra_compile_args = (GNU_FLAGS if gnu else []) + extra
            ext.extra_link_args = (["-pthread"] if gnu else []) + [f for f in extra if f.startswith("-fsanitize")]
        super().build_extensions()


include_dirs, library_dirs, libraries = libjpeg_flags()
building = any(cmd in sys.argv for cmd in ("build_ext", "build", "bdist_wheel", "develop", "install", "editable_wheel"))
if building:
    check_header(include_dirs)

from Cython.Build import cythonize  # noqa: E402  (imported late: the header check must speak first)

extensions = [
    Extension(
        "jdct_cli._decoder",
        sources=["_decoder.pyx"] + C_SOURCES,
        depends=sorted(glob("csrc/*.h")) + ["jdct_c.pxd", "jpeglib.pxd"],
        include_dirs=["csrc"] + include_dirs + [numpy.get_include()],
        library_dirs=library_dirs,
        libraries=libraries,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(ext_modules=cythonize(extensions, language_level=3,
                            compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True}),
      cmdclass={"build_ext": BuildExt})
