"""The retention policy: golden cases in the style of restic's policy tests, the
incremental-chain safety rule, invariants over random inputs, and duration parsing.

Each golden file under ``golden/retention/`` holds one policy, the ``now`` it is
applied at and the expected kept ids (newest first) with their reasons, against the
shared list in ``backups.json``. The expectations were written by hand from restic's
rules, not generated, so a change in a golden file is a change in behaviour.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mongo_backup.location.retention import BackupRef, Decision, Policy, decide, parse_duration

UTC = datetime.UTC
GOLDEN = Path(__file__).parent / "golden" / "retention"
NOW = datetime.datetime(2030, 1, 1, tzinfo=UTC)
T0 = datetime.datetime(2021, 3, 1, 12, 0, tzinfo=UTC)


def at(hours: float) -> datetime.datetime:
    return T0 + datetime.timedelta(hours=hours)


def full(id_: str, hours: float) -> BackupRef:
    return BackupRef(id_, at(hours))


def inc(id_: str, hours: float, parent: str | None) -> BackupRef:
    return BackupRef(id_, at(hours), "incremental", parent)


def kept(decision: Decision) -> dict[str, list[str]]:
    """The kept ids in the decision's order, each with its reasons."""
    return {b.id: decision.reasons[b.id] for b in decision.keep}


def golden_backups() -> list[BackupRef]:
    rows = json.loads((GOLDEN / "backups.json").read_text())
    return [BackupRef(r["id"], datetime.datetime.fromisoformat(r["time"])) for r in rows]


def golden_policy(spec: dict[str, Any]) -> Policy:
    within = spec.pop("within", None)
    return Policy(**spec, within=parse_duration(within) if within is not None else None)


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("[0-9]*.json")), ids=lambda p: p.stem)
def test_golden(path: Path) -> None:
    case = json.loads(path.read_text())
    backups = golden_backups()
    policy = golden_policy(case["policy"])
    now = datetime.datetime.fromisoformat(case["now"])

    decision = decide(backups, policy, now)

    assert kept(decision) == case["keep"]
    assert list(kept(decision)) == list(case["keep"])  # newest first, as written
    newest_first = sorted(backups, key=lambda b: (b.time, b.id), reverse=True)
    assert decision.remove == [b for b in newest_first if b.id not in case["keep"]]
    random.Random(path.stem).shuffle(backups)
    assert decide(backups, policy, now) == decision


def test_golden_list_covers_the_boundaries() -> None:
    """Guards the shared list: the golden cases rely on these calendar facts."""
    times = {b.id: b.time for b in golden_backups()}
    assert len(times) == 31
    assert times["backup_20210101_060000"] == times["backup_20210101_060000_1"]
    assert times["backup_20210101_060000"].isocalendar()[:2] == (2020, 53)
    assert times["backup_20191230_100000"].isocalendar()[:2] == (2020, 1)
    assert times["backup_20210701_100500"].hour == times["backup_20210701_104000"].hour


# --- incremental chains -------------------------------------------------------------

CHAIN = [
    full("F", 0),
    inc("I1", 1, "F"),
    inc("I2", 2, "I1"),
    inc("I3", 3, "I2"),
    inc("I4", 4, "I3"),
]


def test_ancestors_of_kept_incremental_are_kept() -> None:
    decision = decide(CHAIN, Policy(last=2), NOW)
    assert kept(decision) == {
        "I4": ["last snapshot #1"],
        "I3": ["last snapshot #2"],
        "I2": ["needed by kept incremental I4"],
        "I1": ["needed by kept incremental I4"],
        "F": ["needed by kept incremental I4"],
    }
    assert decision.remove == []


def test_ancestors_skip_over_backups_the_policy_keeps() -> None:
    # The daily rule keeps I2 (newest of its day) and F's day; I1 is needed by I2
    # only, and F, kept by the policy, gets no dependency line.
    backups = [full("F", -40), inc("I1", -20, "F"), inc("I2", -15, "I1"), inc("I3", 1, "I2")]
    decision = decide(backups, Policy(daily=3), NOW)
    assert kept(decision) == {
        "I3": ["daily snapshot (2021-03-01)"],
        "I2": ["daily snapshot (2021-02-28)"],
        "I1": ["needed by kept incremental I3"],
        "F": ["daily snapshot (2021-02-27)"],
    }


def test_other_chains_and_descendants_may_go() -> None:
    backups = [
        full("F1", 0),
        inc("A1", 1, "F1"),
        inc("A2", 2, "A1"),
        full("F2", 10),
        inc("B1", 11, "F2"),
    ]
    decision = decide(backups, Policy(last=1), NOW)
    assert kept(decision) == {
        "B1": ["last snapshot #1"],
        "F2": ["needed by kept incremental B1"],
    }
    assert [b.id for b in decision.remove] == ["A2", "A1", "F1"]


def test_kept_full_does_not_keep_its_incrementals() -> None:
    backups = [full("F", -14), inc("I1", -4, "F"), full("F2", -3)]
    decision = decide(backups, Policy(daily=2), NOW)
    assert kept(decision) == {
        "F2": ["daily snapshot (2021-03-01)"],
        "F": ["daily snapshot (2021-02-28)"],
    }
    assert [b.id for b in decision.remove] == ["I1"]


def test_broken_chain_is_decided_by_the_policy_alone() -> None:
    backups = [full("F", 0), inc("I1", 5, "gone"), inc("I2", 6, None)]
    decision = decide(backups, Policy(last=2), NOW)
    assert kept(decision) == {"I2": ["last snapshot #1"], "I1": ["last snapshot #2"]}
    assert [b.id for b in decision.remove] == ["F"]


def test_chain_walk_stops_at_a_missing_link() -> None:
    backups = [full("F", 0), inc("I2", 2, "I1"), inc("I3", 3, "I2")]
    decision = decide(backups, Policy(last=1), NOW)
    assert kept(decision) == {"I3": ["last snapshot #1"], "I2": ["needed by kept incremental I3"]}
    assert [b.id for b in decision.remove] == ["F"]


def test_full_backup_ends_the_chain_even_with_a_parent() -> None:
    backups = [full("F0", 0), BackupRef("F", at(1), "full", "F0"), inc("I1", 2, "F")]
    decision = decide(backups, Policy(last=1), NOW)
    assert [b.id for b in decision.keep] == ["I1", "F"]


def test_parent_cycle_is_refused() -> None:
    backups = [inc("A", 0, "B"), inc("B", 1, "A")]
    with pytest.raises(ValueError, match="cycle"):
        decide(backups, Policy(last=1), NOW)


# --- other rules and refusals ------------------------------------------------------


def test_equal_times_are_ordered_by_id() -> None:
    same = [full("backup_x_1", 0), full("backup_x", 0), full("backup_x_2", 0)]
    for order in (same, same[::-1]):
        decision = decide(order, Policy(last=1), NOW)
        assert [b.id for b in decision.keep] == ["backup_x_2"]
        assert [b.id for b in decision.remove] == ["backup_x_1", "backup_x"]


def test_buckets_are_utc() -> None:
    plus2 = datetime.timezone(datetime.timedelta(hours=2))
    local = BackupRef("b", datetime.datetime(2021, 1, 1, 1, 30, tzinfo=plus2))
    decision = decide([local], Policy(daily=1, hourly=1, yearly=1), NOW)
    assert decision.reasons["b"] == [
        "hourly snapshot (2020-12-31 23:00)",
        "daily snapshot (2020-12-31)",
        "yearly snapshot (2020)",
    ]


def test_oldest_is_kept_when_counts_are_left() -> None:
    # Three backups in one day: daily 2 keeps the newest, then the oldest, as restic.
    backups = [full("a", 0), full("b", 1), full("c", 2)]
    decision = decide(backups, Policy(daily=2), NOW)
    assert kept(decision) == {
        "c": ["daily snapshot (2021-03-01)"],
        "a": ["oldest daily snapshot (2021-03-01)"],
    }
    assert [b.id for b in decide(backups, Policy(daily=1), NOW).keep] == ["c"]


def test_within_reason_formats() -> None:
    backups = [full("a", 0)]
    day_and_half = decide(backups, Policy(within=datetime.timedelta(hours=36)), NOW)
    assert day_and_half.reasons == {"a": ["within 1d12h of the newest backup"]}
    minutes = decide(backups, Policy(within=datetime.timedelta(minutes=90)), NOW)
    assert minutes.reasons == {"a": ["within 1:30:00 of the newest backup"]}


def test_within_reaching_before_year_one_keeps_everything() -> None:
    backups = [full("a", 0), BackupRef("old", datetime.datetime(1, 1, 2, tzinfo=UTC))]
    decision = decide(backups, Policy(within=parse_duration("5000y")), NOW)
    assert [b.id for b in decision.keep] == ["a", "old"]


def test_all_backups_in_the_future_are_kept_by_within() -> None:
    backups = [full("a", 0), full("b", -100)]
    month_before = T0 - datetime.timedelta(days=30)
    decision = decide(backups, Policy(within=parse_duration("1h")), month_before)
    assert [b.id for b in decision.keep] == ["a", "b"]
    assert decision.reasons["b"] == ["dated after now: kept by keep-within 1h"]


def test_no_backups() -> None:
    assert decide([], Policy(last=1), NOW) == Decision(keep=[], remove=[], reasons={})


@pytest.mark.parametrize("policy", [Policy(), Policy(within=datetime.timedelta(0))])
def test_empty_policy_is_refused(policy: Policy) -> None:
    assert policy.is_empty()
    with pytest.raises(ValueError, match="refusing to remove every backup"):
        decide(CHAIN, policy, NOW)


def test_policy_is_not_empty_with_any_option() -> None:
    assert not Policy(yearly=-1).is_empty()
    assert not Policy(within=datetime.timedelta(hours=1)).is_empty()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"daily": -2}, "keep-daily must be -1"), ({"within": datetime.timedelta(-1)}, "negative")],
)
def test_invalid_policy(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Policy(**kwargs)


def test_duplicated_id_is_refused() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        decide([full("a", 0), full("a", 1)], Policy(last=1), NOW)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        BackupRef("a", datetime.datetime(2021, 1, 1))
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        decide(CHAIN, Policy(last=1), datetime.datetime(2021, 1, 1))


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind must be"):
        BackupRef("a", T0, "differential")


# --- invariants over random inputs -------------------------------------------------


@st.composite
def backup_lists(draw: st.DrawFn) -> list[BackupRef]:
    ids = draw(st.lists(st.text("abcdef", min_size=1, max_size=3), unique=True, max_size=25))
    # Minutes apart within a few days (shared hours, days and ties) or over years.
    offsets = st.integers(0, 3000) | st.integers(0, 1_500_000)
    backups: list[BackupRef] = []
    for id_ in ids:
        time = T0 + datetime.timedelta(minutes=draw(offsets))
        if draw(st.booleans()):
            backups.append(BackupRef(id_, time))
            continue
        earlier = [b.id for b in backups]  # only earlier ones: no cycles
        parent = draw(st.none() | st.just("missing") | st.sampled_from(earlier or ["missing"]))
        backups.append(BackupRef(id_, time, "incremental", parent))
    return backups


COUNTS = st.integers(-1, 4)
POLICIES = st.builds(
    Policy,
    last=COUNTS,
    hourly=COUNTS,
    daily=COUNTS,
    weekly=COUNTS,
    monthly=COUNTS,
    yearly=COUNTS,
    within=st.none() | st.integers(0, 24 * 800).map(lambda h: datetime.timedelta(hours=h)),
).filter(lambda p: not p.is_empty())
NOWS = st.integers(-1000, 1_600_000).map(lambda m: T0 + datetime.timedelta(minutes=m))


def ancestors(backup: BackupRef, by_id: dict[str, BackupRef]) -> list[str]:
    found = []
    while backup.kind == "incremental" and backup.parent in by_id:
        backup = by_id[str(backup.parent)]
        found.append(backup.id)
    return found


@settings(max_examples=300, deadline=None)
@given(backups=backup_lists(), policy=POLICIES, now=NOWS, data=st.data())
def test_invariants(
    backups: list[BackupRef], policy: Policy, now: datetime.datetime, data: st.DataObject
) -> None:
    decision = decide(backups, policy, now)
    keep_ids = [b.id for b in decision.keep]
    remove_ids = [b.id for b in decision.remove]

    # Keep and remove partition the input; exactly the kept ones have reasons.
    assert sorted(keep_ids + remove_ids) == sorted(b.id for b in backups)
    assert set(decision.reasons) == set(keep_ids)
    assert all(decision.reasons.values())
    for part in (decision.keep, decision.remove):
        assert part == sorted(part, key=lambda b: (b.time, b.id), reverse=True)

    # Every present ancestor of a kept incremental is kept.
    by_id = {b.id: b for b in backups}
    for backup in decision.keep:
        assert set(ancestors(backup, by_id)) <= set(keep_ids)

    # keep-last N keeps at least the N newest.
    wanted = len(backups) if policy.last == -1 else min(policy.last, len(backups))
    newest = sorted(backups, key=lambda b: (b.time, b.id), reverse=True)[:wanted]
    assert {b.id for b in newest} <= set(keep_ids)
    assert len(keep_ids) >= wanted

    # Deterministic and independent of the input order.
    shuffled = data.draw(st.permutations(backups))
    assert decide(shuffled, policy, now) == decision


@settings(max_examples=200, deadline=None)
@given(
    backups=backup_lists(),
    policy=POLICIES,
    now=NOWS,
    which=st.sampled_from(["last", "hourly", "daily", "weekly", "monthly", "yearly"]),
)
def test_a_larger_count_keeps_a_superset(
    backups: list[BackupRef], policy: Policy, now: datetime.datetime, which: str
) -> None:
    count = getattr(policy, which)
    changes: dict[str, Any] = {which: -1 if count == -1 else count + 1}
    larger = dataclasses.replace(policy, **changes)
    smaller_keep = {b.id for b in decide(backups, policy, now).keep}
    assert smaller_keep <= {b.id for b in decide(backups, larger, now).keep}


# --- durations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", datetime.timedelta(days=7)),
        ("36h", datetime.timedelta(hours=36)),
        ("1y", datetime.timedelta(days=365)),
        ("1m", datetime.timedelta(days=30)),
        ("1y2m3d4h", datetime.timedelta(days=365 + 60 + 3, hours=4)),
        ("4h3d", datetime.timedelta(days=3, hours=4)),
        (" 5d\n", datetime.timedelta(days=5)),
        ("0d", datetime.timedelta(0)),
        ("007h", datetime.timedelta(hours=7)),
    ],
)
def test_parse_duration(text: str, expected: datetime.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("7", "expected numbers each followed by y"),
        ("d", "expected numbers"),
        ("2w", "expected numbers"),
        ("1y4m3w1d", "expected numbers"),
        ("-1d", "expected numbers"),
        ("1.5d", "expected numbers"),
        ("1D", "expected numbers"),
        ("1d 2h", "expected numbers"),
        ("30min", "expected numbers"),
        ("\u0663d", "expected numbers"),  # ARABIC-INDIC DIGIT THREE: ASCII digits only
        ("1d2d", "unit 'd' given twice"),
        ("99999999999y", "too large"),
    ],
)
def test_parse_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)
