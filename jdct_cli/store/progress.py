"""The progress folder of a conversion (``OUT/.jdct-progress/``): its plan and shard markers.

A conversion creates the folder before anything else, saves its :class:`~.format.Plan` there
before its first shard, writes one :class:`~.format.ShardMarker` after each shard it finishes, and
removes the folder after the metadata; so a folder holding it is an interrupted conversion.

On an object store the "folder" is the key prefix ``.jdct-progress/``: the plan, the owner record
and the markers are small objects, each written with one PUT (all or nothing), and the folder
exists while any of them does.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

from ..errors import JdctError, StoreError
from .format import PLAN_FILE, PROGRESS_DIR, Plan, ShardMarker, marker_name
from .location import StoreLocation, as_location

#: The conversion that owns OUT's progress folder (workers check it before writing).
OWNER_FILE = "owner.json"


class ProgressFolder:
    """``store/.jdct-progress``: read and write the plan, the owner record and the shard markers.

    ``store``: a path or a :class:`~.location.StoreLocation`. ``path`` is the folder of a local
    store (None on an object store)."""

    def __init__(self, store: Union[os.PathLike, str, StoreLocation]):
        self.location = as_location(store)
        self.objects = self.location.objects()
        self.store = self.location.path if self.location.is_local else None
        self.path: Optional[Path] = self.store / PROGRESS_DIR if self.store is not None else None
        self.plan_path = self.path / PLAN_FILE if self.path is not None else None

    def _key(self, name: str) -> str:
        return f"{PROGRESS_DIR}/{name}"

    def where(self, name: str = "") -> str:
        """The file or object named ``name`` of the folder, for messages."""
        return self.location.child_url(self._key(name) if name else PROGRESS_DIR)

    def exists(self) -> bool:
        if self.path is not None:
            return self.path.is_dir()
        return bool(self.objects.first_keys(PROGRESS_DIR, 1))

    def create(self) -> None:
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
        # an object store has no folders: the owner record, written next, makes it exist

    def remove(self) -> None:
        self.objects.delete_prefix(PROGRESS_DIR)

    def has_plan(self) -> bool:
        return self.objects.exists(self._key(PLAN_FILE))

    def read_plan(self) -> Plan:
        """The saved plan; StoreError naming plan.json when it cannot be read or is invalid."""
        where = self.plan_path if self.plan_path is not None else self.where(PLAN_FILE)
        try:
            data = self.objects.get(self._key(PLAN_FILE))
            if data is None:
                raise FileNotFoundError("no such file")
            return Plan.parse(json.loads(data))
        except (OSError, ValueError) as exc:
            if isinstance(exc, JdctError) and not isinstance(exc, ValueError):
                raise  # the object store failed: its own one-line error
            why = exc.reason if isinstance(exc, JdctError) else (getattr(exc, "strerror", None) or exc)
            raise StoreError(f"unreadable conversion plan ({why}); pass --overwrite to start again", where) from None

    def write_plan(self, plan: Plan) -> None:
        self._write(PLAN_FILE, plan.to_dict())

    def marker_path(self, split: str, view: int, shard: int) -> Optional[Path]:
        return None if self.path is None else self.path / marker_name(split, view, shard)

    def read_marker(self, split: str, view: int, shard: int) -> Optional[ShardMarker]:
        """The marker of a finished shard; None when the shard is not finished (no marker, or one
        that cannot be read or does not describe this shard: the shard is then redone)."""
        try:
            data = self.objects.get(self._key(marker_name(split, view, shard)))
            if data is None:
                return None
            marker = ShardMarker.parse(json.loads(data))
        except (ValueError, UnicodeDecodeError):
            return None
        except OSError as exc:
            if isinstance(exc, JdctError):
                raise
            return None
        if (marker.split, marker.view, marker.shard) != (split, view, shard):
            return None
        return marker

    def write_marker(self, marker: ShardMarker) -> None:
        self._write(marker.name, marker.to_dict())

    def write_owner(self, record: dict) -> None:
        """Record the conversion that owns the folder (see :mod:`jdct_cli.convert.lifeline`)."""
        self._write(OWNER_FILE, record)

    def owner(self) -> Optional[dict]:
        """The owner record, None when absent or unreadable."""
        try:
            data = self.objects.get(self._key(OWNER_FILE))
            doc = None if data is None else json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return None
        except OSError as exc:
            if isinstance(exc, JdctError):
                raise
            return None
        return doc if isinstance(doc, dict) else None

    def _write(self, name: str, doc) -> None:
        self.objects.put(self._key(name), json.dumps(doc, indent=1, allow_nan=False).encode("utf-8"))
