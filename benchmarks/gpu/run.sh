#!/usr/bin/env bash
# The prepared GPU run (issue 14): CUDA tests, the zoo's inference speed beside the paper's Table 1,
# loader delivery, the images layout's device augmentation (issue 12), and a training comparison on
# imagenette-5k, in under 8 minutes on one H200.
#
#   bash benchmarks/gpu/prepare.sh          # here first: fills carry/gpu/ and prints the device call
#   bash benchmarks/gpu/run.sh              # there, with carry/gpu: the report goes to $OUT
#   bash benchmarks/gpu/run.sh --dry-run    # here, on the CPU: the same code paths at tiny sizes
#
# On the GPU machine it installs the carried wheels into a temporary folder (no network), builds
# the extension against the carried libjpeg-turbo, converts the carried images and runs the
# sections, each under a time box (benchmarks/gpu/suite.py); the report is report.json,
# report.md, report.png and log.txt in $OUT (or --out DIR). The dry run uses the Python of the
# checkout's .venv (or $JDCT_PYTHON) and needs no carried folder. Exit status: 0 when every
# section passed (or was skipped for want of a GPU), 1 otherwise.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
cd "$REPO" || exit 1
DRY=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && DRY=1; done
if [ -n "${JDCT_PYTHON:-}" ]; then
    PY=$JDCT_PYTHON
elif [ "$DRY" = 1 ] && [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
else
    PY=python3
fi
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
exec "$PY" "$HERE/suite.py" "$@"
