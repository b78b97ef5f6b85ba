"""The ``jdct`` command line: parse, call one library function, render, map errors.

Library modules are imported inside each command so that ``jdct --help``, ``convert`` and
``inspect`` never import torch. Every :class:`jdct_cli.errors.JdctError` becomes a one-line
``Error: <path>: <reason>`` (exit code 1), never a traceback.
"""
from __future__ import annotations

import functools
import os
import shlex
import sys

import click

from . import __version__
from .errors import Interrupted, JdctError


def _version_message() -> str:
    try:
        from ._decoder import libjpeg_version

        libjpeg = libjpeg_version()
    except ImportError:  # extension not built: still answer --version
        libjpeg = "unavailable (C extension not built)"
    return f"jdct {__version__}\nlibjpeg-turbo {libjpeg}"


def _print_version(ctx, _param, value):
    if value and not ctx.resilient_parsing:
        click.echo(_version_message())
        ctx.exit()


#: Exit code of a command stopped by Ctrl-C (128 + SIGINT), the shell's convention.
EXIT_INTERRUPTED = 130


class InterruptedExit(click.ClickException):
    """Ctrl-C: one line on stderr (no traceback, no click "Aborted!") and exit code 130."""

    exit_code = EXIT_INTERRUPTED

    def show(self, file=None):
        click.echo(self.format_message(), err=True)


def library_errors(func):
    """Turn library errors into clean click errors instead of tracebacks (Interrupted: exit 130)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Interrupted as exc:
            raise InterruptedExit(f"interrupted: {exc}") from None
        except JdctError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def storage_option(func):
    """``--storage-option KEY=VALUE`` (repeatable): options of a store given by URL."""
    return click.option(
        "--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
        help="For a store given by URL (s3://bucket/x.zarr, gs://..., az://...), repeatable: endpoint=URL, "
             "region=NAME, profile=NAME, access_key_id=ID, secret_access_key=KEY, skip_signature=true, "
             "max_retries=N, timeout=SECONDS... (credentials and endpoint otherwise come from the environment "
             "and ~/.aws as usual).")(func)


def _storage_options(pairs) -> dict:
    from .store import parse_storage_options

    return parse_storage_options(pairs)


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30,
               "t": 1 << 40, "tb": 1 << 40, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def _byte_size(_ctx, _param, value):
    """``--cache-size 50G`` -> bytes (K, M, G, T: powers of 1024)."""
    if value is None:
        return None
    import re

    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", value)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise click.BadParameter(f"{value!r} is not a size (e.g. 500M, 50G)")
    size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    if size < 1:
        raise click.BadParameter("must be positive")
    return size


def cache_options(func):
    """``--cache-dir`` and ``--cache-size``: the loader's local disk cache of a remote store."""
    func = click.option("--cache-size", callback=_byte_size, metavar="SIZE",
                        help="Bound of --cache-dir (e.g. 200G; K/M/G/T) [default: 32G].")(func)
    return click.option("--cache-dir", type=click.Path(file_okay=False, path_type=str), metavar="DIR",
                        help="Keep the byte ranges the loader reads from an object store on local disk, for the "
                             "next epochs (least recently used out beyond --cache-size; several processes may "
                             "share it).")(func)


class JdctGroup(click.Group):
    """The ``jdct`` group: one interrupt policy for every command. Ctrl-C anywhere in a command ends it
    with one line on stderr and exit code 130; commands that keep their work (train, convert) say
    in that line what they kept and how to go on."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise InterruptedExit(f"interrupted: jdct {ctx.invoked_subcommand or ''} stopped by Ctrl-C".replace(
                "  ", " ")) from None


@click.group(cls=JdctGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show jdct's and libjpeg-turbo's versions and exit.")
def main():
    """jdct: train neural networks straight from JPEG's DCT coefficients.

    \b
    jdct inspect FILE.jpg|STORE.zarr   what is inside a JPEG or a store
    jdct convert SRC OUT.zarr          JPEG folders -> sharded Zarr v3 store of DCT coefficients
    jdct verify OUT.zarr               check every chunk of a store
    jdct models                        the model zoo
    jdct train / eval / predict        train and use the networks
    jdct learn-tables                  JPEG quantization tables learned for a trained network
    jdct export CKPT OUT               weights only (.pt), ONNX (.onnx) or torch.export (.pt2)

    Ctrl-C stops any command with exit code 130 (train and convert keep their work: run the
    same command again, or jdct train --resume RUN_DIR).
    """


# ---- jdct inspect ----
@main.command("inspect")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (schemas/inspect.v1.schema.json) instead of text: one object for one "
                   "PATH, an array for several.")
@click.option("--plot", metavar="OUT.png",
              help="Also draw the decoded image, each component's DC map and the mean |coefficient| "
                   "per frequency. With several files, each file's stem is appended: plot_<stem>.png.")
@click.option("--dump-coefficients", "dump", metavar="OUT.npz",
              help="Also save arrays c0, c1, ... (int16, rows x cols x 64, natural order) and quant "
                   "(n_components x 64). With several files, OUT_<stem>.npz per file.")
@click.option("--sample", type=click.IntRange(min=0), metavar="I",
              help="Stores only: reconstruct sample I (0-based, view 0) to pixels and compare it with its "
                   "source crop (PSNR); with --plot, draw them side by side. Without --sample, --plot "
                   "draws the first 4 samples.")
@click.option("--split", metavar="NAME", help="Stores only: the split --sample/--plot read [default: the first].")
@click.option("--save-jpeg", metavar="OUT.jpg",
              help="Stores only, with --sample: write the sample as a JPEG file (a crops store's coefficients "
                   "written back losslessly; an images store's JPEG as stored).")
@click.option("--no-coefficients", is_flag=True,
              help="Read only the markers (fast on big files); zero fractions are then not reported.")
@storage_option
@library_errors
def inspect_command(paths, as_json, plot, dump, sample, split, save_jpeg, no_coefficients, storage_options):
    """Show what is inside JPEG files (or a jdct store: a folder, *.zarr or a URL such as s3://b/x.zarr).

    \b
    For each JPEG: dimensions, colour space, sampling (4:2:0, 4:4:4...), baseline/progressive/
    arithmetic, restart interval, EXIF orientation, each quantization table with its estimated
    IJG quality, coefficient array shapes and the share of zero coefficients per component.

    \b
    Examples:
      jdct inspect photo.jpg
      jdct inspect --json a.jpg b.jpg > facts.json
      jdct inspect photo.jpg --plot photo.png --dump-coefficients photo.npz
      jdct inspect data/imagenette.zarr --split val --sample 8 --plot sample8.png
      jdct inspect data/imagenette.zarr --sample 8 --save-jpeg sample8.jpg
      jdct inspect s3://bucket/imagenette.zarr --storage-option endpoint=http://minio:9000

    A file that cannot be read prints "Error: <file>: <reason>" on stderr; the others are still
    shown and the exit code is 1.
    """
    import json

    from .inspect_jpeg import inspect_paths, render_store, render_text

    docs, failed = [], False
    results = inspect_paths(list(paths), coefficients=not no_coefficients, plot=plot, dump=dump, sample=sample,
                            split=split, save_jpeg=save_jpeg, storage_options=_storage_options(storage_options))
    for i, result in enumerate(results):
        if result.error is not None:
            failed = True
            click.echo(f"Error: {result.error}", err=True)
            continue
        if as_json:
            docs.append(result.doc)
        else:
            if i:
                click.echo("")
            click.echo(render_text(result.doc, warning=result.warning) if result.kind == "jpeg"
                       else render_store(result.doc))
        for written in result.written:
            click.echo(f"wrote {written}", err=as_json)
    if as_json and (docs or len(paths) > 1):
        click.echo(json.dumps(docs[0] if len(paths) == 1 else docs, indent=2))
    if failed:
        raise SystemExit(1)


# ---- jdct convert ----
def _render_convert_summary(s: dict) -> str:
    lines = [f"converted {s['converted']} of {s['images']} images into {s['out']}"
             + (" (already complete: nothing to do)" if s.get("already_complete") else "")]
    for name, sp in s["splits"].items():
        extra = f", {sp['failed_samples']} samples kept empty (label -1)" if sp.get("failed_samples") else ""
        lines.append(f"  {name}: {sp['num_samples']} samples x {sp['views']} view(s), "
                     f"{sp['failed']} failed{extra}")
    if s["failures_by_kind"]:
        lines.append("  failures: " + ", ".join(f"{k} {v}" for k, v in s["failures_by_kind"].items())
                     + f"  (details: jdct inspect {shlex.quote(s['out'])})")
    if s.get("treatments"):
        lines.append("  stored: " + ", ".join(f"{k} {v}" for k, v in s["treatments"].items()))
    if s["samples"] and s.get("layout") == "images":
        lines.append(f"  on disk: {s['bytes_on_disk'] / 1e6:.1f} MB, {s['bytes_per_sample']:.0f} bytes/image, "
                     f"{s['bytes_vs_source']:.3f}x the source files' {s['source_bytes'] / 1e6:.1f} MB")
    elif s["samples"]:
        lines.append(f"  on disk: {s['bytes_on_disk'] / 1e6:.1f} MB, {s['bytes_per_sample']:.0f} bytes/sample, "
                     f"compression {s['compression_ratio']:.2f}x vs raw int16 coefficients")
    else:
        lines.append("  no sample was written: every image failed")
    speed = s["images_per_second"]
    lines.append(f"  {s['seconds']:.1f} s" + (f", {speed:.0f} images/s" if speed == speed and speed > 0 else "")
                 + (f" (resumed: {s['resumed_shards']} shards were already done)" if s["resumed_shards"] else ""))
    return "\n".join(lines)


class _TqdmProgress:
    """Library progress callback -> one tqdm bar per stage (hidden when quiet or not a terminal)."""

    def __init__(self, quiet: bool):
        self.disable = quiet or not sys.stderr.isatty()
        self.bars = {}

    def __call__(self, stage: str, done: int, total: int):
        if stage == "stopping":
            self.close()
            click.echo(f"interrupted: letting {total} running task(s) finish (Ctrl-C again to abandon them)",
                       err=True)
            return
        if self.disable:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            desc = {"plan": "reading headers", "convert": "converting"}.get(stage, stage)
            # initial=done: a resumed conversion starts with its finished shards counted
            self.bars[stage] = tqdm(total=total, initial=done, desc=desc, unit="img", dynamic_ncols=True,
                                    smoothing=0.1)
            return
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    def close(self):
        for bar in self.bars.values():
            bar.close()


@main.command("convert")
@click.argument("src", type=click.Path(file_okay=False, path_type=str))
@click.argument("out", type=click.Path(path_type=str))
@click.option("--layout", type=click.Choice(["crops", "images"]), default="crops", show_default=True,
              help="crops: fixed augmented crops as DCT coefficients (the loader only dequantizes); images: "
                   "each image once as a JPEG, the loader entropy-decodes a fresh crop every epoch.")
@click.option("--size", type=int, default=224, show_default=True,
              help="Crop side in pixels (a multiple of 16, at most 4096). Images layout: the side of the crops "
                   "the statistics are computed on (the loader chooses the crop size).")
@click.option("--quality", type=click.IntRange(1, 100), default=100, show_default=True,
              help="JPEG quality of the re-encoded crops (sets the quantization tables).")
@click.option("--views", type=click.IntRange(min=1), default=1, show_default=True,
              help="Independently augmented passes over the train images (epoch e reads view e mod V).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Seed of every random draw (crops and sample order).")
@click.option("--exif", type=click.Choice(["ignore", "apply"]), default="ignore", show_default=True,
              help="EXIF orientation: ignore it (torchvision's ImageFolder) or turn images upright first.")
@click.option("--exact-decode", is_flag=True,
              help="Decode every image fully at full scale (no ROI decoding, no DCT scaling): slower, "
                   "the reference.")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=str), metavar="FILE",
              help="'filename,class' lines giving the classes of a flat folder (e.g. ImageNet's val/).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes [default: all cores]; 1 converts in this process.")
@click.option("--chunk-samples", type=click.IntRange(min=1), default=64, show_default=True,
              help="Samples per Zarr chunk (the unit a reader decompresses).")
@click.option("--codec", type=click.Choice(["lz4", "zstd"]), default="lz4", show_default=True,
              help="Blosc codec of the chunks (bit-shuffled): lz4 (level 5) decodes 2.3-2.5x faster, zstd "
                   "(level 1) is 1.3-1.5x smaller.")
@click.option("--max-side", type=click.IntRange(min=0), default=None, metavar="PIXELS",
              help="Images layout: images with a longer side are re-encoded (DCT-scaled decode, resize, "
                   "quality 100 4:2:0) to this longest side; 0: no limit [default: 2048].")
@click.option("--restart-segments", is_flag=True,
              help="Images layout: transcode every file losslessly with restart markers, so that the loader "
                   "entropy-decodes only a crop's own MCUs (about 2x less on large images; conversion ~3 ms "
                   "slower per image).")
@click.option("--check", type=click.Choice(["markers", "decode"]), default="markers", show_default=True,
              help="Images layout, files stored verbatim: check their marker structure to EOI (fast: a "
                   "truncated file fails) or decode every coefficient strictly (damage inside the data fails too).")
@click.option("--stats-images", type=click.IntRange(min=0), default=256, show_default=True,
              help="Images layout: train images whose RandomResizedCrop at --size/--quality give the per-channel "
                   "statistics the loader normalizes with (0: none).")
@click.option("--shard-samples", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Samples per shard file (a multiple of --chunk-samples; one task writes one shard).")
@click.option("--on-error", type=click.Choice(["record", "fail"]), default="record", show_default=True,
              help="record: note a failing image (not a JPEG, corrupt, truncated, too large, unsupported) "
                   "with its reason and go on; fail: stop at the first one.")
@click.option("--overwrite", is_flag=True, help="Delete an existing store at OUT and convert again.")
@click.option("--dask-scheduler", metavar="ADDRESS",
              help="Run the shard tasks on this Dask distributed scheduler (tcp://host:8786); its workers read "
                   "SRC at the same path (a shared filesystem) and write OUT (a shared filesystem or an "
                   "object-store URL).")
@storage_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@library_errors
def convert_command(src, out, layout, size, quality, views, seed, exif, exact_decode, labels, workers,
                    chunk_samples, codec, max_side, restart_segments, check, stats_images, shard_samples, on_error,
                    overwrite, dask_scheduler, storage_options, quiet):
    """Convert JPEG folders SRC into a sharded Zarr v3 store OUT (crops or images).

    OUT is a folder or an object-store URL (s3://bucket/in.zarr, gs://, az://): every worker
    writes its shards straight there.

    \b
    SRC layouts: SRC/train/<class>/*.jpg and/or SRC/val/<class>/*.jpg (each a split), or
    SRC/<class>/*.jpg (one split, "train"), or flat folders with --labels (ImageNet's
    train/<class>/ next to a flat val/: --labels names the val files, train keeps its folders).
    crops layout: train samples: RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3); val: resize the
    shorter side to round(size/0.875) and centre-crop. Crops are resized with Pillow's antialiased
    bilinear filter and stored as their quantized 4:2:0 coefficients at --quality.
    images layout: each image once, as a JPEG: baseline files byte for byte, progressive and
    arithmetic ones transcoded losslessly, CMYK, odd samplings and images over --max-side
    re-encoded (quality 100, 4:2:0); the loader draws a fresh crop of every image every epoch.

    \b
    Interrupted (Ctrl-C, kill)? Run the same command again: finished shards are kept.

    \b
    Examples:
      jdct convert ~/data/imagenette2 imagenette.zarr
      jdct convert ~/imagenet in224.zarr --views 4 --workers 32
      jdct convert ~/imagenet/val val.zarr --labels val_labels.csv --size 224
      jdct convert tiny/ tiny.zarr --size 64 --shard-samples 256 --chunk-samples 32
      jdct convert ~/imagenet in.zarr --layout images --max-side 512
      jdct convert ~/imagenet s3://bucket/in224.zarr --workers 16
      jdct convert /shared/imagenet s3://bucket/in.zarr --dask-scheduler tcp://10.0.0.1:8786
    """
    from .convert import ConvertOptions, convert
    from .convert.options import DEFAULT_MAX_SIDE

    opts = ConvertOptions(size=size, quality=quality, views=views, seed=seed, exif=exif,
                          exact_decode=exact_decode, chunk_samples=chunk_samples, shard_samples=shard_samples,
                          layout=layout, codec=codec,
                          max_side=DEFAULT_MAX_SIDE if max_side is None else max_side,
                          restart_segments=restart_segments, check=check, stats_images=stats_images)
    bar = _TqdmProgress(quiet)
    try:
        summary = convert(src, out, options=opts, labels=labels, workers=workers, on_error=on_error,
                          overwrite=overwrite, dask_scheduler=dask_scheduler, progress=bar,
                          storage_options=_storage_options(storage_options))
    finally:
        bar.close()
    if not quiet:
        click.echo(_render_convert_summary(summary))


# ---- jdct verify ----
@main.command("verify")
@click.argument("store", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar; print only problems.")
@storage_option
@library_errors
def verify_command(store, as_json, quiet, storage_options):
    """Read every chunk of a jdct store and check it.

    \b
    Checks: every chunk's CRC32C checksum (and every shard index's), shard files present,
    array shapes and dtypes against attrs["jdct"], labels and image indices in range, per-split
    counts. An incomplete store (interrupted conversion) lists the shards still to do.
    Exit code 0 when intact, 1 when anything is damaged or missing.

    \b
    Examples:
      jdct verify imagenette.zarr
      jdct verify s3://bucket/imagenette.zarr
    """
    import json

    from .store import as_location
    from .store.report import render_verify_text, verify_store

    location = as_location(store, _storage_options(storage_options))
    bar = _TqdmProgress(quiet)
    try:
        report = verify_store(location, progress=bar)
    finally:
        bar.close()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif not (quiet and report["ok"]):
        click.echo(render_verify_text(report))
    if not report["ok"]:
        raise SystemExit(1)


# ---- jdct models ----
@main.command("models")
@click.argument("names", nargs=-1, metavar="[NAME...]")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (schemas/models.v1.schema.json) instead of a table.")
@click.option("--size", type=int, default=224, show_default=True, metavar="PIXELS",
              help="Input side at which GMACs are counted (a multiple of 16).")
@click.option("--long", "-l", "descriptions", is_flag=True, help="Add a column describing each network.")
@library_errors
def models_command(names, as_json, size, descriptions):
    """List the model zoo: input kind, parameters, GMACs and the paper's results.

    \b
    Every network registered in jdct_cli.models (or only NAME...): the input it takes
    ("dct": Y, Cb, Cr coefficients; "rgb"/"ycbcr": pixels), its parameter count, its
    multiply-accumulates per image counted by forward hooks over conv, transposed-conv and
    linear layers, and the ImageNet top-1/top-5 error (%) and inference FPS (batch 1024, one
    Pascal GPU) that Gueguen et al. 2018 report, "-" where they report none.

    \b
    Examples:
      jdct models
      jdct models --long late_concat_rfa_thinner upsampling_rfa
      jdct models --json --size 256 > zoo.json
    """
    import json

    from tqdm import tqdm

    from .models import list_models
    from .models.cost import render_table, zoo_document

    with tqdm(total=len(names) or len(list_models()), desc="counting", unit="model", leave=False, disable=None) as bar:
        doc = zoo_document(size, list(names) or None, progress=lambda _name: bar.update(1))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(render_table(doc["models"], size, descriptions))


# ---- jdct train / eval / predict / export ----
def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _mb(nbytes) -> str:
    return "?" if nbytes is None else f"{nbytes / 1e6:.0f} MB"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _epoch_line(ev: dict) -> str:
    """One line per epoch: LR, train loss/top-1, validation (when the run has one), speed, time."""
    line = f"epoch {ev['epoch']}: lr {ev['lr']:.3g}  train loss {ev['train_loss']:.4f} top-1 {_pct(ev['train_top1'])}"
    if ev["val_loss"] is not None:
        line += f"  |  val loss {ev['val_loss']:.4f} top-1 {_pct(ev['val_top1'])}"
        if ev["val_top5"] is not None:
            line += f" top-5 {_pct(ev['val_top5'])}"
        line += f" ({ev['val_samples']} samples)"
    line += f"  |  {ev['images_per_s']:.1f} img/s, {ev['epoch_time_s']:.1f} s"
    return line + ("  *best*" if ev.get("best") else "")


class _TrainProgress:
    """Training progress events -> a tqdm bar per epoch (loss, img/s, lr) and one line per epoch."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.val_bar = None

    def close(self):
        for bar in (self.bar, self.val_bar):
            if bar is not None:
                bar.close()
        self.bar = self.val_bar = None

    def __call__(self, ev: dict):
        if self.quiet:
            return
        from tqdm import tqdm

        kind = ev["event"]
        if kind == "start" and not ev["complete"]:
            what = "resuming" if ev["resumed"] else "training"
            val = f"validating on {ev['validation']!r}" if ev["validation"] else "no validation"
            click.echo(f"{what} {ev['arch']} ({ev['input_kind']} inputs) on {ev['device']} x{ev['world_size']}: "
                       f"epoch {min(ev['start_epoch'] + 1, ev['epochs'])}/{ev['epochs']}, "
                       f"{ev['steps_per_epoch']} steps/epoch, global batch {ev['global_batch_size']}, "
                       f"base lr {ev['lr']:g}, {val}; checkpoints ~{_mb(ev['checkpoint_bytes'])} each "
                       f"-> {ev['run_dir']}", err=True)
        elif kind == "epoch_start":
            self.close()
            self.bar = tqdm(total=ev["total"], initial=ev["done"], desc=f"epoch {ev['epoch']}/{ev['epochs']}",
                            unit="step", dynamic_ncols=True, disable=None, leave=False)
        elif kind == "step" and self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{ev['loss']:.3f}", img_s=f"{ev['images_per_s']:.0f}", lr=f"{ev['lr']:.3g}",
                                 refresh=False)
        elif kind == "val_start":
            self.val_bar = tqdm(total=ev["total"], desc="  validation", unit="batch", dynamic_ncols=True,
                                disable=None, leave=False)
        elif kind == "val_step" and self.val_bar is not None:
            self.val_bar.update(1)
        elif kind == "epoch_end":
            self.close()
            click.echo(_epoch_line(ev), err=True)
        elif kind in ("interrupted", "done"):
            self.close()


def _milestones(_ctx, _param, value):
    if value is None:
        return None
    try:
        values = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter("a comma-separated list of epochs, e.g. 30,60,80 (or 0.5,1.5)") from None
    return [int(v) if v == int(v) else v for v in values]


@main.command("train")
@click.option("--arch", metavar="NAME", help="Network to train (`jdct models` lists them).")
@click.option("--data", metavar="STORE", type=click.Path(path_type=str), help="The jdct store (jdct convert).")
@click.option("--out", metavar="RUN_DIR", type=click.Path(path_type=str),
              help="Run directory: config.json, metrics.jsonl, last.pt, best.pt [default: runs/<arch>].")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs [default: 90].")
@click.option("--batch-size", type=click.IntRange(min=1), help="Images per process and step [default: 64].")
@click.option("--lr", type=click.FloatRange(min=0), help="Base learning rate [default: 0.1 x global batch / 256].")
@click.option("--head-lr-scale", type=click.FloatRange(min=0),
              help="The final classifier's LR as a fraction of --lr [default: min(1, classes/1000): the "
                   "recipe's ImageNet step size for any class count].")
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), help="SGD momentum [default: 0.9].")
@click.option("--weight-decay", type=click.FloatRange(min=0), help="Weight decay [default: 1e-4].")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True),
              help="Weight of the uniform distribution mixed into the cross-entropy targets (0 = plain "
                   "one-hot targets) [default: 0].")
@click.option("--warmup-epochs", type=click.FloatRange(min=0),
              help="Linear warm-up length [default: 5 x epochs/90 when the global batch exceeds 256, else 0].")
@click.option("--milestones", callback=_milestones, metavar="E1,E2,...",
              help="Epochs (fractions allowed) where the LR is multiplied by 0.1 [default: 1/3, 2/3, 8/9 of "
                   "--epochs; '' = none].")
@click.option("--seed", type=int, help="Seed of the weights and the data order [default: 0].")
@click.option("--val-split", metavar="SPLIT",
              help="Split validated after every epoch, or 'none' to train without validation (then no "
                   "best.pt) [default: val].")
@click.option("--device", metavar="DEVICE", help="cpu, cuda, cuda:N or auto [default: auto]. Under torchrun each process "
                               "takes cuda:LOCAL_RANK.")
@click.option("--threads", type=click.IntRange(min=1),
              help="Loader threads per process reading store chunks [default: CPU count, at most 4].")
@click.option("--amp/--no-amp", default=None, help="bf16 autocast on CUDA [default: on]; ignored on CPU.")
@click.option("--compile", "compile_", is_flag=True, default=None, help="torch.compile the model.")
@click.option("--jpeg-layer", type=click.Choice(["learned", "none"]),
              help="'learned': a trainable JPEG layer (JPEG-DL) in front of the network: soft quantization "
                   "of the coefficients with learned luma and chroma tables (for pixel networks: block DCT, "
                   "soft quantization, IDCT); the tables go to RUN_DIR/tables.json [default: none].")
@click.option("--jpeg-hardness", type=click.FloatRange(min=0, min_open=True),
              help="h of the soft quantizer (alpha = h / q^2; larger: closer to rounding) [default: 0.7].")
@click.option("--jpeg-lr", type=click.FloatRange(min=0), help="The tables' learning rate [default: 0.01].")
@click.option("--jpeg-optimizer", type=click.Choice(["adam", "sgd"]),
              help="The tables' optimizer, without weight decay (sgd: with --momentum) [default: adam].")
@click.option("--jpeg-init", metavar="data|STEP|qQUALITY",
              help="Starting tables: 'data' = 2 E|x| / sqrt(2^(b-1)) per frequency over training data, a "
                   "constant step (1.0 = quality 100), or libjpeg's tables of a quality (q50) [default: data].")
@click.option("--jpeg-bits", type=click.IntRange(3, 16),
              help="b: the soft quantizer's candidate indices stay in b-bit range [default: 11].")
@click.option("--quality-augment", metavar="LOW:HIGH|TABLES.json",
              help="Requantize every training sample on the device: to the tables of an IJG quality drawn "
                   "per sample from LOW..HIGH (e.g. 30:100), or to a tables file's [default: off].")
@click.option("--size", type=click.IntRange(min=16), metavar="PIXELS",
              help="Crop side (a multiple of 16) of an images-layout store, cropped afresh every epoch; a "
                   "crops-layout store has its size fixed at conversion [default: the size the store's "
                   "statistics were made at, else 224].")
@click.option("--size-schedule", metavar="LOW:HIGH",
              help="Progressive resizing on an images-layout store: the training crop side grows linearly "
                   "from LOW at the first epoch to HIGH at the last, in multiples of 16 (FFCV's ResNet-50 "
                   "recipe: 160:192); validation at --size, else HIGH [default: off].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=str), metavar="FILE",
              help="YAML or JSON file of these options (underscores or dashes); flags override it.")
@click.option("--resume", metavar="RUN_DIR", type=click.Path(file_okay=False, path_type=str),
              help="Continue the run saved in RUN_DIR exactly (step, LR, optimizer, data order); with "
                   "--data if its store has moved.")
@storage_option
@cache_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or per-epoch lines.")
@library_errors
def train_command(arch, data, out, epochs, batch_size, lr, head_lr_scale, momentum, weight_decay, label_smoothing,
                  warmup_epochs, milestones, seed, val_split, device, threads, amp, compile_, jpeg_layer,
                  jpeg_hardness, jpeg_lr, jpeg_optimizer, jpeg_init, jpeg_bits, quality_augment, size, size_schedule,
                  config_file, resume, storage_options, cache_dir, cache_size, quiet):
    """Train a network of the zoo on a jdct store (the paper's ResNet-50 recipe).

    \b
    SGD with momentum 0.9 and weight decay 1e-4, LR 0.1 x global batch / 256 (the classifier's
    x min(1, classes/1000)), x0.1 at 1/3, 2/3 and 8/9 of the run, linear warm-up when the global
    batch exceeds 256; residual branches start at zero. DCT networks get coefficients, the
    pixel baselines pixels rebuilt from the same store. On CUDA: bf16 autocast and
    channels_last. Every epoch writes RUN_DIR/last.pt (best.pt on a new best val top-1; the
    start line says how large a checkpoint is, and a disk without room for one is an error
    before anything is lost) and a line of RUN_DIR/metrics.jsonl. Ctrl-C saves a resumable
    checkpoint (exit 130). `jdct export` makes a weights-only copy for sharing.

    \b
    Examples:
      jdct train --arch upsampling_rfa --data imagenet.zarr --out runs/ups
      jdct train --config recipe.yaml --epochs 30 --batch-size 128
      jdct train --arch late_concat --data train-only.zarr --val-split none
      jdct train --resume runs/ups
      jdct train --arch late_concat_rfa_thinner --data in.zarr --jpeg-layer learned --jpeg-lr 0.01
      jdct train --arch resnet50_rgb --data in.zarr --quality-augment 30:100
      jdct train --arch upsampling_rfa --data images.zarr --size-schedule 160:192 --size 224
      torchrun --nproc_per_node=8 -m jdct_cli train --arch late_concat_rfa_thinner --data in.zarr
      jdct train --arch upsampling --data s3://bucket/in.zarr --cache-dir /scratch/jdct --cache-size 200G

    
    A store given by URL is streamed from object storage (--storage-option, --cache-dir,
    --cache-size are not recorded in the run: give them again with --resume).
    """
    from .config import build_config
    from .train import train

    given = dict(arch=arch, data=data, out=out, epochs=epochs, batch_size=batch_size, lr=lr,
                 head_lr_scale=head_lr_scale, momentum=momentum,
                 weight_decay=weight_decay, label_smoothing=label_smoothing, warmup_epochs=warmup_epochs,
                 milestones=milestones, seed=seed, val_split=val_split, device=device, threads=threads, amp=amp,
                 compile=compile_, jpeg_layer=jpeg_layer, jpeg_hardness=jpeg_hardness, jpeg_lr=jpeg_lr,
                 jpeg_optimizer=jpeg_optimizer, jpeg_init=jpeg_init, jpeg_bits=jpeg_bits,
                 quality_augment=quality_augment, size=size, size_schedule=size_schedule)
    if resume is not None:
        if config_file is not None:
            raise click.UsageError("--resume uses the run's saved config; drop --config")
        config = {k: v for k, v in given.items() if v is not None}
    else:
        config = build_config(config_file, **given)
    progress = _TrainProgress(quiet)
    try:
        result = train(config, resume=resume, progress=progress, storage_options=_storage_options(storage_options),
                       cache_dir=cache_dir, cache_bytes=cache_size)
    finally:
        progress.close()
    if result.rank != 0:
        return
    if result.interrupted:
        raise InterruptedExit(f"interrupted after step {result.steps}: saved {result.run_dir / 'last.pt'}; "
                              f"continue with: jdct train --resume {result.run_dir}")
    m = result.last_metrics
    if quiet:
        return
    last = "" if m is None or m["val_top1"] is None else (
        f"; last val top-1 {_pct(m['val_top1'])}" + (f" top-5 {_pct(m['val_top5'])}" if m["val_top5"] is not None
                                                     else "") + f", best top-1 {_pct(result.best_top1)}")
    if result.already_complete:
        click.echo(f"nothing to do: the run is already complete ({result.epochs_done}/{result.epochs} epochs, "
                   f"{_plural(result.steps, 'step')}{last}); {result.run_dir}")
    else:
        click.echo(f"done: {_plural(result.epochs_done, 'epoch')}, {_plural(result.steps, 'step')}{last}; "
                   f"{result.run_dir}")


@main.command("eval")
@click.option("--checkpoint", required=True, type=click.Path(path_type=str), metavar="CKPT",
              help="A checkpoint (.pt, or a weights-only export) or a RUN_DIR (its last.pt).")
@click.option("--data", type=click.Path(path_type=str), metavar="STORE",
              help="The jdct store [default: the store the checkpoint was trained on].")
@click.option("--split", default="val", show_default=True, metavar="SPLIT", help="Split of the store to evaluate.")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Images per batch; does not change the results [default: the training batch size].")
@click.option("--device", default="auto", show_default=True, metavar="DEVICE", help="cpu, cuda, cuda:N or auto.")
@click.option("--threads", type=click.IntRange(min=1), help="Loader reading threads.")
@click.option("--requantize", metavar="QUALITY|TABLES.json",
              help="Requantize every sample with libjpeg's tables of this quality (1..100) or a tables file "
                   "(jdct learn-tables, RUN_DIR/tables.json) first, and report the bits per pixel they cost.")
@click.option("--no-real-size", is_flag=True,
              help="With --requantize: skip writing the real JPEG files (only the estimated bits per pixel).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schemas/eval.v1.schema.json).")
@storage_option
@cache_options
@library_errors
def eval_command(checkpoint, data, split, batch_size, device, threads, requantize, no_real_size, as_json,
                 storage_options, cache_dir, cache_size):
    """Loss, top-1 and top-5 of a checkpoint on a split of a store.

    \b
    The same validation pass as training: every sample once, no flips, mean cross-entropy
    without label smoothing. Top-5 is left out (null in JSON) with 5 classes or fewer.

    \b
    --requantize: each sample's coefficients are quantized again with the given tables
    (round(x/q) q, on the device) before the network sees them; the report adds the estimated
    bits per pixel (entropy of the indices, per frequency over the split) and the real bits per
    pixel of baseline 4:2:0 JPEGs written by libjpeg with those tables and optimized Huffman
    tables from each sample's image (entropy-coded bytes only: headers and tables excluded).

    \b
    Examples:
      jdct eval --checkpoint runs/ups/best.pt
      jdct eval --checkpoint runs/ups --data imagenet.zarr --split train --json
      jdct eval --checkpoint runs/ups/best.pt --requantize 50
      jdct eval --checkpoint runs/ups/best.pt --requantize j4d.json --json
    """
    if no_real_size and requantize is None:
        raise click.UsageError("--no-real-size goes with --requantize")
    import json

    from tqdm import tqdm

    from .evaluate import evaluate

    bar = None

    def progress(ev):
        nonlocal bar
        if ev["event"] == "val_start":
            bar = tqdm(total=ev["total"], desc="evaluating", unit="batch", disable=None, leave=False)
        elif bar is not None:
            bar.update(1)

    try:
        res = evaluate(checkpoint, data, split=split, batch_size=batch_size, device=device, threads=threads,
                       progress=progress, requantize=requantize, real_size=not no_real_size,
                       storage_options=_storage_options(storage_options), cache_dir=cache_dir,
                       cache_bytes=cache_size)
    finally:
        if bar is not None:
            bar.close()
    if as_json:
        click.echo(json.dumps(res, indent=2))
    else:
        top5 = "" if res["top5"] is None else f"  top-5 {_pct(res['top5'])}"
        click.echo(f"{res['arch']} on {res['data']} [{res['split']}], {res['samples']} samples: "
                   f"loss {res['loss']:.4f}  top-1 {_pct(res['top1'])}{top5}")
        if "requantize" in res:
            click.echo(_requantize_line(res["requantize"]))


def _bpp(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _requantize_line(r: dict) -> str:
    """The cost line of a requantized evaluation."""
    what = f"IJG quality {r['quality']}" if r.get("quality") is not None else f"tables {r.get('tables_file')}"
    line = f"  requantized with {what}: estimated {_bpp(r['estimated_bpp'])} bpp"
    if r.get("real_bpp") is not None:
        line += (f", real JPEGs {_bpp(r['real_bpp'])} bpp (per image {_bpp(r.get('real_bpp_min'))}.."
                 f"{_bpp(r.get('real_bpp_max'))}; entropy-coded bytes, headers excluded)")
    return line


@main.command("learn-tables")
@click.option("--checkpoint", required=True, type=click.Path(path_type=str), metavar="CKPT",
              help="The trained network (a checkpoint, an export or a RUN_DIR); it stays frozen.")
@click.option("--data", type=click.Path(path_type=str), metavar="STORE",
              help="The store to learn on [default: the store the checkpoint was trained on].")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=str), metavar="TABLES.json",
              help="Where to write the learned tables (jdct-quant-tables format).")
@click.option("--rate-weight", required=True, type=click.FloatRange(min=0), metavar="L",
              help="lambda in loss = cross-entropy + lambda x estimated bits per pixel (larger: fewer bits).")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Passes over --split (fractions allowed).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.02, show_default=True,
              help="Adam's learning rate, on the logarithm of the steps (about the relative change of "
                   "every step per optimizer step).")
@click.option("--hardness", type=click.FloatRange(min=0, min_open=True), default=8.0, show_default=True,
              help="h of the soft quantizer (alpha = h / q^2); softer (smaller) inflates the rate estimate: "
                   "every coefficient then spreads probability over its neighbours.")
@click.option("--init", default="q50", show_default=True, metavar="qQUALITY|TABLES.json|checkpoint",
              help="Starting tables: libjpeg's of a quality, a tables file, or the checkpoint's own learned ones.")
@click.option("--split", default="train", show_default=True, metavar="SPLIT", help="Split the tables are learned on.")
@click.option("--val-split", default="val", show_default=True, metavar="SPLIT",
              help="Split the learned tables are evaluated on ('none': skip).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Images per step [default: the training batch size].")
@click.option("--no-real-size", is_flag=True, help="Skip writing real JPEGs when evaluating (estimate only).")
@click.option("--device", default="auto", show_default=True, metavar="DEVICE", help="cpu, cuda, cuda:N or auto.")
@click.option("--threads", type=click.IntRange(min=1), help="Loader reading threads.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@library_errors
def learn_tables_command(checkpoint, data, out, rate_weight, epochs, lr, hardness, init, split, val_split, batch_size,
                         no_real_size, device, threads, as_json, quiet):
    """Learn JPEG quantization tables for a trained network (J4D): fewer bits, same accuracy.

    \b
    The network is frozen; the luma and chroma tables (natural order, libjpeg's scale) are
    trained with Adam (on their logarithms) to minimize cross-entropy + L x bits per pixel, where the bits are the
    soft quantizer's rate estimate (per frequency, the entropy of the batch's index
    distribution; Cb and Cr pooled). The tables are kept in 1..255 and written rounded (what
    libjpeg uses), with the float steps beside them. Then, on --val-split, the network is
    evaluated on inputs requantized with the written tables, with the estimated and the real
    bits per pixel (JPEGs written by libjpeg with them, headers excluded).

    \b
    Examples:
      jdct learn-tables --checkpoint runs/thin/best.pt --rate-weight 0.5 --out j4d-0.5.json
      jdct eval --checkpoint runs/thin/best.pt --requantize j4d-0.5.json
    """
    import json

    from tqdm import tqdm

    from .tables import learn_tables

    bars = {}

    def progress(ev):
        if quiet:
            return
        kind = ev["event"]
        if kind == "start":
            bars["train"] = tqdm(total=ev["steps"], desc="learning tables", unit="step", disable=None, leave=False)
        elif kind == "step" and "train" in bars:
            bars["train"].update(1)
            bars["train"].set_postfix(loss=f"{ev['loss']:.3f}", bpp=f"{ev['bpp']:.3f}", refresh=False)
        elif kind == "val_start":
            for bar in bars.values():
                bar.close()
            bars["val"] = tqdm(total=ev["total"], desc="evaluating", unit="batch", disable=None, leave=False)
        elif kind == "val_step" and "val" in bars:
            bars["val"].update(1)

    try:
        res = learn_tables(checkpoint, data, out, rate_weight=rate_weight, epochs=epochs, lr=lr, hardness=hardness,
                           init=init, split=split, val_split=None if val_split.lower() == "none" else val_split,
                           batch_size=batch_size, device=device, threads=threads, real_size=not no_real_size,
                           progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    last = res["train_last"] or {}
    click.echo(f"wrote {res['out']}: tables learned for {res['arch']} with rate weight {res['rate_weight']:g} "
               f"({_plural(res['steps'], 'step')} on {res['split']!r} from {res['init']}; last step: "
               f"cross-entropy {last.get('task_loss', float('nan')):.4f}, estimated {_bpp(last.get('bpp'))} bpp)")
    q = res["estimated_quality"]
    click.echo(f"  nearest IJG qualities: luma {q['luma']}, chroma {q['chroma']}")
    if "val" in res:
        v = res["val"]
        top5 = "" if v["top5"] is None else f"  top-5 {_pct(v['top5'])}"
        click.echo(f"  on {val_split!r} ({v['samples']} samples), requantized with the written tables: loss "
                   f"{v['loss']:.4f}  top-1 {_pct(v['top1'])}{top5}")
        line = f"  estimated {_bpp(v['estimated_bpp'])} bpp"
        if v.get("real_bpp") is not None:
            line += f", real JPEGs {_bpp(v['real_bpp'])} bpp (entropy-coded bytes, headers excluded)"
        click.echo(line)


@main.command("predict")
@click.option("--checkpoint", required=True, type=click.Path(path_type=str), metavar="CKPT",
              help="A checkpoint (.pt, or a weights-only export) or a RUN_DIR (its last.pt).")
@click.argument("images", nargs=-1, type=click.Path(path_type=str), metavar="IMAGE|FOLDER|GLOB...")
@click.option("--files-from", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True, path_type=str),
              help="Also classify the files listed in FILE, one path a line ('-': standard input).")
@click.option("--direct", is_flag=True,
              help="Feed the file's own coefficients (no decode, no re-encode) when it is 4:2:0 with "
                   "sides multiple of 16; otherwise say why and use the val transform.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Images per forward pass (with --direct, images of one size share a batch).")
@click.option("--threads", type=click.IntRange(min=1),
              help="Threads reading and decoding files ahead of the network [default: the cores, at most 8].")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Classes shown per image.")
@click.option("--class-names", type=click.Path(dir_okay=False, path_type=str), metavar="FILE",
              help="Readable class names: '<class folder> <name>' lines (e.g. Tiny-ImageNet's classes.txt); "
                   "an error when it names none of the checkpoint's classes.")
@click.option("--device", default="auto", show_default=True, metavar="DEVICE", help="cpu, cuda, cuda:N or auto.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document at the end (schemas/eval.v1.schema.json).")
@click.option("--jsonl", is_flag=True,
              help="Print one JSON line per image as results come (schemas/predict-record.v1.schema.json).")
@library_errors
def predict_command(checkpoint, images, files_from, direct, batch_size, threads, top_k, class_names, device, as_json,
                    jsonl):
    """Top-5 classes with probabilities for JPEG images: files, folders, glob patterns.

    \b
    By default each image gets the store's val transform (resize the shorter side to
    round(S/0.875), centre-crop S, 4:2:0 coefficients at the training store's quality).
    Files are read and decoded by a pool of threads ahead of batched inference; results come
    in the order of the inputs, each as soon as it is ready. A folder means every image file
    under it; a bad file is reported (`Error: FILE: reason`, or an "error" record) and the
    others go on; the exit code is then 1. Ctrl-C stops at once (exit 130); every line already
    printed is complete.

    \b
    Examples:
      jdct predict --checkpoint runs/ups/best.pt cat.jpg dog.jpg
      jdct predict --checkpoint runs/ups --direct --json photo.jpg
      jdct predict --checkpoint runs/ups --direct --jsonl ~/photos 'more/**/*.jpg' > labels.jsonl
      find /data -name '*.JPEG' | jdct predict --checkpoint best.pt --files-from - --jsonl
      jdct predict --checkpoint runs/tiny --class-names tiny-imagenet/classes.txt img.JPEG
    """
    import json

    from tqdm import tqdm

    from .predict import FORMAT_VERSION, PREDICT_FORMAT, expand_inputs, predict_records, read_file_list
    from .train.signals import StopFlag

    if as_json and jsonl:
        raise click.UsageError("--json and --jsonl exclude each other")
    entries = expand_inputs(images, read_file_list(files_from) if files_from else None)
    if not entries:
        raise click.UsageError("no images: give files, folders or glob patterns, or --files-from FILE")
    stop = StopFlag()
    results, errors = [], []

    def out(text: str, err: bool = False) -> None:
        with tqdm.external_write_mode():
            click.echo(text, err=err)

    with stop.installed():
        predictor, records = predict_records(checkpoint, entries, direct=direct, top_k=top_k, device=device,
                                             batch_size=batch_size, threads=threads, class_names=class_names,
                                             should_stop=lambda: stop.requested)
        with tqdm(total=len(entries), desc="predicting", unit="img", disable=None, leave=False) as bar:
            try:
                for rec in records:
                    bar.update(1)
                    if "error" in rec:
                        errors.append({"file": rec["file"], "reason": rec["error"]})
                        out(f"Error: {rec['file']}: {rec['error']}", err=True)
                        if jsonl:
                            out(json.dumps(rec))
                        continue
                    if jsonl:
                        out(json.dumps(rec))
                    elif as_json:
                        results.append(rec)
                    else:  # text: a blank line between images
                        lines = ([""] if results else []) + [f"{rec['file']}  ({rec['mode']})"]
                        results.append(rec)
                        if rec["note"]:
                            lines.append(f"  note: {rec['note']}")
                        lines += [f"  {r}. {100 * t['probability']:6.2f}%  {t['class']}"
                                  for r, t in enumerate(rec["top"], 1)]
                        out("\n".join(lines))
            except BrokenPipeError:
                # the reader went away (`| head`): stop quietly, as command-line tools do
                sys.stdout = open(os.devnull, "w")
                raise SystemExit(141) from None
    if as_json:
        doc = {"format": PREDICT_FORMAT, "format_version": FORMAT_VERSION, "checkpoint": checkpoint,
               "arch": predictor.arch, "predictions": results}
        if errors:
            doc["errors"] = errors
        click.echo(json.dumps(doc, indent=2))
    if errors:
        raise SystemExit(1)


@main.command("export")
@click.argument("paths", nargs=-1, type=click.Path(path_type=str), metavar="[CKPT] OUT")
@click.option("--checkpoint", type=click.Path(path_type=str), metavar="CKPT",
              help="The checkpoint (instead of the first argument): a .pt file or a RUN_DIR (its last.pt).")
@click.option("--format", "kind", type=click.Choice(["weights", "onnx", "pt2"]),
              help="What to write [default: from OUT's extension: .pt weights, .onnx ONNX, .pt2 torch.export].")
@click.option("--opset", type=click.IntRange(min=18), help="ONNX opset version [default: the exporter's].")
@click.option("--json", "as_json", is_flag=True, help="Print what was written, and the check, as JSON.")
@library_errors
def export_command(paths, checkpoint, kind, opset, as_json):
    """Export a checkpoint: weights only (.pt), ONNX (.onnx) or torch.export (.pt2).

    \b
    OUT.pt: a weights-only copy for sharing. It keeps what `jdct eval` and `jdct predict`
    need (network, classes, weights, the training store's facts, config and last metrics) and
    drops the optimizer's momentum and the loader and RNG state: about half the size. It
    cannot be resumed; keep the run's own checkpoints for that.

    \b
    OUT.onnx / OUT.pt2: the network for deployment, with the loader's normalization built in.
    Inputs: DCT networks take y [B,64,H/8,W/8], cb, cr [B,64,H/16,W/16] float32, the
    dequantized coefficients (coefficient x quantization table, channel 8*v+u); pixel
    networks take x [B,3,H,W] float32 in [0,1]. Output: logits [B, classes]. Batch and
    image size are dynamic (H, W: multiples of 16 from 48 pixels). Before the file is
    written, the exported model must give the checkpoint's logits within 1e-4 (ONNX: in ONNX
    Runtime on the CPU when it is installed). ONNX needs `pip install 'jdct[export]'`.

    \b
    Examples:
      jdct export runs/ups/best.pt ups-imagenet.pt
      jdct export --checkpoint runs/ups/best.pt ups.onnx
      jdct export runs/ups ups.pt2 --json
    """
    import json

    from .export import export

    if checkpoint is not None:
        if len(paths) != 1:
            raise click.UsageError("with --checkpoint, give only OUT")
        out = paths[0]
    elif len(paths) == 2:
        checkpoint, out = paths
    else:
        raise click.UsageError("give CKPT and OUT (or --checkpoint CKPT and OUT)")
    res = export(checkpoint, out, kind=kind, opset=opset)
    if as_json:
        click.echo(json.dumps(res, indent=2))
    elif res["kind"] == "weights":
        click.echo(f"wrote {res['out']}: {res['arch']} after {_plural(res['epoch'] or 0, 'epoch')}, weights only, "
                   f"{_mb(res['bytes'])} (the checkpoint is {_mb(res['source_bytes'])})")
    else:
        names = ", ".join(f"{k} [{','.join(map(str, v))}]" for k, v in res["inputs"].items())
        click.echo(f"wrote {res['out']}: {res['arch']} as {'ONNX' if res['kind'] == 'onnx' else 'torch.export'}, "
                   f"{_mb(res['bytes'])}; inputs {names} -> logits [B,{len(res['classes'])}]")
        check = res["check"]
        if check.get("runtime"):
            shapes = " and ".join(f"{b}x{h}x{w}" for b, h, w in check["shapes"])
            click.echo(f"checked: max |logit difference| {check['max_abs_diff']:.2g} against the checkpoint "
                       f"({check['runtime']}, batch x height x width {shapes})")
        else:
            click.echo(check["note"])
