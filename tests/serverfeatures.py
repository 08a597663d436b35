"""The one list of server features a test may skip for.

A test skips only when the server it runs against lacks something it needs, and says
which with :func:`lacks` (``pytest.skip("server lacks FEATURE: detail")``). Under
``MONGO_BACKUP_STRICT=1`` (set by ``.ci/run``) any other skip fails the run
(conftest.py), so a missing corpus, a typo'd skip condition or a fixture that quietly
gives up cannot pass as green.
"""

from __future__ import annotations

import re
from typing import NoReturn

import pytest

FEATURES: dict[str, str] = {
    "deprecated-bson": "stores deprecated BSON types (undefined, DBPointer, symbol, ...)",
    "nan-payloads": "keeps the payload bits of NaN doubles",
    "extreme-dates": "stores dates outside the years 1..9999",
    "text-index": "text indexes",
    "hashed-index": "hashed indexes",
    "collection-names": "collection names with every character MongoDB allows",
    "id-types": "every BSON type as an _id",
    "collection-types": "timeseries and clustered collections",
    "fail-points": "configureFailPoint failCommand (needs --enable-test-commands)",
    "user-admin": "creating users (the suite's user needs userAdmin)",
    "x509-users": "MONGODB-X509 users",
    "own-servers": "servers the test starts itself (not with MONGO_TEST_URI)",
}

_REASON = re.compile(r"server lacks ([a-z0-9-]+): ")


def lacks(feature: str, detail: object = "") -> NoReturn:
    """Skip the running test because the server lacks ``feature`` (one of FEATURES)."""
    assert feature in FEATURES, f"not a listed server feature: {feature}"
    pytest.skip(f"server lacks {feature}: {str(detail)[:160]}")


def allowed_skip(reason: str) -> bool:
    """Whether a skip's reason names a listed server feature."""
    found = _REASON.search(reason)
    return found is not None and found.group(1) in FEATURES
