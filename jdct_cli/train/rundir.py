"""RUN_DIR: the files a training run writes (rank 0 only).

::

    config.json     the resolved config (TrainConfig fields; loadable again with --config)
    metrics.jsonl   one JSON line per epoch (schema: checkpoint.v1.schema.json, $defs/metrics)
    last.pt         written atomically after every epoch and on Ctrl-C (mid-epoch: loader state)
    best.pt         the epoch with the best val top-1 so far (a hard link to that last.pt when the
                    filesystem allows, so it costs no space until last.pt moves on); not written
                    when the run has no validation split
    tables.json     with --jpeg-layer learned: the learned quantization tables after the last
                    epoch (jdct-quant-tables format), and best_tables.json those of best.pt
    tb/             TensorBoard scalars, only when tensorboard is installed
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from .. import checkpoint as ckpt
from ..fileio import atomic_write_text


class RunDir:
    """Writer of one RUN_DIR. ``active=False`` (ranks other than 0) turns every method into a no-op."""

    def __init__(self, path: os.PathLike | str, active: bool = True):
        self.path = Path(path)
        self.active = active
        self.tb = None
        self.last_checkpoint_bytes: Optional[int] = None

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    def start(self, config: dict, epochs_done: Optional[int], checkpoint_bytes: int) -> None:
        """Create the folder, write config.json and check there is room for a checkpoint.

        ``epochs_done``: when resuming, the checkpoint's completed epochs (metrics lines of later
        epochs are dropped); None for a new run. NoSpaceError when the disk cannot take one
        checkpoint of ``checkpoint_bytes``.
        """
        if not self.active:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        ckpt.check_free_space(self.last, checkpoint_bytes)
        atomic_write_text(self.path / "config.json", json.dumps(config, indent=2) + "\n")
        if epochs_done is not None:
            self._trim_metrics(epochs_done)
        self.tb = _tensorboard(self.path)

    def _trim_metrics(self, epochs_done: int) -> None:
        """Keep only the metrics lines of the epochs the resumed checkpoint has completed.

        The line of an epoch is appended just before its ``last.pt`` is written; a run killed between
        the two redoes that epoch when resumed, which must not leave two lines for it.
        """
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if int(json.loads(line)["epoch"]) <= epochs_done:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):  # a torn last line from a hard kill
                continue
        atomic_write_text(path, "".join(k + "\n" for k in kept))

    def log_epoch(self, metrics: dict) -> None:
        """Append the epoch's metrics line (and its TensorBoard scalars)."""
        if not self.active:
            return
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        if self.tb is not None:
            for key, value in metrics.items():
                if key not in ("epoch", "step") and value is not None:
                    self.tb.add_scalar(key, value, metrics["epoch"])
            self.tb.flush()

    def save(self, payload: dict, best: bool = False) -> None:
        """Write ``last.pt`` (and make ``best.pt`` the same file when ``best``)."""
        if not self.active:
            return
        self.last_checkpoint_bytes = ckpt.save_checkpoint(self.last, payload)
        if best:
            ckpt.atomic_link(self.last, self.best)

    def save_tables(self, tables: dict, epoch: int, best: bool = False) -> None:
        """Write the JPEG layer's tables (``jpeg_tables`` of a checkpoint) as ``tables.json``
        (and ``best_tables.json`` when ``best``), in the jdct-quant-tables format."""
        if not self.active:
            return
        from ..tables import write_tables

        source = {"kind": "jpeg-dl", "run": os.fspath(self.path.resolve()), "epoch": int(epoch)}
        names = ("tables.json", "best_tables.json") if best else ("tables.json",)
        for name in names:
            write_tables(self.path / name, tables["luma"], tables["chroma"], luma_float=tables["luma_float"],
                         chroma_float=tables["chroma_float"], source=source)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def _tensorboard(run_dir: Path):
    """A SummaryWriter under RUN_DIR/tb when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=os.fspath(run_dir / "tb"))
