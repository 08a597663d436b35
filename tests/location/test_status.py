"""Point-in-time windows, gaps and broken chains (``location/windows.py``), the status
verdict (``location/status.judge``) and ``prune --keep-window``: pure, from catalog rows."""

from __future__ import annotations

import datetime as dt

from mongo_backup.location.catalog import StoredBackup
from mongo_backup.location.retention import BackupRef, Policy, decide
from mongo_backup.location.status import StatusOptions, judge
from mongo_backup.location.windows import broken, gaps, windows

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
T0 = int(NOW.timestamp()) - 10 * 3600


def row(
    id_: str,
    hours_ago: float,
    parent: str | None = None,
    span: tuple[int, int] | None = None,
    status: str = "ok",
    database: str = "shop",
) -> StoredBackup:
    start, end = span if span else (0, 0)
    return StoredBackup(
        key=f"{id_}.tar.zst",
        id=id_,
        time=NOW - dt.timedelta(hours=hours_ago),
        size=1,
        database=database,
        kind="incremental" if parent else "full",
        parent=parent,
        status=status,
        window=((T0 + start, 1), (T0 + end, 1)) if span else None,
    )


def chain() -> list[StoredBackup]:
    """Newest first: a full at T0+0, increments to T0+60 and T0+120; a second chain
    after a gap, from T0+500."""
    return [
        row("b5", 1, parent="b4", span=(500, 560)),
        row("b4", 2, span=(500, 500)),
        row("b3", 8, parent="b2", span=(60, 120)),
        row("b2", 9, parent="b1", span=(0, 60)),
        row("b1", 10, span=(0, 0)),
    ]


def test_windows_and_the_gap_between_them() -> None:
    found = windows(chain())
    assert [(w.full, w.newest, w.backups, w.start[0] - T0, w.end[0] - T0) for w in found] == [
        ("b1", "b3", 3, 0, 120),
        ("b4", "b5", 2, 500, 560),
    ]
    (gap,) = gaps(found)
    assert (gap.start[0] - T0, gap.end[0] - T0) == (120, 500)
    assert broken(chain()) == []


def test_a_missing_link_breaks_the_increments_after_it() -> None:
    rows = [b for b in chain() if b.id != "b2"]
    assert [b.id for b in broken(rows)] == ["b3"]
    assert [w.full for w in windows(rows)] == ["b1", "b4"]  # b1 alone still covers its point
    report = judge(rows, StatusOptions("x"), "file:///x", NOW)
    assert not report.ok and report.problems == ["b3.tar.zst: its chain misses a backup"]


def test_status_fresh_stale_failed() -> None:
    fresh = judge(chain(), StatusOptions("x", max_age=dt.timedelta(hours=2)), "u", NOW)
    assert fresh.ok and fresh.newest_good is not None and fresh.newest_good.id == "b5"
    assert fresh.chain == 2 and fresh.age == dt.timedelta(hours=1)
    stale = judge(chain(), StatusOptions("x", max_age=dt.timedelta(minutes=30)), "u", NOW)
    assert stale.problems == ["the newest good backup is 1h00m old (more than 0:30:00)"]
    failed = [row("b6", 0.5, parent="b5", span=(560, 600), status="1 collection(s) failed")]
    report = judge(failed + chain(), StatusOptions("x"), "u", NOW)
    assert report.newest_good is not None and report.newest_good.id == "b5"
    assert report.problems == ["the newest backup b6.tar.zst is not good: 1 collection(s) failed"]


def test_status_of_one_database_and_of_none() -> None:
    other = row("c1", 0.1, span=(900, 900), database="crm")
    report = judge([other, *chain()], StatusOptions("x", db="shop"), "u", NOW)
    assert report.ok and report.newest_good is not None and report.newest_good.id == "b5"
    nothing = judge([], StatusOptions("x"), "u", NOW)
    assert nothing.problems == ["no good backup"] and nothing.to_json()["newest_good"] is None


def test_keep_window_keeps_the_chain_reaching_back_to_its_start() -> None:
    refs = [BackupRef(b.id, b.time, b.kind or "full", b.parent) for b in chain()]
    decision = decide(refs, Policy(window=dt.timedelta(hours=5)), NOW)
    # b4, b5 are inside the window; b3 is the newest before its start (its chain covers
    # the start), and b3 needs b2 and b1.
    assert sorted(b.id for b in decision.keep) == ["b1", "b2", "b3", "b4", "b5"]
    assert decision.reasons["b3"] == ["starts the point-in-time window of 5h"]
    assert decision.reasons["b1"] == ["needed by kept incremental b3"]
    short = decide(refs, Policy(window=dt.timedelta(minutes=30)), NOW)
    assert sorted(b.id for b in short.keep) == ["b4", "b5"]
