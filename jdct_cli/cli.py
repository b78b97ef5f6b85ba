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
