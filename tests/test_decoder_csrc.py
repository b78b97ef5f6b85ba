"""The C layer (csrc/) is plain C that C tools see: it compiles warning-free with -Wall -Wextra
-Wpedantic -Werror (as ``make check-c`` does), and the sanitizer harness compiles too.

``make asan`` goes further (AddressSanitizer + UBSan over the harness and the decoder tests); it is
slow, so it is a make target, not a test.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted((REPO / "csrc").glob("*.c")) + [REPO / "tests" / "csrc" / "harness.c"]
CC = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"


def _jpeg_cflags() -> list[str]:
    try:
        out = subprocess.run(["pkg-config", "--cflags", "libjpeg"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    return out.stdout.split()


@pytest.mark.skipif(shutil.which(CC.split()[0]) is None, reason=f"no C compiler ({CC}) to check csrc/ with")
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_c_layer_compiles_without_warnings(source, tmp_path):
    cmd = CC.split() + ["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-O2", "-I", str(REPO / "csrc"),
                        *_jpeg_cflags(), "-c", str(source), "-o", str(tmp_path / "out.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"
    assert proc.stderr == ""


def test_c_sources_hold_no_python():
    """The binding is the only place that knows Python: csrc/ includes no Python or numpy header."""
    for path in sorted((REPO / "csrc").iterdir()):
        text = path.read_text()
        assert "Python.h" not in text and "numpy" not in text and "Py_" not in text, path
