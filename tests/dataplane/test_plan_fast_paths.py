"""The planner's fast paths change speed, never results: `parse_save` splits plain lines with str.split but
must give exactly shlex's words for every line, and the memoised `canonical` must answer as a fresh parse
(also for lists, and by raising again on rules that do not parse)."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from submariner.dataplane.packetfilter import RuleParseError, canonical
from submariner.dataplane.packetfilter.model import _canonical_cached
from submariner.dataplane.packetfilter.plan import _split, parse_save

# Letters of rule lines plus every character where shlex and str.split could part ways.
TRICKY = "aZ09-_./:!, \t\"'\\\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u2003é#"


def _shlex_or_error(line: str) -> list[str] | type[ValueError]:
    try:
        return shlex.split(line)
    except ValueError:
        return ValueError


@given(st.text(alphabet=TRICKY, max_size=40))
def test_split_gives_shlex_words_for_any_line(line: str) -> None:
    want = _shlex_or_error(line)
    if want is ValueError:  # unbalanced quotes: the fast path must not hide shlex's error
        with pytest.raises(ValueError):
            _split(line)
    else:
        assert _split(line) == want


def test_parse_save_keeps_quoted_comments_whole() -> None:
    text = ("*nat\n:SUBM-X - [0:0]\n"
            '-A SUBM-X -d 10.9.0.0/16 -m comment --comment "two words \\"q\\"" -j ACCEPT\n'
            "-A SUBM-X -s 10.8.0.1/32 -j SNAT --to-source 242.1.0.1\n"
            "COMMIT\n")
    chain = parse_save(text)["nat"].chains["SUBM-X"]
    assert chain == [("-d", "10.9.0.0/16", "-m", "comment", "--comment", 'two words "q"', "-j", "ACCEPT"),
                     ("-s", "10.8.0.1/32", "-j", "SNAT", "--to-source", "242.1.0.1")]


def test_canonical_cached_answers_as_a_fresh_parse() -> None:
    args = ("-s", "10.0.0.7/8", "-m", "mark", "--mark", "0xC0000/0xC0000", "-j", "ACCEPT")
    fresh = _canonical_cached.__wrapped__(args)
    assert canonical(args) == fresh
    assert canonical(list(args)) == fresh  # lists are accepted as before
    hits = _canonical_cached.cache_info().hits
    assert canonical(args) == fresh
    assert _canonical_cached.cache_info().hits == hits + 1


def test_canonical_raises_every_time_on_a_bad_rule() -> None:
    for _ in range(2):
        with pytest.raises(RuleParseError):
            canonical(("-s", "-j", "ACCEPT"))
