"""Table layout (subctl.md §4.2) against the spec's own example and the byte/char quirk."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from submariner.cli.tables import Column, cell_text, render

CONNECTIONS = (Column("GATEWAY", 30), Column("CLUSTER", 24), Column("REMOTE IP"), Column("NAT"),
               Column("CABLE DRIVER"), Column("SUBNETS", 40), Column("STATUS"), Column("RTT avg."))


def test_spec_example_connections() -> None:
    row = ["cluster2-worker", "cluster2", "172.18.0.6", False, "libreswan", ["100.2.0.0/16", "10.2.0.0/16"],
           "connected", "412.37µs"]
    text = render(CONNECTIONS, [row])
    lines = text.splitlines()
    assert [line.rstrip() for line in lines] == [
        "GATEWAY           CLUSTER    REMOTE IP    NAT   CABLE DRIVER   SUBNETS                     "
        "STATUS      RTT avg.",
        "cluster2-worker   cluster2   172.18.0.6   no    libreswan      100.2.0.0/16, 10.2.0.0/16   "
        "connected   412.37µs",
    ]
    # The last column is padded too; "412.37µs" is 9 bytes, so the width is 9 and both cells get width+3 chars.
    assert lines[0].endswith("RTT avg.    ")
    assert lines[1].endswith("412.37µs    ")


def test_micro_sign_gets_one_extra_space_like_upstream() -> None:
    text = render([Column("A"), Column("B")], [["312.197µs", "x"], ["1.5ms", "y"]])
    assert text.splitlines() == ["A            B   ", "312.197µs    x   ", "1.5ms        y   "]


def test_truncation_to_max_width_and_empty_table() -> None:
    text = render([Column("NAME", 5), Column("X")], [["abcdefghij", True]])
    assert text == "NAME    X     \nabcde   yes   \n"
    assert render([Column("A")], []) == ""
    assert cell_text(None) == "" and cell_text([1, "b"]) == "1, b" and cell_text(False) == "no"


@given(st.lists(st.lists(st.text(alphabet="abcµ-. ", max_size=12), min_size=3, max_size=3), min_size=1,
                max_size=6))
def test_every_column_starts_at_the_same_character_offset_for_ascii(rows: list[list[str]]) -> None:
    rows = [[c.replace("µ", "u") for c in r] for r in rows]
    cols = [Column("ONE"), Column("TWO", 4), Column("THREE")]
    lines = render(cols, rows).splitlines()
    assert len(lines) == len(rows) + 1
    assert len({len(line) for line in lines}) == 1  # all ASCII: equal widths
    assert all(line.endswith("   ") for line in lines)
