"""`jdct inspect` and `jdct --version`: the library (jdct_cli.inspect_jpeg) and the CLI, checked
against Pillow's parser, libjpeg's own coefficients, the JSON Schema and a golden document, on the
committed fixtures of tests/data/jpegs/ (and ../shared's real files when present)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import jpegfiles
from conftest import HAVE_SHARED, SHARED_DATA
from jdct_cli import __version__, _decoder, jpeg
from jdct_cli.cli import main
from jdct_cli.inspect_jpeg import dump_coefficients, inspect_jpeg, output_for, render_text, write_output

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "schemas" / "inspect.v1.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
TINY = REPO / "tests" / "data" / "inspect_tiny.jpg"
GOLDEN = REPO / "tests" / "golden" / "inspect.v1.json"

LOCAL = [  # committed fixtures, what makes them interesting
    "progressive.jpg",  # progressive 4:2:0
    "restart_every_mcu.jpg",  # DRI=1
    "arithmetic.jpg",  # arithmetic
    "gray.jpg",  # grayscale
    "ycck.jpg",  # YCCK, DRI=2
    "mixed_sampling.jpg",  # other sampling
    "exif_orientation_6.jpg",  # EXIF 6
]
REAL = [  # (path under ../shared/data, what makes it interesting)
    "odd-jpegs/jpeg-decoder/reftest/images/progressive3.jpg",  # progressive 4:4:4
    "odd-jpegs/variants/chelsea_cjpeg_restart_every_mcu.jpg",  # DRI=1
    "odd-jpegs/libjpeg-turbo/testimgari.jpg",  # arithmetic
    "odd-jpegs/pillow/hopper_gray.jpg",  # grayscale
    "odd-jpegs/jpeg-decoder/reftest/images/ycck.jpg",  # YCCK, DRI=63
    "odd-jpegs/variants/chelsea_cjpeg_mixed_chroma.jpg",  # other sampling
    "odd-jpegs/exif-orientation/Landscape_6.jpg",  # EXIF 6
]


def _invoke(*args):
    return CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)


def _pillow_facts(path):
    with Image.open(path) as im:
        return {
            "size": im.size,
            "quant": {k: list(v) for k, v in im.quantization.items()},
            "layer": [tuple(x) for x in im.layer],
            "progressive": bool(im.info.get("progressive", 0)),
            "orientation": im.getexif().get(0x0112),
        }


# ------------------------------------------------------------------------------- schema/golden


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$id"].endswith("inspect.v1.schema.json")
    assert SCHEMA["properties"]["format_version"] == {"const": 1}


def test_golden_document_is_reproduced(monkeypatch):
    golden = json.loads(GOLDEN.read_text())
    VALIDATOR.validate(golden)
    monkeypatch.chdir(REPO)  # the golden names the file relative to the repository root
    doc = inspect_jpeg(Path("tests/data/inspect_tiny.jpg"))
    assert doc == golden
    # and the CLI prints exactly that document
    result = _invoke("inspect", "--json", "tests/data/inspect_tiny.jpg")
    assert result.exit_code == 0
    assert json.loads(result.output) == golden


def test_golden_fixture_facts_agree_with_pillow():
    golden = json.loads(GOLDEN.read_text())
    facts = _pillow_facts(TINY)
    assert (golden["width"], golden["height"]) == facts["size"] == (24, 16)
    assert golden["exif_orientation"] == facts["orientation"] == 6
    assert {t["slot"]: t["table"] for t in golden["quant_tables"]} == facts["quant"]
    assert golden["estimated_quality"] == 80  # written by Pillow with quality=80
    assert golden["restart_interval"] == 2 and golden["sampling"] == "4:2:0"
    # zero fractions recomputed from libjpeg's coefficients
    comps, _, _ = jpeg.read_coefficients(TINY.read_bytes())
    for c, arr in zip(golden["components"], comps):
        assert c["blocks"] == list(arr.shape[:2])
        assert c["zero_fraction"] == pytest.approx(np.mean(arr == 0), abs=1e-6)


# ---------------------------------------------------------------------------- real files


def _local(*names):
    return [jpegfiles.path(n) for n in names]


def _real(*rels):
    return [SHARED_DATA / r for r in rels] if HAVE_SHARED else []


def test_json_of_real_files_matches_pillow(photo_tree):
    paths = _local(*jpegfiles.GOOD) + jpegfiles.photos(photo_tree, step=8)
    paths += _real(*REAL) + jpegfiles.shared_files("imagenet-originals", "*/*.JPEG", step=40)
    result = _invoke("inspect", "--json", *paths)
    assert result.exit_code == 0, result.output
    docs = json.loads(result.output)
    assert isinstance(docs, list) and len(docs) == len(paths)
    for path, doc in zip(paths, docs):
        VALIDATOR.validate(doc)
        facts = _pillow_facts(path)
        assert doc["file"] == str(path)
        assert doc["file_size"] == path.stat().st_size
        assert (doc["width"], doc["height"]) == facts["size"]
        assert doc["progressive"] == facts["progressive"]
        assert [(c["id"], c["h"], c["v"], c["quant_slot"]) for c in doc["components"]] == facts["layer"]
        assert {t["slot"]: t["table"] for t in doc["quant_tables"]} == facts["quant"]
        for c in doc["components"]:
            assert c["quant_table"] == facts["quant"][c["quant_slot"]]
        orientation = facts["orientation"] if facts["orientation"] in range(1, 9) else None
        assert doc["exif_orientation"] == orientation


@pytest.mark.parametrize("names", ["local"] + (["shared"] if HAVE_SHARED else []))
def test_flags_of_special_files(names):
    files = _local(*LOCAL) if names == "local" else _real(*REAL)
    docs = [inspect_jpeg(p) for p in files]
    sampling, ycck_interval = ("4:2:0", 2) if names == "local" else ("4:4:4", 63)
    assert docs[0]["progressive"] and docs[0]["sampling"] == sampling
    assert docs[1]["restart_interval"] == 1
    assert docs[2]["arithmetic"] and not docs[2]["progressive"]
    assert docs[3]["sampling"] == "grayscale" and docs[3]["color_space"] == "GRAYSCALE"
    assert docs[4]["color_space"] == "YCCK" and docs[4]["restart_interval"] == ycck_interval
    assert docs[4]["adobe_transform"] == 2
    assert docs[5]["sampling"] == "other (2x2,2x1,1x1)"
    assert docs[6]["exif_orientation"] == 6


def test_estimated_quality_of_pillow_encodes(tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    for q in (10, 50, 75, 90, 96, 100):
        path = tmp_path / f"q{q}.jpg"
        img.save(path, quality=q)
        doc = inspect_jpeg(path)
        assert doc["estimated_quality"] == q
        assert all(t["fit_error"] == 0 for t in doc["quant_tables"])


def test_no_coefficients_mode_gives_the_same_facts():
    for p in _local(*jpegfiles.GOOD) + _real(*REAL):
        full = inspect_jpeg(p)
        fast = inspect_jpeg(p, coefficients=False)
        VALIDATOR.validate(fast)
        assert fast["warnings"] is None and all(c["zero_fraction"] is None for c in fast["components"])
        for key in ("width", "height", "sampling", "quant_tables", "estimated_quality", "exif_orientation"):
            assert fast[key] == full[key]


@pytest.mark.parametrize("name, size, interval", [("ycck.jpg", "75 x 50 px", 2)] + (
    [(REAL[4], "500 x 333 px", 63)] if HAVE_SHARED else []))
def test_text_report_shows_the_facts(name, size, interval):
    path = jpegfiles.path(name) if "/" not in name else SHARED_DATA / name  # YCCK with restart markers
    doc = inspect_jpeg(path)
    result = _invoke("inspect", path)
    assert result.exit_code == 0
    text = result.output
    assert text.strip() == render_text(doc)
    assert size in text and "YCCK" in text and f"every {interval} MCUs" in text
    for t in doc["quant_tables"]:
        first_row = " ".join(f"{v:>4}" for v in t["table"][:8])
        assert first_row in text  # each table printed as an 8x8 grid, natural order
        assert f"quantization table {t['slot']}:" in text
    for c in doc["components"]:
        assert f"c{c['index']}: ({c['blocks'][0]}, {c['blocks'][1]}, 64)" in text
        assert f"{100 * c['zero_fraction']:.1f} %" in text


# ---------------------------------------------------------------------- outputs: npz and plot


def test_text_report_names_the_first_libjpeg_warning():
    """A truncated file's report says what is wrong in a sentence, libjpeg's words kept."""
    path = jpegfiles.path("truncated_50pct.jpg")
    result = _invoke("inspect", path)
    assert result.exit_code == 0
    assert ("libjpeg warnings  2, the first: truncated: the JPEG data ends before the image is complete "
            "(libjpeg: Premature end of JPEG file)") in result.output
    assert "libjpeg warnings" not in _invoke("inspect", jpegfiles.path("420.jpg")).output


@pytest.mark.parametrize("path", _local("mixed_sampling.jpg") + _real(REAL[5]), ids=lambda p: p.name)
def test_dump_coefficients_equals_read_coefficients(path, tmp_path):
    out = tmp_path / "c.npz"
    result = _invoke("inspect", path, "--dump-coefficients", out)
    assert result.exit_code == 0 and f"wrote {out}" in result.output
    comps, quant, _ = jpeg.read_coefficients(path.read_bytes())
    with np.load(out) as npz:
        assert sorted(npz.files) == ["c0", "c1", "c2", "quant"]
        for i, c in enumerate(comps):
            assert npz[f"c{i}"].dtype == np.int16 and npz[f"c{i}"].shape == c.shape
            np.testing.assert_array_equal(npz[f"c{i}"], c)
        assert npz["quant"].dtype == np.uint16
        np.testing.assert_array_equal(npz["quant"], quant)
        # and it is consistent with Pillow's tables (natural order)
        facts = _pillow_facts(path)
        for i, (_, _, _, slot) in enumerate(facts["layer"]):
            assert npz["quant"][i].tolist() == facts["quant"][slot]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.mark.parametrize("path", _local("arithmetic.jpg") + _real(REAL[2]), ids=lambda p: p.name)
def test_plot_writes_a_readable_png(path, tmp_path):
    out = tmp_path / "p.png"
    result = _invoke("inspect", path, "--plot", out)
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 300
        assert len(np.unique(np.asarray(im.convert("L")))) > 50  # a picture, not a blank canvas


def test_several_files_get_stem_suffixed_outputs(tmp_path):
    a, b = tmp_path / "a.jpg", tmp_path / "sub" / "a.jpg"
    b.parent.mkdir()
    rng = np.random.default_rng(2)
    for p in (a, b):
        Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(p)
    out = tmp_path / "out"
    out.mkdir()
    result = _invoke("inspect", a, b, "--dump-coefficients", out / "c.npz")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["c_a-2.npz", "c_a.npz"]
    taken: set = set()
    assert output_for("x/p.png", "d/img.jpeg", True, taken) == Path("x/p_img.png")
    assert output_for("x/p.png", "d/img.jpeg", False, taken) == Path("x/p.png")


def test_options_for_the_other_kind_of_input_are_refused_not_ignored(tmp_path):
    """`jdct inspect photo.jpg --sample 3` printed the JPEG report as if --sample were not there."""
    for args, words in (([TINY, "--sample", "3"], "--sample applies to stores"),
                        ([tmp_path, "--dump-coefficients", tmp_path / "c.npz"], "applies to JPEG files")):
        result = CliRunner().invoke(main, ["inspect", *map(str, args)])
        assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "c.npz").exists()


def test_output_into_missing_folder_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(main, ["inspect", str(TINY), "--plot", str(tmp_path / "no" / "p.png")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "output folder does not exist" in result.output


# --------------------------------------------------------------------------------- bad input


BAD_SETS = [("arithmetic.jpg", "png_named.jpg", "empty.jpg", "header_12bit.jpg")] + ([(
    REAL[2], "odd-jpegs/variants/png_disguised.JPEG", "odd-jpegs/variants/empty.JPEG",
    "odd-jpegs/libjpeg-turbo/monkey12.jpg")] if HAVE_SHARED else [])


@pytest.mark.parametrize("names", BAD_SETS, ids=lambda n: "shared" if "/" in n[0] else "local")
def test_bad_files_are_reported_and_others_still_print(names, tmp_path):
    good, png, empty, twelve = (SHARED_DATA / n if "/" in n else jpegfiles.path(n) for n in names)
    missing = tmp_path / "missing.jpg"
    result = CliRunner().invoke(main, ["inspect", str(png), str(good), str(empty), str(twelve), str(missing)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    err, out = result.stderr, result.stdout
    assert f"Error: {png}: not a JPEG: this is a PNG file" in err
    assert f"Error: {empty}: empty file" in err
    assert f"Error: {twelve}: 12-bit JPEG is not supported" in err
    assert f"Error: {missing}: no such file" in err
    assert str(good) in out and "arithmetic-coded" in out
    assert "Traceback" not in err + out


@pytest.mark.parametrize("names", [("progressive.jpg", "gif_named.jpg")] + (
    [(REAL[0], "odd-jpegs/variants/gif_disguised.JPEG")] if HAVE_SHARED else []),
    ids=lambda n: "shared" if "/" in n[0] else "local")
def test_json_list_keeps_good_documents_when_some_fail(names):
    good, bad = (SHARED_DATA / n if "/" in n else jpegfiles.path(n) for n in names)
    result = CliRunner().invoke(main, ["inspect", "--json", str(bad), str(good)])
    assert result.exit_code == 1
    docs = json.loads(result.stdout)
    assert [d["file"] for d in docs] == [str(good)]
    assert f"Error: {bad}: not a JPEG: this is a GIF file" in result.stderr


def test_directory_goes_to_the_store_inspector(tmp_path):
    result = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {tmp_path}: not a Zarr v3 store")
    assert "Traceback" not in result.output


def test_every_odd_jpeg_in_a_real_subprocess():
    """All odd files (the committed fixtures, the fuzz regressions and ../shared's odd-jpegs)
    through the installed CLI in one process: each one yields a JSON document or exactly one
    `Error:` line, never a traceback or libjpeg chatter, and torch is never imported."""
    folders = [jpegfiles.JPEGS, REPO / "tests" / "regressions"] + ([SHARED_DATA / "odd-jpegs"] if HAVE_SHARED else [])
    files = sorted(
        str(p) for folder in folders for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".mpo")
    )
    assert len(files) > (320 if HAVE_SHARED else 70)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "jdct_cli", "inspect", "--json", *files],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 1  # some files are broken on purpose
    imports = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    messages = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert imports and not any(line.split("|")[-1].strip().split(".")[0] == "torch" for line in imports)
    assert "Traceback" not in proc.stderr
    assert all(line.startswith("Error: ") for line in messages), messages[:5]
    docs = json.loads(proc.stdout)
    assert len(docs) + len(messages) == len(files)
    reported = {d["file"] for d in docs} | {m[len("Error: "):].split(": ")[0] for m in messages}
    assert reported == set(files)
    for d in docs:
        VALIDATOR.validate(d)


def test_library_does_not_import_torch():
    code = (
        "import sys, json\n"
        "from jdct_cli.inspect_jpeg import inspect_jpeg, render_text\n"
        f"render_text(inspect_jpeg({str(jpegfiles.path(LOCAL[0]))!r}))\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'zarr', 'matplotlib'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


# ------------------------------------------------------------------------------------ version


def test_version_names_jdct_and_libjpeg():
    result = _invoke("--version")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == f"jdct {__version__}"
    assert lines[1] == f"libjpeg-turbo {_decoder.libjpeg_version()}"
    # the extension's answer is the libjpeg it was compiled against: compare with the header
    header = Path("/usr/include/jpeglib.h")
    config = next((p for p in (Path("/usr/include/x86_64-linux-gnu/jconfig.h"), Path("/usr/include/jconfig.h")) if p.exists()), None)
    if config is not None and header.exists():
        text = config.read_text()
        if "LIBJPEG_TURBO_VERSION " in text:
            version = text.split("LIBJPEG_TURBO_VERSION ")[1].split()[0]
            assert lines[1].startswith(f"libjpeg-turbo {version}")


def test_outputs_are_atomic_and_get_normal_modes(tmp_path):
    out = tmp_path / "c.npz"
    dump_coefficients(TINY, out)
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask

    def interrupted(fh):  # Ctrl-C in the middle of writing
        fh.write(b"half a file")
        raise KeyboardInterrupt

    before = out.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        write_output(out, interrupted)
    assert out.read_bytes() == before  # the previous complete file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]  # no temporary left behind
