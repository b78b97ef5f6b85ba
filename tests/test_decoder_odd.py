"""Every odd file through the C boundary in a child process: the committed fixtures and the fuzz
regressions always, ../shared's odd-jpegs when present.

A crash (segfault, abort, libjpeg calling ``exit()``) kills only the child: the parent then fails
naming the last file the child announced. libjpeg must never print, so the child's stderr must be
empty. Each file must either succeed or raise a ``JpegError`` (or subclass) — nothing else.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jpegfiles
from conftest import HAVE_SHARED, SHARED_DATA

CHILD = textwrap.dedent(r"""
    import json, sys
    from pathlib import Path
    from jdct_cli import _decoder as dec
    from jdct_cli.errors import JpegError

    root = Path(sys.argv[1])
    outcomes = {}
    for path in sorted(Path(p) for p in json.loads(sys.argv[2])):
        rel = str(path.relative_to(root))
        print("FILE " + rel, flush=True)          # the last one printed names a crash
        data = path.read_bytes()
        result = {}
        for name, call in (("read_header", lambda: dec.read_header(data)),
                           ("read_coefficients", lambda: dec.read_coefficients(data)),
                           ("decode", lambda: dec.decode(data)),
                           ("decode_roi", lambda: dec.decode(data, scale=2, roi=(0, 0, 1, 1))),
                           ("strict", lambda: dec.read_coefficients(data, strict=True))):
            try:
                call()
                result[name] = "ok"
            except JpegError as exc:
                result[name] = type(exc).__name__ + ": " + str(exc)
            except Exception as exc:             # anything else is a bug in the boundary
                result[name] = "UNEXPECTED " + type(exc).__name__ + ": " + str(exc)
        outcomes[rel] = result
    print("RESULT " + json.dumps(outcomes), flush=True)
""")


def _run(root: Path, files: list) -> dict:
    """{path relative to root: {call: outcome}} of each of ``files``, from one child process."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), json.dumps([str(f) for f in files])],
                          capture_output=True, text=True, timeout=300)
    lines = proc.stdout.splitlines()
    files = [line[5:] for line in lines if line.startswith("FILE ")]
    last = files[-1] if files else "(none)"
    assert proc.returncode == 0, f"child died (rc {proc.returncode}) on {last}: {proc.stderr[-2000:]}"
    assert proc.stderr == "", f"something printed to stderr: {proc.stderr[:2000]}"
    outcomes = json.loads(next(line[7:] for line in lines if line.startswith("RESULT ")))
    unexpected = {f: r for f, r in outcomes.items() if any(v.startswith("UNEXPECTED") for v in r.values())}
    assert not unexpected, unexpected
    return outcomes


def test_every_committed_fixture_and_regression_in_a_subprocess():
    regressions = Path(__file__).parent / "regressions"
    assert len(_run(regressions, sorted(regressions.glob("*.jpg")))) == 33
    files = sorted(jpegfiles.JPEGS.glob("*.jpg"))
    outcomes = _run(jpegfiles.JPEGS, files)
    assert len(outcomes) == len(files) == len(jpegfiles.INDEX) >= 40
    # Independent facts from the fixtures' INDEX.tsv: what must succeed and what must fail.
    for name in jpegfiles.GOOD:
        assert set(outcomes[name].values()) == {"ok"}, (name, outcomes[name])
    assert outcomes["declares_65535x65535.jpg"]["read_header"].startswith("ImageTooLargeError")
    assert "Not a JPEG file" in outcomes["png_named.jpg"]["read_header"]
    assert "precision 12" in outcomes["header_12bit.jpg"]["read_coefficients"]
    assert outcomes["truncated_50pct.jpg"]["read_coefficients"] == "ok"
    assert "Premature end" in outcomes["truncated_50pct.jpg"]["strict"]


@pytest.mark.skipif(not HAVE_SHARED, reason="breadth: ../shared/data/odd-jpegs (the committed fixtures are checked above)")
def test_every_odd_jpeg_succeeds_or_raises_jpeg_error_in_a_subprocess():
    root = SHARED_DATA / "odd-jpegs"
    outcomes = _run(root, [p for p in root.rglob("*") if p.is_file()])
    assert len(outcomes) == len([p for p in root.rglob("*") if p.is_file()]) >= 300
    # Independent facts from the data set's INDEX.tsv: what must succeed and what must fail.
    assert outcomes["variants/src_ocelot_cdla.jpg"]["decode"] == "ok"
    assert outcomes["variants/ocelot_jt_arithmetic_progressive.jpg"]["read_coefficients"] == "ok"
    assert outcomes["jpeg-decoder/crashtest/images/max_size.jpg"]["read_header"].startswith("ImageTooLargeError")
    assert "Not a JPEG file" in outcomes["variants/png_disguised.JPEG"]["read_header"]
    assert "precision 12" in outcomes["libjpeg-turbo/monkey12.jpg"]["read_coefficients"]
    assert outcomes["variants/ocelot_truncated_90pct.jpg"]["read_coefficients"] == "ok"
    assert "Premature end" in outcomes["variants/ocelot_truncated_90pct.jpg"]["strict"]
    ok = sum(r["read_coefficients"] == "ok" for r in outcomes.values())
    assert ok >= 150, f"only {ok} files yielded coefficients"
