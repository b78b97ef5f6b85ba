#!/usr/bin/env bash
# Fill carry/gpu/ with everything the GPU machine needs and cannot download, then print the exact
# device call. Runs here (on the CPU machine, with pip and apt); benchmarks/gpu/run.sh runs there.
#
#   bash benchmarks/gpu/prepare.sh            # wheels + libjpeg-turbo + imagenette-5k
#
# carry/gpu/ (git-ignored, symlink-free; every path in it travels as a plain file):
#   wheels/          cp312 manylinux wheels of jdct's pure dependencies the GPU image lacks
#   libjpeg/include  libjpeg-turbo's headers (Debian's libjpeg62-turbo-dev)
#   libjpeg/lib      libjpeg.so.62 (Debian's libjpeg62-turbo); run.sh links lib/libjpeg.so to it in /tmp
#   data/imagenette-5k/{train,val}/<wnid>/*.JPEG
#   MANIFEST.json    what is in the folder (versions, data treatment, sizes)
#
# Everything that travels (the checkout's tracked and untracked-not-ignored files plus carry/gpu)
# must stay under the device tool's 64 MiB. When the data does not fit verbatim, it is first
# transcoded losslessly (jpegtran -optimize -copy none: the same DCT coefficients, so the same
# pixels and the same store, smaller Huffman tables, no metadata), then, if still too large, the
# last files (in sorted order) of each train class are left out: MANIFEST.json says which applied.
#
# Environment: PYTHON (default: .venv/bin/python, else python3) runs pip; JDCT_SHARED_DATA (default
# ../shared/data) holds imagenette-5k; GPU_CARRY_LIMIT_MIB (default 63.5: the tool's 64 MiB less a
# margin for the checkout growing a little before the run) bounds the total.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
CARRY_REL=carry/gpu
CARRY=$REPO/$CARRY_REL
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
SHARED=${JDCT_SHARED_DATA:-$REPO/../shared/data}
SOURCE=$(realpath -m "$SHARED/imagenette-5k")
LIMIT_MIB=${GPU_CARRY_LIMIT_MIB:-63.5}
# The GPU image already holds these (KINDS.md's package list): a wheel needing anything else stops here.
PRESENT="numpy packaging typing-extensions typing_extensions pyyaml"
# jdct's pure dependencies missing on the GPU image, and theirs.
WHEELS="zarr numcodecs donfig google-crc32c"

say() { printf '%s\n' "$*" >&2; }
die() { say "prepare.sh: $*"; exit 1; }

[ -d "$SOURCE/train" ] && [ -d "$SOURCE/val" ] || die "imagenette-5k not found at $SOURCE (set JDCT_SHARED_DATA)"
command -v dpkg-deb >/dev/null || die "dpkg-deb is needed to unpack libjpeg-turbo's Debian packages"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
rm -rf "$CARRY"
mkdir -p "$CARRY/wheels" "$CARRY/libjpeg/include" "$CARRY/libjpeg/lib" "$CARRY/data"

# ---------------------------------------------------------------- wheels (the versions tested here)
say "== wheels for CPython 3.12, manylinux x86_64"
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
for name in $WHEELS; do
    version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null || true)
    spec=$name${version:+==$version}
    # without an installed version to match, the range pyproject.toml allows
    [ -n "$version" ] || case $name in zarr) spec="zarr>=3.1,<4" ;; numcodecs) spec="numcodecs>=0.13" ;; esac
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $PLATFORMS -d "$CARRY/wheels" "$spec" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    ls "$CARRY/wheels" | grep -qi "^$(echo "$name" | tr - _)-" || die "no cp312 manylinux wheel of $spec"
done
# Every non-optional requirement of every wheel must be carried or already on the GPU image.
"$PY" - "$CARRY/wheels" "$PRESENT $WHEELS" <<'EOF' || die "a wheel needs a package that is neither carried nor on the GPU image"
import re, sys, zipfile, pathlib
have = {re.sub(r"[-_.]+", "-", n).lower() for n in sys.argv[2].split()}
bad = []
for whl in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist:") and "extra ==" not in line:
                name = re.split(r"[ ;<>=!~\[(]", line.split(":", 1)[1].strip())[0]
                if re.sub(r"[-_.]+", "-", name).lower() not in have:
                    bad.append(f"{whl.name} needs {name}")
print("\n".join(bad), file=sys.stderr)
sys.exit(1 if bad else 0)
EOF

# ---------------------------------------------------------------- libjpeg-turbo headers + library
say "== libjpeg-turbo (Debian libjpeg62-turbo, libjpeg62-turbo-dev)"
(cd "$TMP" && { apt-get download libjpeg62-turbo libjpeg62-turbo-dev >/dev/null 2>&1 ||
                 { apt-get update -qq >/dev/null 2>&1 && apt-get download libjpeg62-turbo libjpeg62-turbo-dev >/dev/null 2>&1; }; }) ||
    die "apt-get download libjpeg62-turbo libjpeg62-turbo-dev failed"
for deb in "$TMP"/*.deb; do dpkg-deb -x "$deb" "$TMP/root"; done
# Flat, symlink-free: the headers (jconfig.h lives in the multiarch folder) and the real library file.
find "$TMP/root/usr/include" -name '*.h' -exec cp {} "$CARRY/libjpeg/include/" \;
[ -f "$CARRY/libjpeg/include/jpeglib.h" ] && [ -f "$CARRY/libjpeg/include/jconfig.h" ] || die "jpeglib.h/jconfig.h missing from the packages"
so=$(find "$TMP/root" -name 'libjpeg.so.62' | head -1)
[ -n "$so" ] || die "libjpeg.so.62 missing from libjpeg62-turbo"
cp -L "$so" "$CARRY/libjpeg/lib/libjpeg.so.62"
JPEG_VERSION=$(dpkg-deb -f "$(ls "$TMP"/libjpeg62-turbo_*.deb)" Version)

# ---------------------------------------------------------------- data
say "== data: imagenette-5k from $SOURCE"
cp -rL "$SOURCE" "$CARRY/data/imagenette-5k"
find "$CARRY/data" -type f ! -iname '*.jpeg' ! -iname '*.jpg' -delete

travelling_bytes() {  # the checkout's travelling files + carry/gpu, in bytes
    local repo carry
    repo=$(git ls-files -z -co --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s+=$1} END {print s+0}')
    carry=$(find "$CARRY" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
    echo $((repo + carry))
}
limit_bytes=$("$PY" -c "import sys; print(int(float(sys.argv[1]) * 2**20))" "$LIMIT_MIB")
TREATMENT=verbatim
OMITTED=0
if [ "$(travelling_bytes)" -gt "$limit_bytes" ]; then
    say "   over ${LIMIT_MIB} MiB verbatim: lossless transcoding (jpegtran -optimize -copy none)"
    (cd "$TMP" && apt-get download libjpeg-turbo-progs >/dev/null 2>&1) || die "apt-get download libjpeg-turbo-progs failed"
    dpkg-deb -x "$TMP"/libjpeg-turbo-progs_*.deb "$TMP/progs"
    JPEGTRAN=$TMP/progs/usr/bin/jpegtran
    find "$CARRY/data" -type f -print0 | while IFS= read -r -d '' f; do
        LD_LIBRARY_PATH=$CARRY/libjpeg/lib "$JPEGTRAN" -optimize -copy none -outfile "$f.tmp" "$f" && mv "$f.tmp" "$f"
    done
    TREATMENT=lossless-optimized
fi
while [ "$(travelling_bytes)" -gt "$limit_bytes" ]; do
    # one more file off the end of every train class (sorted names: deterministic)
    for cls in "$CARRY"/data/imagenette-5k/train/*/; do
        last=$(ls "$cls" | sort | tail -1)
        [ -n "$last" ] && rm -f "$cls/$last" && OMITTED=$((OMITTED + 1))
    done
done
[ "$OMITTED" -eq 0 ] || TREATMENT="$TREATMENT, subset ($OMITTED train files left out)"

TOTAL=$(travelling_bytes)
"$PY" - "$CARRY" "$TREATMENT" "$OMITTED" "$JPEG_VERSION" "$TOTAL" "$SOURCE" <<'EOF'
import json, pathlib, subprocess, sys, time
carry, treatment, omitted, jpeg_version, total, source = sys.argv[1:]
carry = pathlib.Path(carry)
data = carry / "data" / "imagenette-5k"
files = {split: sum(1 for p in (data / split).rglob("*") if p.is_file()) for split in ("train", "val")}
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
manifest = {
    "format": "jdct-gpu-carry", "format_version": 1,
    "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": commit,
    "wheels": sorted(p.name for p in (carry / "wheels").glob("*.whl")),
    "libjpeg_turbo": jpeg_version,
    "data": {"name": "imagenette-5k", "source": source, "treatment": treatment,
             "train_files_omitted": int(omitted), "files": files,
             "bytes": sum(p.stat().st_size for p in data.rglob("*") if p.is_file())},
    "travelling_bytes": int(total),
}
(carry / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
EOF

mib() { "$PY" -c "import sys; print(f'{int(sys.argv[1]) / 2**20:.1f}')" "$1"; }
say ""
say "carry/gpu: $(mib "$(find "$CARRY" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')") MiB" \
    "(wheels $(mib "$(du -sb "$CARRY/wheels" | cut -f1)"), libjpeg $(mib "$(du -sb "$CARRY/libjpeg" | cut -f1)")," \
    "data $(mib "$(du -sb "$CARRY/data" | cut -f1)")); data: $TREATMENT"
say "travelling in all (checkout + carry/gpu): $(mib "$TOTAL") MiB of the 64 MiB the device tool takes"
cat <<EOF

Device call (about 8 minutes on one H200; run it from this checkout's root):
  run(command="bash benchmarks/gpu/run.sh", carry=["$CARRY_REL"], timeout_s=540)
The report comes back as report.json, report.md, report.png and log.txt.
EOF
