"""The progress folder of a conversion (``OUT/.jdct-progress/``): its plan and shard markers.

A conversion creates the folder before anything else, saves its :class:`~.format.Plan` there
before its first shard, writes one :class:`~.format.ShardMarker` after each shard it finishes, and
removes the folder after the metadata; so a folder holding it is an interrupted conversion.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

from ..errors import JdctError, StoreError
from ..fileio import atomic_write_json
from .format import PLAN_FILE, PROGRESS_DIR, Plan, ShardMarker, marker_name


class ProgressFolder:
    """``store/.jdct-progress``: read and write the plan and the shard markers."""

    def __init__(self, store: os.PathLike | str):
        self.store = Path(store)
        self.path = self.store / PROGRESS_DIR
        self.plan_path = self.path / PLAN_FILE

    def exists(self) -> bool:
        return self.path.is_dir()

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def has_plan(self) -> bool:
        return self.plan_path.is_file()

    def read_plan(self) -> Plan:
        """The saved plan; StoreError naming plan.json when it cannot be read or is invalid."""
        try:
            return Plan.parse(json.loads(self.plan_path.read_bytes()))
        except (OSError, ValueError) as exc:
            why = exc.reason if isinstance(exc, JdctError) else (getattr(exc, "strerror", None) or exc)
            raise StoreError(f"unreadable conversion plan ({why}); pass --overwrite to start again",
                             self.plan_path) from None

    def write_plan(self, plan: Plan) -> None:
        atomic_write_json(self.plan_path, plan.to_dict())

    def marker_path(self, split: str, view: int, shard: int) -> Path:
        return self.path / marker_name(split, view, shard)

    def read_marker(self, split: str, view: int, shard: int) -> Optional[ShardMarker]:
        """The marker of a finished shard; None when the shard is not finished (no marker, or one
        that cannot be read or does not describe this shard: the shard is then redone)."""
        path = self.marker_path(split, view, shard)
        try:
            marker = ShardMarker.parse(json.loads(path.read_bytes()))
        except (OSError, ValueError):
            return None
        if (marker.split, marker.view, marker.shard) != (split, view, shard):
            return None
        return marker

    def write_marker(self, marker: ShardMarker) -> None:
        atomic_write_json(self.path / marker.name, marker.to_dict())
