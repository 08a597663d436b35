"""Does the campaign catch real bugs? Two deliberately broken builds, each run under the
campaign until its first failure (at most ``--minutes`` each, default 5).

usage: python chaos/mutants.py [--minutes 5] [--seed S]

Each mutant is a copy of ``src/`` with one change, put first on the tool's PYTHONPATH
(the campaign's own checks keep using the real code):

- ``checkpoint-before-data``: the exporter records a batch's last ``_id`` in the unit's
  checkpoint before the batch itself is written, so a crash right after loses that batch
  while every checksum still agrees (verify cannot see it; only the source can).
- ``no-retry-on-closed-connection``: a closed or reset connection is not a transient
  fault, so a backup gives up on a collection at the first network blip.

Exit 0 when every mutant is caught in time, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MUTANTS = {
    "checkpoint-before-data": (
        "backup/exporter.py",
        """            for batch, last_id in batches:
                converter.write(batch)
                self._bars.advance_batch(unit, batch)
                if self._stop.is_set():
                    raise Interrupted("stopped")
                if resumable(last_id) and time.monotonic() >= next_checkpoint:
                    converter.checkpoint(encode_key(last_id))
                    next_checkpoint = time.monotonic() + self.checkpoint_interval""",
        """            for batch, last_id in batches:
                if resumable(last_id) and time.monotonic() >= next_checkpoint:
                    converter.checkpoint(encode_key(last_id))
                    next_checkpoint = time.monotonic() + self.checkpoint_interval
                converter.write(batch)
                self._bars.advance_batch(unit, batch)
                if self._stop.is_set():
                    raise Interrupted("stopped")""",
    ),
    "no-retry-on-closed-connection": (
        "retry.py",
        """    if isinstance(error, pymongo.errors.ConnectionFailure):
        return True""",
        """    if isinstance(error, pymongo.errors.ConnectionFailure):
        return False""",
    ),
}


def build(root: Path, name: str) -> Path:
    path, before, after = MUTANTS[name]
    src = root / name / "src"
    shutil.copytree(REPO / "src", src)
    target = src / "mongo_backup" / path
    text = target.read_text()
    if before not in text:
        raise SystemExit(f"mutant {name}: the code it breaks has changed; update chaos/mutants.py")
    target.write_text(text.replace(before, after))
    return src


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mutants-"))
    caught_all = True
    try:
        for name in MUTANTS:
            env = {**os.environ, "PYTHONPATH": str(build(root, name))}
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, str(REPO / "chaos" / "campaign.py"), "--minutes",
                 str(args.minutes), "--seed", str(args.seed), "--stop-on-failure"],
                env=env, capture_output=True, text=True, timeout=args.minutes * 60 + 300,
            )  # fmt: skip
            took = time.monotonic() - started
            lines = [line for line in done.stdout.splitlines() if line.startswith("run ")]
            caught = done.returncode != 0
            caught_all &= caught
            verdict = f"caught after {len(lines)} runs, {took / 60:.1f} min" if caught else "MISSED"
            print(f"mutant {name}: {verdict}")
            if lines:
                print(f"  {lines[-1]}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if caught_all else 1


if __name__ == "__main__":
    sys.exit(main())
