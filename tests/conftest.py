"""Shared test fixtures: where the real data lives, and skipping clearly when it is absent."""
from __future__ import annotations

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
