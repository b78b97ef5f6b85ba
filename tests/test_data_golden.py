"""The loader against committed fixtures (no ../shared/data needed): the v1 golden store written by
`jdct convert` (tests/golden/store-v1.zarr) and a v1 loader state (tests/golden/loader-state.v1.json)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import numpy as np
import torch

from jdct_cli.data import STATE_VERSION, DCTLoader

GOLDEN = Path(__file__).resolve().parent / "golden"
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
STORE = GOLDEN / "store-v1.zarr"


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_loader_delivers_the_golden_store_bit_exactly():
    expected = json.loads((GOLDEN / "store-v1.expected.json").read_text())["arrays"]
    ld = DCTLoader(STORE, "train", batch_size=3, shuffle=False, flip=False, normalize=False, drop_last=False)
    tables = ld.info.meta["quant_tables"]
    planes = {"y": [], "cb": [], "cr": []}
    labels = []
    for (y, cb, cr), lab in ld:
        for name, t, q in (("y", y, "luma"), ("cb", cb, "chroma"), ("cr", cr, "chroma")):
            table = torch.tensor(tables[q], dtype=torch.float64).view(1, 64, 1, 1)
            planes[name].append(torch.round(t.double() / table).to(torch.int16).numpy())
        labels.append(lab.numpy())
    labels = np.concatenate(labels).astype(np.int32)
    assert (labels >= 0).all() and len(labels) == ld.num_store_samples
    for name in planes:  # the golden store's samples are all valid and store order == yield order
        assert _sha(np.concatenate(planes[name])) == expected[f"train/{name}"]["sha256"], name
    assert _sha(labels) == expected["train/label"]["sha256"]


def test_loader_state_schema_and_golden_state():
    schema = json.loads((SCHEMAS / "loader-state.v1.schema.json").read_text())
    golden = json.loads((GOLDEN / "loader-state.v1.json").read_text())
    assert golden["version"] == STATE_VERSION
    jsonschema.validate(golden, schema)
    kw = dict(batch_size=1, seed=7, world_size=2, rank=1, shuffle=True, drop_last=False, flip=True)
    ld = DCTLoader(STORE, "train", **kw)
    jsonschema.validate(ld.state_dict(), schema)
    ld.load_state_dict(golden)
    # 4 samples over 2 ranks, batch 1: 2 batches per rank, both done: nothing remains of epoch 3.
    assert ld.epoch == 3 and len(ld) == 2 and list(ld) == []
    full = DCTLoader(STORE, "train", **kw)
    full.set_epoch(3)
    golden = {**golden, "batches_done": 1}
    ld.load_state_dict(golden)
    rest = [lab.tolist() for _, lab in ld]
    assert rest == [lab.tolist() for _, lab in full][1:]
    jsonschema.validate(ld.state_dict(), schema)
