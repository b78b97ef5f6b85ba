"""Shared test fixtures: where the real data lives, and skipping clearly when it is absent."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
# A clone in a temporary folder has no sibling shared/: honour an explicit location too.
import os as _os

if _os.environ.get("JDCT_SHARED_DATA"):
    SHARED_DATA = Path(_os.environ["JDCT_SHARED_DATA"]).resolve()

HAVE_SHARED = SHARED_DATA.is_dir()
needs_shared = pytest.mark.skipif(
    not HAVE_SHARED, reason=f"real data not found at {SHARED_DATA} (set JDCT_SHARED_DATA to its location)"
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips the test (with the reason) when it is absent."""
    if not HAVE_SHARED:
        pytest.skip(f"real data not found at {SHARED_DATA} (set JDCT_SHARED_DATA to its location)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def photo_tree(tmp_path_factory) -> Path:
    """An ImageFolder tree of real JPEGs made at test time (tests/photos.py): ``train/<class>/*.jpg``
    and ``val/<class>/*.jpg``, 4 classes (one scikit-image photograph each), 12 + 4 images per
    class, 40..160 px, mixed quality/sampling, a few grayscale. Needs nothing outside the repository."""
    from photos import make_photo_tree

    return make_photo_tree(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def real_tree(photo_tree) -> Path:
    """A small labelled tree of real JPEGs: ../shared's tiny-imagenet-20 when present (the large
    real-data case), else :func:`photo_tree`. Tests using it must hold on both."""
    if HAVE_SHARED and (SHARED_DATA / "tiny-imagenet-20").is_dir():
        return SHARED_DATA / "tiny-imagenet-20"
    return photo_tree


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One local S3-compatible server for the whole session (moto's server mode on 127.0.0.1 with
    IAM enforcement, tests/s3server.py), started on first use; its admin credentials, endpoint and
    region are put in the environment (what clients and the subprocesses of tests read)."""
    pytest.importorskip("moto")
    pytest.importorskip("obstore")
    from s3server import MotoServer

    server = MotoServer(log=tmp_path_factory.mktemp("moto") / "moto.log")
    saved = {k: _os.environ.get(k) for k in (*server.env(), "AWS_EC2_METADATA_DISABLED", "AWS_PROFILE")}
    _os.environ.update(server.env(), AWS_EC2_METADATA_DISABLED="true")
    _os.environ.pop("AWS_PROFILE", None)
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                _os.environ.pop(k, None)
            else:
                _os.environ[k] = v


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` inside the block, restored after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread():
    """Two shared cores: one intra-op thread is 2-3x faster than two contending ones here (modules
    that train or predict use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    with torch_threads(1):
        yield
