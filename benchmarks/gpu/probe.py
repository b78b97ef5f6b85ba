"""Facts about the machine the GPU run ran on, as one JSON line on stdout (set-up of the GPU run).

Python, CPU, memory, torch and its CUDA/cuDNN/NCCL, the GPU (name, capability, memory,
multiprocessors) and its clocks, power and driver as ``nvidia-smi`` reads them, the versions of
the packages the run uses and of the libjpeg-turbo jdct was built against. Anything that cannot
be read is left out or null; nothing here changes the machine.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

PACKAGES = ("numpy", "zarr", "numcodecs", "pillow", "torchvision", "cython", "setuptools", "matplotlib", "pytest",
            "psutil", "scikit-image")
SMI_FIELDS = ("name", "driver_version", "memory.total", "clocks.sm", "clocks.max.sm", "clocks.mem",
              "temperature.gpu", "power.draw", "power.limit", "utilization.gpu")


def main() -> None:
    facts: dict = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
                   "cpu_model": _cpu_model(), "memory_bytes": _mem_total()}
    facts["packages"] = {}
    for name in PACKAGES:
        try:
            facts["packages"][name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            facts["packages"][name] = None
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["torch_cuda"] = torch.version.cuda
        facts["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        facts["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            facts["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_bytes": p.total_memory,
                            "multiprocessors": p.multi_processor_count, "count": torch.cuda.device_count()}
            try:
                facts["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
            except Exception:  # torch built without NCCL
                facts["nccl"] = None
    except ImportError:
        facts["torch"] = None
    try:
        import jdct_cli
        from jdct_cli import _decoder

        facts["jdct"] = jdct_cli.__version__
        facts["libjpeg"] = _decoder.libjpeg_version()
    except Exception as exc:  # the extension may not have been built
        facts["jdct_error"] = f"{type(exc).__name__}: {exc}"
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
            if out:
                facts["nvidia_smi"] = dict(zip(SMI_FIELDS, (v.strip() for v in out[0].split(","))))
        except (OSError, subprocess.SubprocessError):
            pass
    print(json.dumps(facts))


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_total():
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


if __name__ == "__main__":
    main()
