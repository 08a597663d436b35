"""How much work runs at once by default on this machine: the defaults of ``backup -j``
and ``restore -j``, here rather than in the cores' options because the command line
shows them in every command's help, and importing a core to read one number would load
it for every command."""

from __future__ import annotations

import os


def default_jobs() -> int:
    """Collections exported at once: 2 on a 2-core machine, half the cores up to 8
    beyond (a database server on the same machine needs its share)."""
    return max(2, min(8, (os.cpu_count() or 2) // 2))


def default_insert_workers() -> int:
    """Insert workers per collection: one per core, 2 to 8. They wait on the server, not
    on the client's CPU; a server with more cores takes more inserts at once."""
    return max(2, min(8, os.cpu_count() or 2))
