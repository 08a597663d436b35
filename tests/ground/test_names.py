"""Collection names to archive member names: golden outputs and the safety invariants.

The mapping is part of the archive format (resume and verify recompute it), so exact
outputs are pinned here; changing one is a format change.
"""

from __future__ import annotations

import pytest

from mongo_backup.names import FILE_SUFFIX, MAX_STEM, encode_stem, file_names, is_safe_member_name

WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {
    f"{prefix}{digit}" for prefix in ("COM", "LPT") for digit in range(10)
}

HOSTILE = [
    "orders",
    "a/b",
    "../etc/passwd",
    "a b",
    "a\nb",
    "tab\there",
    "ünï",
    "日本語",
    "emoji🦊",
    "..",
    ".hidden",
    "Case",
    "case",
    "CASE",
    "x" * 250,
    "x" * 249 + "y",
    "é" * 125,
    "CON",
    "nul",
    "LPT1",
    "aux.logs",
    "50%",
    "a~b",
    "back\\slash",
    "a\u2028b",
    "dots.in.name",
]


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("orders", "orders"),
        ("system.js", "system.js"),
        ("a/b", "a%2Fb"),
        ("a b", "a%20b"),
        ("a\nb", "a%0Ab"),
        ("ünï", "%C3%BCn%C3%AF"),
        ("..", "%2E."),
        (".hidden", "%2Ehidden"),
        ("50%", "50%25"),  # "%" itself is encoded, so decoding is unambiguous
        ("a~b", "a%7Eb"),  # "~" is reserved for the hash suffix
        ("back\\slash", "back%5Cslash"),
        ("x" * 250, "x" * 103 + "~086d4a1c293bde31"),
        # The cut may fall inside a %XX escape; the hash keeps the stem unique.
        ("é" * 125, "%C3%A9" * 17 + "%~34227530c904c7f8"),
    ],
)
def test_encode_stem_golden(name: str, stem: str) -> None:
    assert encode_stem(name) == stem


def test_file_names_golden_collisions() -> None:
    # Sorted order decides who keeps the plain stem: "CASE" < "Case" < "case".
    assert file_names(["case", "Case", "CASE", "CON", "orders"]) == {
        "CASE": "CASE.jsonl",
        "CON": "CON~a3dbc4b644a9a2c5.jsonl",
        "Case": "Case~15f86e24ed25aed1.jsonl",
        "case": "case~bbfcd4160a1e8674.jsonl",
        "orders": "orders.jsonl",
    }


def test_file_names_do_not_depend_on_input_order() -> None:
    assert file_names(HOSTILE) == file_names(list(reversed(HOSTILE)))


def test_hostile_names_map_to_unique_safe_short_files() -> None:
    mapping = file_names(HOSTILE)
    assert set(mapping) == set(HOSTILE)
    files = list(mapping.values())
    # Unique even on a case-insensitive file system.
    assert len({f.casefold() for f in files}) == len(files)
    for name, file in mapping.items():
        assert is_safe_member_name(file), (name, file)
        assert file.endswith(FILE_SUFFIX)
        assert len(file) <= MAX_STEM + len(FILE_SUFFIX) <= 126, (name, file)
        assert file.isascii() and file.isprintable()
        assert ".." not in file.split(".")[0]


def test_long_names_sharing_a_prefix_stay_distinct() -> None:
    names = ["x" * 250, "x" * 249 + "y", "x" * 200]
    files = file_names(names)
    assert len(set(files.values())) == 3
    assert all(len(f) <= 126 for f in files.values())


@pytest.mark.parametrize("name", ["CON", "con", "Nul", "aux", "COM1", "lpt9", "PRN"])
def test_windows_device_names_are_renamed(name: str) -> None:
    file = file_names([name])[name]
    assert file.split(".")[0].upper() not in WINDOWS_RESERVED


@pytest.mark.parametrize("name", ["aux.logs", "con.x", "NUL.tar"])
def test_windows_device_names_with_a_dot_are_renamed(name: str) -> None:
    # Windows reserves a device name followed by any extension too ("NUL.txt" is NUL).
    file = file_names([name])[name]
    assert file.split(".")[0].upper() not in WINDOWS_RESERVED


def test_names_differing_only_by_case_get_distinct_files() -> None:
    files = file_names(["Users", "users", "USERS"])
    assert len({f.casefold() for f in files.values()}) == 3


def test_empty_iterable_and_duplicates() -> None:
    assert file_names([]) == {}
    assert file_names(["a", "a"]) == {"a": "a.jsonl"}


@pytest.mark.parametrize(
    ("member", "safe"),
    [
        ("orders.jsonl", True),
        ("manifest.json", True),
        ("", False),
        ("../x.jsonl", False),
        ("a/b.jsonl", False),
        ("a\\b.jsonl", False),
        (".hidden.jsonl", False),
        ("a\x00b", False),
        ("a\nb", False),
        ("x" * 256, False),
    ],
)
def test_is_safe_member_name(member: str, safe: bool) -> None:
    assert is_safe_member_name(member) is safe
