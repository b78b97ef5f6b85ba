"""The ``jdct`` command line: parse, call one library function, render, map errors.

Library modules are imported inside each command so that ``jdct --help``, ``convert`` and
``inspect`` never import torch. Every :class:`jdct_cli.errors.JdctError` becomes a one-line
``Error: <path>: <reason>`` (exit code 1), never a traceback.
"""
from __future__ import annotations

import functools
import sys

import click

from . import __version__
from .errors import JdctError


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


def library_errors(func):
    """Turn library errors (and Ctrl-C) into clean click errors instead of tracebacks."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except JdctError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    """


# ---- commands are registered below, one section per command (keep this marker) ----


# ---- jdct inspect (owner: JPEG layer) ----
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
@click.option("--sample", type=click.IntRange(min=1), metavar="N",
              help="Stores only: how many samples to decode and check/draw.")
@click.option("--no-coefficients", is_flag=True,
              help="Read only the markers (fast on big files); zero fractions are then not reported.")
@library_errors
def inspect_command(paths, as_json, plot, dump, sample, no_coefficients):
    """Show what is inside JPEG files (or a jdct store: a folder or *.zarr).

    \b
    For each JPEG: dimensions, colour space, sampling (4:2:0, 4:4:4...), baseline/progressive/
    arithmetic, restart interval, EXIF orientation, each quantization table with its estimated
    IJG quality, coefficient array shapes and the share of zero coefficients per component.

    \b
    Examples:
      jdct inspect photo.jpg
      jdct inspect --json a.jpg b.jpg > facts.json
      jdct inspect photo.jpg --plot photo.png --dump-coefficients photo.npz
      jdct inspect data/imagenette.zarr --sample 8

    A file that cannot be read prints "Error: <file>: <reason>" on stderr; the others are still
    shown and the exit code is 1.
    """
    import json

    from .inspect_jpeg import inspect_paths, render_store, render_text

    docs, failed = [], False
    results = inspect_paths(list(paths), coefficients=not no_coefficients, plot=plot, dump=dump, sample=sample)
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
            click.echo(render_text(result.doc) if result.kind == "jpeg" else render_store(result.doc))
        for written in result.written:
            click.echo(f"wrote {written}", err=as_json)
    if as_json and (docs or len(paths) > 1):
        click.echo(json.dumps(docs[0] if len(paths) == 1 else docs, indent=2))
    if failed:
        raise SystemExit(1)
