"""What is inside a JPEG: the library behind ``jdct inspect FILE.jpg``.

- :func:`inspect_jpeg` builds the JSON document (format ``jdct-inspect``, ``FORMAT_VERSION`` 1,
  schema ``schemas/inspect.v1.schema.json``);
- :func:`render_text` turns it into the human-readable report;
- :func:`plot_jpeg` draws the decoded image, each component's DC map and the mean |coefficient|
  per frequency (matplotlib, imported lazily, Agg backend);
- :func:`dump_coefficients` writes the quantized coefficients to ``.npz``;
- :func:`inspect_paths` runs all of that over several paths (JPEG files, or jdct stores, which
  are handed to :mod:`jdct_cli.store.report`) and yields one result per path, errors included,
  so that one bad file never stops the others.

Never imports torch; numpy and the C extension only (matplotlib only for plots).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Optional, Sequence

import numpy as np

from . import jpeg
from .errors import ConfigError, JdctError
from .fileio import atomic_write
from .jpegmath.quant import quality_fit
from .store.location import as_location, is_url

FORMAT_NAME = "jdct-inspect"
FORMAT_VERSION = 1

_ORIENTATION_TEXT = {
    1: "normal",
    2: "mirrored left-right",
    3: "rotated 180",
    4: "mirrored top-bottom",
    5: "transposed",
    6: "rotate 90 clockwise to display",
    7: "transversed",
    8: "rotate 90 counter-clockwise to display",
}


def _luma_slot(components: Sequence[dict]) -> Optional[int]:
    return components[0]["quant_table"] if components else None


def inspect_jpeg(path: os.PathLike | str, *, coefficients: bool = True, max_pixels: int = jpeg.DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """The inspect document of the JPEG at ``path`` (a JSON-serialisable dict).

    Keys (see ``schemas/inspect.v1.schema.json``): ``format``, ``format_version`` (1), ``file``,
    ``file_size`` (bytes), ``width``/``height`` (pixels, as stored: EXIF orientation not applied),
    ``precision`` (bits), ``color_space``, ``adobe_transform``, ``jfif``, ``sampling`` (e.g.
    "4:2:0"), ``progressive``, ``arithmetic``, ``restart_interval`` (MCUs, 0 = none),
    ``exif_orientation`` (1..8 or null), ``estimated_quality`` (IJG quality of the first
    component's table, or null), ``warnings`` (libjpeg warnings while reading the coefficients;
    null when not read), ``quant_tables`` (per slot: ``slot``, ``table`` 64 ints natural order,
    ``estimated_quality``, ``fit_error`` mean |difference| to that IJG table, ``used_by``
    component ids) and ``components``: per component ``index``, ``id``, ``h``, ``v``,
    ``quant_slot``, ``blocks`` [rows, cols] (padded to whole MCUs), ``quant_table`` (64 ints
    natural order) and ``zero_fraction`` (share of zero quantized coefficients, null when
    ``coefficients=False``).

    ``coefficients=False`` reads only the markers (fast; quant tables from the DQT segments).
    Raises the :mod:`jdct_cli.errors` JpegError family / SourceError, naming ``path``.
    """
    path = Path(path)
    data = jpeg.read_bytes(path)
    header = jpeg.read_header(data, path=path, max_pixels=max_pixels)
    comps = header["components"]
    warnings = None
    zero_fraction: list[Optional[float]] = [None] * len(comps)
    if coefficients:
        coefs, quant, warnings = jpeg.read_coefficients(data, path=path, max_pixels=max_pixels)
        tables_per_comp = [np.asarray(q, dtype=np.int64) for q in quant]
        zero_fraction = [float(np.count_nonzero(c == 0)) / c.size if c.size else 0.0 for c in coefs]
        # the per-slot tables as libjpeg latched them (natural order)
        slot_tables = {}
        for comp, table in zip(comps, tables_per_comp):
            slot_tables.setdefault(comp["quant_table"], table)
    else:
        parsed = jpeg.read_quant_tables(data)
        slot_tables = {slot: t.astype(np.int64) for slot, t in parsed.items()}
        tables_per_comp = [slot_tables.get(c["quant_table"]) for c in comps]

    luma_slot = _luma_slot(comps)
    quant_tables = []
    for slot in sorted(slot_tables):
        table = slot_tables[slot]
        # the first component's table is compared with Annex K.1 (luma), the others with K.2
        fit = quality_fit(table, chroma=(slot != luma_slot))
        quant_tables.append(
            {
                "slot": int(slot),
                "table": [int(x) for x in table],
                "estimated_quality": None if fit is None else fit[0],
                "fit_error": None if fit is None else round(fit[1], 4),
                "used_by": [int(c["id"]) for c in comps if c["quant_table"] == slot],
            }
        )
    estimated = next((t["estimated_quality"] for t in quant_tables if t["slot"] == luma_slot), None)

    components = []
    for i, comp in enumerate(comps):
        table = tables_per_comp[i]
        components.append(
            {
                "index": i,
                "id": int(comp["id"]),
                "h": int(comp["h"]),
                "v": int(comp["v"]),
                "quant_slot": int(comp["quant_table"]),
                "blocks": [int(comp["blocks_high"]), int(comp["blocks_wide"])],
                "quant_table": None if table is None else [int(x) for x in table],
                "zero_fraction": None if zero_fraction[i] is None else round(zero_fraction[i], 6),
            }
        )

    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "file": str(path),
        "file_size": len(data),
        "width": int(header["width"]),
        "height": int(header["height"]),
        "precision": int(header["precision"]),
        "color_space": header["color_space"],
        "adobe_transform": header.get("adobe_transform"),
        "jfif": bool(header.get("jfif", False)),
        "sampling": jpeg.sampling_name(comps, header["color_space"]),
        "progressive": bool(header["progressive"]),
        "arithmetic": bool(header["arithmetic"]),
        "restart_interval": int(header["restart_interval"]),
        "exif_orientation": jpeg.exif_orientation(header.get("exif")),
        "estimated_quality": estimated,
        "warnings": None if warnings is None else int(warnings),
        "quant_tables": quant_tables,
        "components": components,
    }


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def _coding(doc: dict) -> str:
    parts = ["progressive" if doc["progressive"] else "baseline (sequential)"]
    parts.append("arithmetic-coded" if doc["arithmetic"] else "Huffman-coded")
    return ", ".join(parts)


def _quality_text(table: dict) -> str:
    q = table["estimated_quality"]
    if q is None:
        return "quality unknown"
    if table["fit_error"] == 0:
        return f"IJG quality {q} (exact)"
    return f"IJG quality ~{q} (not an IJG table; mean difference {table['fit_error']:.2f})"


def render_text(doc: dict, *, warning: Optional[str] = None) -> str:
    """The human-readable report of an :func:`inspect_jpeg` document (no trailing newline);
    ``warning``: the first libjpeg warning as a sentence (:func:`jdct_cli.jpeg.first_warning`),
    shown when the document counts warnings."""
    lines = [f"{doc['file']}  ({doc['file_size']:,} bytes)"]

    def row(label: str, value: str) -> None:
        lines.append(f"  {label:<18}{value}")

    extras = []
    if doc["jfif"]:
        extras.append("JFIF")
    if doc.get("adobe_transform") is not None:
        extras.append(f"Adobe transform {doc['adobe_transform']}")
    space = doc["color_space"] + (f" ({', '.join(extras)})" if extras else "")
    row("dimensions", f"{doc['width']} x {doc['height']} px, {doc['precision']}-bit")
    row("colour space", f"{space}, {len(doc['components'])} component(s)")
    row("sampling", doc["sampling"])
    row("coding", _coding(doc))
    ri = doc["restart_interval"]
    row("restart interval", f"every {ri} MCU{'s' if ri != 1 else ''}" if ri else "none")
    orient = doc["exif_orientation"]
    row("EXIF orientation", "none" if orient is None else f"{orient} ({_ORIENTATION_TEXT[orient]}; not applied)")
    q = doc["estimated_quality"]
    row("est. quality", "unknown" if q is None else f"{q} (IJG scale, from the first component's table)")
    if doc["warnings"]:
        row("libjpeg warnings", f"{doc['warnings']}, the first: {warning}" if warning
            else f"{doc['warnings']} (data probably truncated or corrupt)")

    lines.append("  components")
    lines.append("    #   id  sampling  quant  blocks (rows x cols)  zero coefficients")
    for c in doc["components"]:
        zf = "-" if c["zero_fraction"] is None else f"{100 * c['zero_fraction']:.1f} %"
        blocks = f"{c['blocks'][0]} x {c['blocks'][1]}"
        lines.append(f"    {c['index']:<3} {c['id']:<3} {c['h']}x{c['v']:<7} {c['quant_slot']:<6} {blocks:<21} {zf}")
    lines.append("  coefficient arrays (int16, natural order)")
    for c in doc["components"]:
        lines.append(f"    c{c['index']}: ({c['blocks'][0]}, {c['blocks'][1]}, 64)")

    for t in doc["quant_tables"]:
        ids = ", ".join(str(i) for i in t["used_by"]) or "no component"
        lines.append(f"  quantization table {t['slot']}: {_quality_text(t)}; used by component id {ids}")
        for r in range(8):
            lines.append("    " + " ".join(f"{v:>4}" for v in t["table"][8 * r : 8 * r + 8]))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Files written: npz and png, atomically
# --------------------------------------------------------------------------------------------


def write_output(out: os.PathLike | str, write: Callable[[IO[bytes]], object]) -> Path:
    """Write a user-requested output file atomically (:func:`jdct_cli.fileio.atomic_write`):
    ``write(binary_file)``; a missing folder or an OS error is a ConfigError naming the file."""
    out = Path(out)
    if not out.parent.is_dir():
        raise ConfigError("output folder does not exist", out.parent)
    try:
        return atomic_write(out, write)
    except OSError as exc:
        raise ConfigError(f"cannot write: {exc.strerror or exc}", out) from None


def dump_coefficients(path: os.PathLike | str, out_npz: os.PathLike | str) -> Path:
    """Write the JPEG's quantized coefficients to ``out_npz`` (uncompressed ``.npz``), atomically.

    Arrays: ``c0``, ``c1``, ... int16 ``(blocks_high, blocks_wide, 64)`` natural order, one per
    component; ``quant`` uint16 ``(n_components, 64)`` natural order. Returns the path written.
    """
    data = jpeg.read_bytes(path)
    coefs, quant, _ = jpeg.read_coefficients(data, path=path)
    arrays = {f"c{i}": np.ascontiguousarray(c, dtype=np.int16) for i, c in enumerate(coefs)}
    arrays["quant"] = np.ascontiguousarray(quant, dtype=np.uint16)

    # a file object: np.savez must not append ".npz" to the temporary name
    return write_output(out_npz, lambda fh: np.savez(fh, **arrays))


def mean_abs_coefficients(coefs: np.ndarray) -> np.ndarray:
    """float64 ``(8, 8)``: mean |quantized coefficient| per frequency (row v, column u) of one
    component's int16 ``(bh, bw, 64)`` array."""
    if coefs.size == 0:
        return np.zeros((8, 8))
    return np.abs(coefs.reshape(-1, 64).astype(np.float64)).mean(axis=0).reshape(8, 8)


def plot_jpeg(path: os.PathLike | str, out_png: os.PathLike | str, *, max_side: int = 1024) -> Path:
    """One PNG figure of the JPEG at ``path``: the decoded image (top), each component's DC map
    (dequantized DC coefficient per 8x8 block, middle row) and the 8x8 grid of mean |quantized
    coefficient| per frequency, log colour scale (bottom row). Written atomically; returns it.

    Large images are decoded with libjpeg's DCT scaling so the shown image is <= ``max_side`` px.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never open a window, never need a display
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    data = jpeg.read_bytes(path)
    header = jpeg.read_header(data, path=path)
    scale = 1
    while scale < 8 and max(header["width"], header["height"]) / scale > max_side:
        scale *= 2
    rgb, _ = jpeg.decode(data, path=path, scale=scale)
    coefs, quant, _ = jpeg.read_coefficients(data, path=path)
    n = len(coefs)
    names = _component_names(header["color_space"], n)

    fig = plt.figure(figsize=(max(3.2 * n, 6.4), 10.5), layout="constrained")
    grid = fig.add_gridspec(3, n, height_ratios=[1.5, 1, 1])
    ax = fig.add_subplot(grid[0, :])
    ax.imshow(rgb, aspect=_aspect(rgb.shape))
    title = f"{Path(path).name}: {header['width']}x{header['height']}, {header['color_space']}, " \
            f"{jpeg.sampling_name(header['components'], header['color_space'])}"
    if scale > 1:
        title += f" (shown at 1/{scale})"
    ax.set_title(title)
    ax.axis("off")
    for i, c in enumerate(coefs):
        ax = fig.add_subplot(grid[1, i])
        dc = c[:, :, 0].astype(np.float64) * float(quant[i, 0])
        im = ax.imshow(dc, cmap="gray", interpolation="nearest", aspect=_aspect(dc.shape))
        ax.set_title(f"{names[i]} DC ({c.shape[0]}x{c.shape[1]} blocks)", fontsize=9)
        ax.axis("off")
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax = fig.add_subplot(grid[2, i])
        mean = mean_abs_coefficients(c)
        positive = mean[mean > 0]
        norm = LogNorm(vmin=max(positive.min(), 1e-3), vmax=max(positive.max(), 1e-2)) if positive.size else None
        im = ax.imshow(np.where(mean > 0, mean, np.nan), cmap="viridis", norm=norm, interpolation="nearest")
        ax.set_title(f"{names[i]} mean |coef| (white: 0)", fontsize=9)
        ax.set_xticks(range(8))
        ax.set_yticks(range(8))
        ax.set_xlabel("u (horizontal frequency)", fontsize=7)
        ax.set_ylabel("v (vertical frequency)", fontsize=7)
        ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=ax, shrink=0.8)

    try:
        return write_output(out_png, lambda fh: fig.savefig(fh, format="png", dpi=90))
    finally:
        plt.close(fig)


def _aspect(shape) -> str:
    """"equal" pixels, unless the picture is so elongated (1000x1...) that it would be invisible."""
    h, w = shape[0], shape[1]
    return "auto" if max(h, w) > 8 * max(1, min(h, w)) else "equal"


def _component_names(color_space: str, n: int) -> list[str]:
    names = {"YCbCr": ["Y", "Cb", "Cr"], "RGB": ["R", "G", "B"], "CMYK": ["C", "M", "Y", "K"],
             "YCCK": ["Y", "Cb", "Cr", "K"], "GRAYSCALE": ["gray"]}.get(color_space, [])
    return [names[i] if i < len(names) else f"c{i}" for i in range(n)]


# --------------------------------------------------------------------------------------------
# Several paths
# --------------------------------------------------------------------------------------------


@dataclass
class InspectResult:
    """One path's outcome: ``kind`` "jpeg" or "store"; ``doc`` the document (None on error);
    ``error`` the JdctError that stopped it; ``written`` the files produced (plots, npz);
    ``warning`` the first libjpeg warning of a JPEG that has some, as a sentence."""

    path: str
    kind: str
    doc: Optional[dict] = None
    error: Optional[JdctError] = None
    written: list = field(default_factory=list)
    warning: Optional[str] = None


def is_store_path(path: os.PathLike | str) -> bool:
    """True for a directory, a path ending in ``.zarr`` or a store URL (``s3://...``): those are
    jdct stores, not JPEGs."""
    if is_url(path):
        return True
    p = Path(path)
    return p.suffix.lower() == ".zarr" or p.is_dir()


def output_for(out: Optional[os.PathLike | str], source: os.PathLike | str, several: bool, taken: set) -> Optional[Path]:
    """Where a per-file output goes: ``out`` itself for one input; with several inputs, the
    input's stem appended to ``out``'s stem (``plot.png`` + ``a.jpg`` -> ``plot_a.png``), with
    ``-2``, ``-3``... added when two inputs share a stem."""
    if out is None:
        return None
    out = Path(out)
    if not several:
        return out
    base = f"{out.stem}_{Path(source).stem}"
    candidate, k = out.with_name(base + out.suffix), 2
    while candidate in taken:
        candidate, k = out.with_name(f"{base}-{k}{out.suffix}"), k + 1
    taken.add(candidate)
    return candidate


def inspect_paths(
    paths: Sequence[os.PathLike | str],
    *,
    coefficients: bool = True,
    plot: Optional[os.PathLike | str] = None,
    dump: Optional[os.PathLike | str] = None,
    sample: Optional[int] = None,
    split: Optional[str] = None,
    save_jpeg: Optional[os.PathLike | str] = None,
    storage_options: Optional[dict] = None,
) -> Iterator[InspectResult]:
    """Inspect every path in turn, yielding an :class:`InspectResult` each (errors included).

    JPEG files get :func:`inspect_jpeg`, plus :func:`plot_jpeg` when ``plot`` and
    :func:`dump_coefficients` when ``dump`` (output names per :func:`output_for`). Directories and
    ``*.zarr`` paths go to :func:`jdct_cli.store.report.inspect_store` (with ``sample``, ``split``,
    ``plot`` and ``save_jpeg``). A JdctError stops only its own path. Options that apply to no given path (``sample``
    without a store, ``dump`` without a JPEG) raise ConfigError before anything is read, instead of
    being silently ignored. ``storage_options``: for the stores given by URL (see
    :mod:`jdct_cli.store.location`).
    """
    stores = [is_store_path(p) for p in paths]
    if sample is not None and not any(stores):
        raise ConfigError("--sample applies to stores (a folder or *.zarr) only; no store was given")
    if split is not None and not any(stores):
        raise ConfigError("--split applies to stores (a folder or *.zarr) only; no store was given")
    if save_jpeg is not None and not any(stores):
        raise ConfigError("--save-jpeg applies to stores (a folder or *.zarr) only; no store was given")
    if dump is not None and all(stores):
        raise ConfigError("--dump-coefficients applies to JPEG files only; no JPEG file was given")
    several = len(paths) > 1
    taken_plot: set = set()
    taken_dump: set = set()
    for path in paths:
        name = os.fspath(path)
        if is_store_path(path):
            result = InspectResult(name, "store")
            try:
                where = as_location(path, storage_options) if is_url(path) else path
                result.doc = _inspect_store(where, sample=sample, split=split,
                                            plot=output_for(plot, path, several, taken_plot), save_jpeg=save_jpeg)
            except JdctError as exc:
                result.error = exc
            yield result
            continue
        result = InspectResult(name, "jpeg")
        try:
            result.doc = inspect_jpeg(path, coefficients=coefficients or dump is not None)
            if result.doc["warnings"]:
                result.warning = jpeg.first_warning(jpeg.read_bytes(path), path=path)
            target = output_for(dump, path, several, taken_dump)
            if target is not None:
                result.written.append(str(dump_coefficients(path, target)))
            target = output_for(plot, path, several, taken_plot)
            if target is not None:
                result.written.append(str(plot_jpeg(path, target)))
        except JdctError as exc:
            result.error = exc
        yield result


def _inspect_store(path, *, sample, split, plot, save_jpeg=None):
    # imported here: the store report loads zarr, which inspecting JPEGs never needs
    try:
        from .store.report import inspect_store
    except ImportError:
        raise ConfigError("store inspection is not available in this jdct build", path) from None
    return inspect_store(path, sample=sample, split=split, plot=plot, save_jpeg=save_jpeg)


def render_store(doc: dict) -> str:
    """Text of a store document, by :func:`jdct_cli.store.report.render_store_text`."""
    from .store.report import render_store_text

    return render_store_text(doc)
