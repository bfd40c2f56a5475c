"""Corefile lexer/parser (CoreDNS's caddyfile semantics) and the key/listener/zone-selection layer on top."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from submariner.lab.daemon import KIND_COREFILE as KIND_DEFAULT  # kind's default Corefile, as the lab seeds it
from submariner.lighthouse.dns import corefile
from submariner.lighthouse.dns.config import (
    ONCE_ONLY,
    BlockConfig,
    ZoneIndex,
    build_configs,
    check_once_only,
    group_listeners,
    parse_key,
)
from submariner.lighthouse.dns.corefile import DEFAULT_COREFILE, ServerBlock, Token, lex, parse
from submariner.lighthouse.dns.plugin import Directive, ServerKey, SetupError

SEED_REWRITTEN = (
    "#lighthouse-start AUTO-GENERATED SECTION. DO NOT EDIT\n"
    "clusterset.local:53 {\n"
    "    forward . 10.88.123.45\n"
    "}\n"
    "#lighthouse-end\n" + KIND_DEFAULT
)

LIGHTHOUSE_OWN = "clusterset.local:53 {\nlighthouse\nerrors\nhealth\nready\nprometheus :9153\n}\n"

KNOWN = {
    "errors", "health", "ready", "kubernetes", "prometheus", "forward", "cache", "loop", "reload", "loadbalance",
    "lighthouse", "log", "whoami", "hosts", "rewrite", "template", "bind", "view",
}


def D(name: str, args: list[str], line: int, block: list[list[str]] | None = None,
      block_lines: list[int] | None = None, file: str = "Corefile") -> Directive:
    return Directive(name, args, block or [], file, line, block_lines or [])


def texts(src: str) -> list[str]:
    return [t.text for t in lex(src, "F")]


def shape(blocks: list[ServerBlock]) -> list[tuple[list[str], list[tuple[str, list[str], list[list[str]], int]]]]:
    return [(b.keys, [(d.name, d.args, d.block, d.line) for d in b.directives]) for b in blocks]


def one_error(src: str, **kw: object) -> str:
    with pytest.raises(SetupError) as info:
        parse(src, **kw)  # type: ignore[arg-type]
    return str(info.value)


# -- lexer -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("a b c\nd e", ["a", "b", "c", "d", "e"]),
        ("", []),
        ("\n", []),
        (" \t\n", []),
        ("whoami#x", ["whoami"]),
        ("a#b c\nd", ["a", "d"]),
        ("# only a comment", []),
        ('"a"b', ["a", "b"]),
        ('""', [""]),
        ('"" x', ["", "x"]),
        ('a"b"', ['a"b"']),
        ('"a\\"b"', ['a"b']),
        ('"a\\nb"', ["a\\nb"]),
        ('"a\\\\b"', ["a\\\\b"]),
        ('"x y"', ["x y"]),
        ('"#not a comment" z', ["#not a comment", "z"]),
        ('"a"#c', ["a"]),
        ("a\r\nb", ["a", "b"]),
        ("a\rb", ["ab"]),
        ("\ufeffa", ["a"]),
        ("a\ufeff", ["a\ufeff"]),
        ("a\u3000b\u00a0c", ["a", "b", "c"]),
        ("a\x1cb", ["a\x1cb"]),
        ("{ } example.org{", ["{", "}", "example.org{"]),
        ('"{"', ["{"]),
        ('"unterminated', ["unterminated"]),
        ('"', []),
        ('"abc\\', ["abc"]),
    ],
)
def test_lex_texts(src: str, expected: list[str]) -> None:
    assert texts(src) == expected


def test_lex_lines_count_newlines_inside_quotes() -> None:
    tokens = lex('a\n"l1\nl2" z\n  q #c\n\n"x\r\ny"\nw', "File")
    assert tokens == [
        Token("a", "File", 1),
        Token("l1\nl2", "File", 2),
        Token("z", "File", 3),
        Token("q", "File", 4),
        Token("x\r\ny", "File", 6),
        Token("w", "File", 8),
    ]


def test_argument_after_multiline_quoted_token_is_on_the_same_line() -> None:
    blocks = parse('. {\n  hosts "a\nb" c\n  log\n}\n')
    assert shape(blocks) == [([".",], [("hosts", ["a\nb", "c"], [], 2), ("log", [], [], 4)])]


# -- parser: good files ------------------------------------------------------------------------------------


def test_kind_default_corefile() -> None:
    blocks = parse(KIND_DEFAULT, known_directives=KNOWN)
    assert len(blocks) == 1
    b = blocks[0]
    assert (b.keys, b.file, b.line) == ([".:53"], "Corefile", 1)
    assert b.directives == [
        D("errors", [], 2),
        D("health", [], 3, [["lameduck", "5s"]], [4]),
        D("ready", [], 6),
        D("kubernetes", ["cluster.local", "in-addr.arpa", "ip6.arpa"], 7,
          [["pods", "insecure"], ["fallthrough", "in-addr.arpa", "ip6.arpa"], ["ttl", "30"]], [8, 9, 10]),
        D("prometheus", [":9153"], 12),
        D("forward", [".", "/etc/resolv.conf"], 13, [["max_concurrent", "1000"]], [14]),
        D("cache", ["30"], 16),
        D("loop", [], 17),
        D("reload", [], 18),
        D("loadbalance", [], 19),
    ]


def test_seed_rewritten_corefile() -> None:
    blocks = parse(SEED_REWRITTEN, known_directives=KNOWN)
    assert [(b.keys, b.line) for b in blocks] == [(["clusterset.local:53"], 2), ([".:53"], 6)]
    assert blocks[0].directives == [D("forward", [".", "10.88.123.45"], 3)]
    assert [d.name for d in blocks[1].directives] == [
        "errors", "health", "ready", "kubernetes", "prometheus", "forward", "cache", "loop", "reload", "loadbalance"
    ]
    assert blocks[1].directives[3].line == 12
    configs = build_configs(blocks, 53)
    assert [c.keys for c in configs] == [[ServerKey("dns", "clusterset.local.", 53)], [ServerKey("dns", ".", 53)]]


def test_lighthouse_own_corefile() -> None:
    blocks = parse(LIGHTHOUSE_OWN, known_directives=KNOWN)
    assert shape(blocks) == [(["clusterset.local:53"], [
        ("lighthouse", [], [], 2), ("errors", [], [], 3), ("health", [], [], 4), ("ready", [], [], 5),
        ("prometheus", [":9153"], [], 6),
    ])]


def test_default_corefile() -> None:
    blocks = parse(DEFAULT_COREFILE.replace("{port}", "1053"))
    assert shape(blocks) == [([".:1053"], [("whoami", [], [], 2), ("log", [], [], 3)])]


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("", []),
        ('""', []),
        ("example.org", [(["example.org"], [])]),
        ("example.org\nwhoami\nlog foo", [(["example.org"], [("whoami", [], [], 2), ("log", ["foo"], [], 3)])]),
        ("example.org\n{\n  whoami\n}", [(["example.org"], [("whoami", [], [], 3)])]),
        ("a b {\n}", [(["a", "b"], [])]),
        ("a, b {\n}", [(["a", "b"], [])]),
        ("a,\n  b,\n  c {\n}", [(["a", "b", "c"], [])]),
        ("a:1, dns://b:2\nlog", [(["a:1", "dns://b:2"], [("log", [], [], 2)])]),
        ('a "" b {\n}', [(["a", "b"], [])]),
        ("a {\n}\nb {\n  log\n}", [(["a"], []), (["b"], [("log", [], [], 4)])]),
        # A block without braces runs to EOF, unless a `}` ends it (Caddy's quirk).
        ("a\nlog\n}\nb {\n whoami\n}", [(["a"], [("log", [], [], 2)]), (["b"], [("whoami", [], [], 5)])]),
        # Repeated directives stay separate, in file order.
        ("a {\n log x\n whoami\n log y\n}",
         [(["a"], [("log", ["x"], [], 2), ("whoami", [], [], 3), ("log", ["y"], [], 4)])]),
        # Nested braces inside a nested block stay tokens of its lines.
        ("a {\n t x {\n  m {\n   n 1\n  }\n  o\n }\n}",
         [(["a"], [("t", ["x"], [["m", "{"], ["n", "1"], ["}"], ["o"]], 2)])]),
        ("a {\n log {\n }\n}", [(["a"], [("log", [], [], 2)])]),
        ("a {\n log { class all\n  x }\n}", [(["a"], [("log", [], [["class", "all"], ["x"]], 2)])]),
        # Quirk: the missing final `}` goes unnoticed when the last token closes a nested block.
        ("a {\n forward . x {\n  max_fails 1\n }\n", [(["a"], [("forward", [".", "x"], [["max_fails", "1"]], 2)])]),
        # `import` that is an argument is not an import.
        ("a {\n hosts import x\n}", [(["a"], [("hosts", ["import", "x"], [], 2)])]),
    ],
)
def test_parse_good(src: str, expected: object) -> None:
    assert shape(parse(src)) == expected


def test_block_line_numbers() -> None:
    (b,) = parse("a {\n  kubernetes x {\n\n    pods insecure\n    # c\n    ttl 30\n  }\n}\n")
    assert b.directives[0].block_line_numbers == [4, 6]


def P(line: int, message: str) -> str:
    return f"Corefile:{line} - Error during parsing: {message}"


def S(line: int, token: str, expected: str) -> str:
    return f"Corefile:{line} - Syntax error: Unexpected token '{token}', expecting '{expected}'"


NO_OPEN = "Unexpected '}' because no matching opening brace"
ARG_COUNT = "Wrong argument count or unexpected line ending after 'import'"


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("a {\n  foo\n}", P(2, "Unknown directive 'foo'")),
        ("a\nfoo", P(2, "Unknown directive 'foo'")),
        ("a {\n log }\n}", P(2, NO_OPEN)),
        (". { whoami }", P(1, NO_OPEN)),
        ("a {\n log {\n  x\n", P(3, "Unexpected EOF")),
        ("a {\n log {\n  x {\n }\n", P(4, "Unexpected EOF")),
        ("a,\n", P(1, "Unexpected EOF")),
        ("a, b,", P(1, "Unexpected EOF")),
        ("a, {\n}", P(1, "Expected another address but had '{' - check for extra comma")),
        ("a {\n log\n", S(2, "log", "}")),
        ("a {\n log\n {\n }\n}", P(3, "Unexpected '{' on a new line: a block must open on the directive's line")),
        ("a {\n forward . x { } y\n}", P(2, "Unexpected token 'y' after the block of 'forward'")),
        ("(s)\nlog", S(2, "log", "{")),
        ("(s) {\n log\n", S(2, "log", "}")),
        ("(s) {\n log\n}\n(s) {\n}", P(4, "redeclaration of previously declared snippet s")),
        ("a {\n import\n}", P(2, ARG_COUNT)),
        ("a {\n import x y\n}", P(2, "Import takes only one argument (glob pattern or file)")),
        ("a {\n import {$EMPTY}\n}", P(2, "Import requires a non-empty filepath")),
        ("import\na {\n}", P(1, ARG_COUNT)),
    ],
)
def test_parse_bad(src: str, message: str) -> None:
    assert one_error(src, known_directives=KNOWN, env={}) == message


def test_unknown_directive_inside_a_second_block_names_its_line() -> None:
    assert one_error(SEED_REWRITTEN.replace("    loop\n", "    lop\n"), known_directives=KNOWN) == (
        "Corefile:22 - Error during parsing: Unknown directive 'lop'"
    )


def test_without_known_directives_anything_goes() -> None:
    assert shape(parse("a {\n  whatever 1\n}")) == [(["a"], [("whatever", ["1"], [], 2)])]


def test_file_name_in_errors() -> None:
    assert one_error("a {\n foo\n}", file="/etc/coredns/Corefile", known_directives=KNOWN).startswith(
        "/etc/coredns/Corefile:2 - "
    )


# -- snippets ----------------------------------------------------------------------------------------------


def test_snippet_import_in_body() -> None:
    src = "(common) {\n    errors\n    log\n}\nexample.org {\n    import common\n    whoami\n}\n"
    assert shape(parse(src, known_directives=KNOWN)) == [
        (["example.org"], [("errors", [], [], 2), ("log", [], [], 3), ("whoami", [], [], 7)])
    ]


def test_snippet_defines_whole_blocks_at_top_level() -> None:
    src = "(blk) {\n  example.org {\n    whoami\n  }\n}\nimport blk\n. {\n log\n}"
    assert shape(parse(src)) == [(["example.org"], [("whoami", [], [], 3)]), (["."], [("log", [], [], 8)])]


def test_snippet_import_inside_nested_block() -> None:
    src = "(opts) {\n  pods insecure\n}\n. {\n  kubernetes cluster.local {\n    import opts\n    ttl 30\n  }\n}\n"
    (b,) = parse(src)
    assert b.directives == [D("kubernetes", ["cluster.local"], 5, [["pods", "insecure"], ["ttl", "30"]], [2, 7])]


def test_snippet_body_checked_only_when_imported() -> None:
    src = "(s) {\n  bogus\n}\n. {\n  whoami\n}\n"
    assert len(parse(src, known_directives=KNOWN)) == 1
    assert one_error(src.replace("whoami", "import s"), known_directives=KNOWN) == (
        "Corefile:2 - Error during parsing: Unknown directive 'bogus'"
    )


def test_empty_snippet_and_reuse() -> None:
    src = "(e) {\n}\n(l) {\n log\n}\na {\n import e\n import l\n import l\n}"
    assert shape(parse(src)) == [(["a"], [("log", [], [], 4), ("log", [], [], 4)])]


@pytest.mark.parametrize(
    "src",
    [
        "(loop) {\n import loop\n}\nimport loop\n",
        "(loop) {\n { }\n import loop\n}\nimport loop\n",
        "(a) {\n import b\n}\n(b) {\n import a\n}\nx {\n import a\n}\n",
    ],
)
def test_snippet_cycles_fail(src: str) -> None:
    assert "maximum snippet import depth (10000) exceeded" in one_error(src)


def test_unknown_snippet_is_a_file_and_order_matters(tmp_path: Path) -> None:
    src = "a {\n import later\n}\n(later) {\n log\n}\n"
    assert one_error(src, file=str(tmp_path / "Corefile")) == (
        f"{tmp_path}/Corefile:2 - Error during parsing: File to import not found: later"
    )


# -- imports -----------------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_top_level_glob_import_like_k3s(tmp_path: Path) -> None:
    write(tmp_path / "custom" / "b.server", "b.org {\n  whoami\n}\n")
    write(tmp_path / "custom" / "a.server", "a.org {\n  log\n}\n")
    write(tmp_path / "custom" / "ignored.txt", "junk {\n}\n")
    main = write(tmp_path / "Corefile", ". {\n  whoami\n}\nimport custom/*.server\n")
    blocks = parse(main.read_text(), str(main))
    assert [b.keys for b in blocks] == [["."], ["a.org"], ["b.org"]]
    assert (blocks[1].file, blocks[1].line) == (str(tmp_path / "custom" / "a.server"), 1)
    assert blocks[2].directives == [D("whoami", [], 2, file=str(tmp_path / "custom" / "b.server"))]


def test_body_glob_import_like_aks(tmp_path: Path) -> None:
    write(tmp_path / "custom" / "x.override", "log\nerrors\n")
    write(tmp_path / "custom" / ".hidden.override", "whoami\n")  # Go's glob matches dot files too
    main = write(tmp_path / "Corefile", ".:53 {\n  cache 30\n  import custom/*.override\n  loop\n}\n")
    (b,) = parse(main.read_text(), str(main), known_directives=KNOWN)
    assert [(d.name, Path(d.file).name, d.line) for d in b.directives] == [
        ("cache", "Corefile", 2), ("whoami", ".hidden.override", 1), ("log", "x.override", 1),
        ("errors", "x.override", 2), ("loop", "Corefile", 4),
    ]


def test_import_inside_nested_block_and_nested_relative_paths(tmp_path: Path) -> None:
    write(tmp_path / "conf" / "opts", "max_concurrent 10\nimport more\n")
    write(tmp_path / "conf" / "more", "expire 10s\n")  # relative to conf/opts, not to the Corefile
    main = write(tmp_path / "Corefile", ". {\n  forward . 1.1.1.1 {\n    import conf/opts\n    force_tcp\n  }\n}\n")
    (b,) = parse(main.read_text(), str(main))
    assert b.directives[0].block == [["max_concurrent", "10"], ["expire", "10s"], ["force_tcp"]]
    assert b.directives[0].block_line_numbers == [1, 1, 4]


def test_absolute_import_and_empty_or_bom_files(tmp_path: Path) -> None:
    write(tmp_path / "empty.conf", "")
    write(tmp_path / "bom.conf", "\ufefflog\n")
    src = f". {{\n  import {tmp_path}/empty.conf\n  import {tmp_path}/bom.conf\n}}\n"
    assert shape(parse(src, str(tmp_path / "elsewhere" / "Corefile"))) == [(["."], [("log", [], [], 1)])]


def test_import_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    main = str(tmp_path / "Corefile")
    (tmp_path / "adir").mkdir()
    write(tmp_path / "bad.conf", "whoami\nbogus\n")

    assert one_error(". {\n  import nope.conf\n}", file=main) == (
        f"{main}:2 - Error during parsing: File to import not found: nope.conf"
    )
    assert one_error(". {\n  import adir\n}", file=main) == (
        f"{main}:2 - Error during parsing: Could not import {tmp_path}/adir: is a directory"
    )
    assert "Glob pattern may only contain one wildcard" in one_error(". {\n import */*.conf\n}", file=main)
    assert "Glob pattern may only contain one wildcard" in one_error(". {\n import [a].conf\n}", file=main)
    assert "syntax error in pattern" in one_error(". {\n import x[.conf\n}", file=main)
    assert one_error(". {\n  import bad.conf\n}", file=main, known_directives=KNOWN) == (
        f"{tmp_path}/bad.conf:2 - Error during parsing: Unknown directive 'bogus'"
    )
    with caplog.at_level(logging.WARNING):
        assert shape(parse(". {\n  import none/*.conf\n  log\n}", main)) == [(["."], [("log", [], [], 3)])]
    assert "No files matching import glob pattern: none/*.conf" in caplog.text


def test_self_import_and_file_cycles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    main = write(tmp_path / "Corefile", ". {\n  whoami\n}\nimport *\n")
    assert "a file cannot import itself" in one_error(main.read_text(), file=str(main))
    write(tmp_path / "a.conf", "import b.conf\n")
    write(tmp_path / "b.conf", "import a.conf\n")
    monkeypatch.setattr(corefile, "MAX_FILE_EXPANSIONS", 50)
    assert "maximum file import depth (50) exceeded" in one_error("import a.conf\n", file=str(tmp_path / "x"))


def test_one_glob_may_import_many_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(30):
        write(tmp_path / "d" / f"f{i:02}", "")
    monkeypatch.setattr(corefile, "MAX_FILE_EXPANSIONS", 10)
    assert parse("import d/*\n", str(tmp_path / "Corefile")) == []


# -- environment -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "env", "expected"),
    [
        ("{$ZONE}:{$PORT}\nlog", {"ZONE": "example.org", "PORT": "1053"},
         [(["example.org:1053"], [("log", [], [], 2)])]),
        ("{%ZONE%}:{$PORT}\nlog", {"ZONE": "a", "PORT": "1"}, [(["a:1"], [("log", [], [], 2)])]),
        ("a{$NOPE}b\nlog", {}, [(["ab"], [("log", [], [], 2)])]),
        (":1\nlog {%A}", {"A": "x"}, [([":1"], [("log", ["{%A}"], [], 2)])]),
        (":1\nlog {$} {%%} x{$A$}y", {}, [([":1"], [("log", ["{$}", "{%%}", "xy"], [], 2)])]),
        ("a\nlog {$A}", {"A": "{$B}", "B": "deep"}, [(["a"], [("log", ["deep"], [], 2)])]),
        ("a\nlog {$A} z", {"A": "two words"}, [(["a"], [("log", ["two words", "z"], [], 2)])]),
        ("a\nhosts {$A}\nlog", {"A": "{"}, [(["a"], [("hosts", ["{"], [], 2), ("log", [], [], 3)])]),
        ("a\n{$P} x", {"P": "whoami"}, [(["a"], [("whoami", ["x"], [], 2)])]),
        ('a\nlog "t {$A} t"', {"A": "v"}, [(["a"], [("log", ["t v t"], [], 2)])]),
        ('a\ntemplate {{$x}} "{{ $x }}"', {}, [(["a"], [("template", ["{}", "{{ $x }}"], [], 2)])]),
        ("{$EMPTY} b {\n}", {}, [(["b"], [])]),
    ],
)
def test_env_substitution(src: str, env: dict[str, str], expected: object) -> None:
    assert shape(parse(src, env=env)) == expected


def test_env_in_import_pattern_and_process_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "x.conf", "log\n")
    monkeypatch.setenv("SUBMARINER_TEST_IMPORT", "x.conf")
    (b,) = parse(". {\n import {$SUBMARINER_TEST_IMPORT}\n}", str(tmp_path / "Corefile"))
    assert [d.name for d in b.directives] == ["log"]


def test_env_self_reference_fails_instead_of_looping() -> None:
    assert "does not terminate" in one_error("a\nlog {$A}", env={"A": "x{$A}"})
    assert "does not terminate" in one_error("a\nlog {$A}", env={"A": "{$A}{$A}"})


# -- keys --------------------------------------------------------------------------------------------------


def zones(raw: str, default_port: int = 53) -> list[tuple[str, int]]:
    return [(k.zone, k.port) for k in parse_key(raw, default_port)]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (".", [(".", 53)]),
        (".:53", [(".", 53)]),
        ("EXAMPLE.ORG", [("example.org.", 53)]),
        ("example.org.:1053", [("example.org.", 1053)]),
        ("dns://example.org", [("example.org.", 53)]),
        ("dns://.:5300", [(".", 5300)]),
        ("clusterset.local:53", [("clusterset.local.", 53)]),
        ("a\\.b", [("a\\.b.", 53)]),
        ("172.20.5.0/24", [("5.20.172.in-addr.arpa.", 53)]),
        ("172.16.0.0/15", [("16.172.in-addr.arpa.", 53), ("17.172.in-addr.arpa.", 53)]),
        ("10.0.0.0/8:1053", [("10.in-addr.arpa.", 1053)]),
        ("10.9.8.7/32", [("7.8.9.10.in-addr.arpa.", 53)]),
        ("0.0.0.0/0", [("in-addr.arpa.", 53)]),
        ("2001:db8::/32", [("8.b.d.0.1.0.0.2.ip6.arpa.", 53)]),
        ("2001:db8::/31", [("8.b.d.0.1.0.0.2.ip6.arpa.", 53), ("9.b.d.0.1.0.0.2.ip6.arpa.", 53)]),
        ("10.0.0.0/33", [("10.0.0.0/33.", 53)]),  # not a CIDR: a (strange) domain name, as in CoreDNS
    ],
)
def test_parse_key(raw: str, expected: list[tuple[str, int]]) -> None:
    assert zones(raw) == expected


def test_cidr_on_non_octet_boundary_splits() -> None:
    got = zones("10.9.8.128/25")
    assert len(got) == 128
    assert got[0] == ("128.8.9.10.in-addr.arpa.", 53)
    assert got[-1] == ("255.8.9.10.in-addr.arpa.", 53)
    v6 = zones("2001:db8::/33:8053")
    assert [z for z, _ in v6] == [f"{d}.8.b.d.0.1.0.0.2.ip6.arpa." for d in "01234567"]
    assert {p for _, p in v6} == {8053}


def test_default_port_only_when_absent() -> None:
    assert zones("example.org", 1053) == [("example.org.", 1053)]
    assert zones("example.org:53", 1053) == [("example.org.", 53)]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("example.org:", 'expecting data after last colon: "example.org:"'),
        ("", 'expecting data after last colon: ""'),
        (":53", "zone is not a valid domain name: "),
        ("a..b", "zone is not a valid domain name: a..b"),
        (".a", "zone is not a valid domain name: .a"),
        ("x" * 64 + ".org", "zone is not a valid domain name: " + "x" * 64 + ".org"),
        ("a." * 128, "specified zone is too long: 256 > 255"),
        ("::/0", "invalid CIDR ::/0"),
        ("0::/0", "invalid CIDR 0::/0"),
        ("example.org:70000", "invalid port 70000 in example.org:70000"),
        ("tls://example.org", "transport tls:// is not supported (only dns://): tls://example.org"),
        ("grpc://example.org", "transport grpc:// is not supported (only dns://): grpc://example.org"),
        ("https://example.org", "transport https:// is not supported (only dns://): https://example.org"),
        ("quic://example.org", "transport quic:// is not supported (only dns://): quic://example.org"),
    ],
)
def test_parse_key_errors(raw: str, message: str) -> None:
    with pytest.raises(SetupError) as info:
        parse_key(raw, 53)
    assert str(info.value) == message


def test_build_configs_error_names_block() -> None:
    with pytest.raises(SetupError, match=r"^Corefile:4 - Error during parsing: transport tls:// is not supported"):
        build_configs(parse("a {\n}\n\ntls://b {\n}\n"), 53)


# -- once-only ---------------------------------------------------------------------------------------------


def test_once_only() -> None:
    assert {"errors", "cache", "hosts", "kubernetes", "prometheus", "ready", "loop", "dnssec", "tsig", "nsid",
            "view", "grpc", "shed", "pprof"} == ONCE_ONLY
    (ok,) = build_configs(parse("a {\n log\n log\n forward . x\n forward . y\n cache\n}"), 53)
    check_once_only(ok, ONCE_ONLY)
    (bad,) = build_configs(parse("a {\n cache\n log\n cache 30\n}"), 53)
    with pytest.raises(SetupError) as info:
        check_once_only(bad, ONCE_ONLY)
    assert str(info.value) == (
        "plugin/cache: Corefile:4 - Error during parsing: this plugin can only be used once per Server Block"
    )


# -- listeners ---------------------------------------------------------------------------------------------


def configs_of(src: str, default_port: int = 53) -> list[BlockConfig]:
    return build_configs(parse(src), default_port)


def bind_directive(cfg: BlockConfig) -> list[str]:
    return [a for d in cfg.directives if d.name == "bind" for a in d.args] or [""]


def test_grouping_by_port_and_bind() -> None:
    cfgs = configs_of(
        "a.org b.org {\n whoami\n}\n"
        "c.org:1053 d.org {\n whoami\n}\n"
        "a.org:1053 {\n whoami\n}\n"
        "e.org {\n bind 127.0.0.1 ::1\n whoami\n}\n"
        "e.org {\n bind 0:0::2\n whoami\n}\n"
    )
    groups = group_listeners(cfgs, bind_directive)
    assert {k: [cfgs.index(c) for c in v] for k, v in groups.items()} == {
        ("", 53): [0, 1],
        ("", 1053): [1, 2],
        ("127.0.0.1", 53): [3],
        ("::1", 53): [3],
        ("::2", 53): [4],
    }


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("example.org {\n}\nexample.org:53 {\n}", "cannot serve dns://example.org.:53 - it is already defined"),
        ("example.org EXAMPLE.ORG. {\n}", "cannot serve dns://example.org.:53 - it is already defined"),
        ("dns://.:53 {\n}\n. {\n}", "cannot serve dns://.:53 - it is already defined"),
        ("10.0.0.0/24 {\n}\n0.0.10.in-addr.arpa {\n}",
         "cannot serve dns://0.0.10.in-addr.arpa.:53 - it is already defined"),
        ("a {\n bind 127.0.0.1\n}\na {\n bind 127.0.0.1\n}",
         "cannot serve dns://a.:53 on 127.0.0.1 - it is already defined"),
        ("a {\n}\na {\n bind 127.0.0.1\n}",
         "cannot serve dns://a.:53 on 127.0.0.1 - zone overlap listener capacity with dns://a.:53"),
        ("a {\n bind 127.0.0.1\n}\na {\n}",
         "cannot serve dns://a.:53 - zone overlap listener capacity with dns://a.:53 on 127.0.0.1"),
        # An unfiltered block registers its zone: a `view` block after it collides.
        ("a {\n}\na {\n view v\n}", "cannot serve dns://a.:53 - it is already defined"),
    ],
)
def test_duplicates(src: str, message: str) -> None:
    with pytest.raises(SetupError) as info:
        group_listeners(configs_of(src), bind_directive)
    assert str(info.value) == message


def test_allowed_sharing() -> None:
    group_listeners(configs_of("a {\n}\na:1053 {\n}\n"))
    group_listeners(configs_of("a {\n bind 127.0.0.1\n}\na {\n bind 127.0.0.2\n}"), bind_directive)
    groups = group_listeners(configs_of("a {\n view one\n}\na {\n view two\n}\na {\n}"))
    assert len(groups[("", 53)]) == 3


# -- zone selection ----------------------------------------------------------------------------------------

A, DS = 1, 43

SELECT_SRC = (
    ". {\n whoami\n}\n"
    "example.org {\n whoami\n}\n"
    "sub.example.org {\n whoami\n}\n"
    "org {\n whoami\n}\n"
    "empty.example.org {\n}\n"
    "healthonly.net {\n health\n}\n"
    "b.c {\n whoami\n}\n"
    "EXAMPLE.COM:1053 {\n whoami\n}\n"
)


@pytest.fixture(scope="module")
def index() -> tuple[ZoneIndex, dict[str, BlockConfig]]:
    cfgs = configs_of(SELECT_SRC)
    by_zone = {c.keys[0].zone: c for c in cfgs}
    return ZoneIndex(cfgs, 53), by_zone


@pytest.mark.parametrize(
    ("qname", "qtype", "zone"),
    [
        ("www.sub.example.org.", A, "sub.example.org."),
        ("sub.example.org.", A, "sub.example.org."),
        ("www.example.org.", A, "example.org."),
        ("example.org.", A, "example.org."),
        ("x.y.z.org.", A, "org."),
        ("foo.net.", A, "."),
        (".", A, "."),
        ("example.com.", A, "."),  # its block is on another port
        # DS: the walk goes on; the last (shortest) non-root match wins, even a grandparent.
        ("sub.example.org.", DS, "org."),
        ("www.example.org.", DS, "org."),
        ("foo.net.", DS, "."),
        (".", DS, "."),
        # Labels split on unescaped dots only.
        ("a\\.b.c.", A, "."),
        ("a.b.c.", A, "b.c."),
        ("a\\\\.b.c.", A, "b.c."),
        # A matching block without query plugins is REFUSED; no retry in a parent block.
        ("x.empty.example.org.", A, None),
        ("empty.example.org.", DS, None),
        ("healthonly.net.", A, None),
    ],
)
def test_select(index: tuple[ZoneIndex, dict[str, BlockConfig]], qname: str, qtype: int, zone: str | None) -> None:
    idx, by_zone = index
    chosen = idx.select(qname, qtype)
    assert chosen is (by_zone[zone] if zone else None)


def test_select_without_root_is_refused_and_ports() -> None:
    cfgs = configs_of("example.org {\n whoami\n}\nexample.org:1053 other.org:1053 {\n log\n}\n")
    assert ZoneIndex(cfgs, 53).select("foo.net.", A) is None
    assert ZoneIndex(cfgs, 53).select("a.example.org.", A) is cfgs[0]
    assert ZoneIndex(cfgs, 1053).select("a.example.org.", A) is cfgs[1]
    assert ZoneIndex(cfgs, 1053).select("other.org.", A) is cfgs[1]
    assert ZoneIndex([], 53).select(".", A) is None


def test_select_with_views_and_custom_chain_predicate() -> None:
    cfgs = configs_of("a {\n view one\n}\na {\n view two\n}\na {\n whoami\n}\n. {\n view x\n}\n. {\n log\n}")
    idx = ZoneIndex(cfgs, 53, has_chain=lambda c: True)
    assert idx.select("x.a.", A, accept=lambda c: c is not cfgs[0]) is cfgs[1]
    assert idx.select("x.a.", A, accept=lambda c: c is cfgs[2]) is cfgs[2]
    assert idx.select("x.b.", A, accept=lambda c: c is not cfgs[3]) is cfgs[4]
    assert idx.select("x.b.", A, accept=lambda c: False) is None


# -- robustness --------------------------------------------------------------------------------------------

_PIECES = st.sampled_from([
    "import", "(s)", "{", "}", "\n", " ", "\t", '"', "\\", "#", ",", "{$A}", "{%A%}", "{$C}", "log", "whoami",
    ".:53", "a.org", "*", "?", "[", "]", ":", "s", "x.conf", "..", "\r", "\ufeff", "{$", "%}",
])
_TEXT = st.lists(_PIECES | st.text(alphabet=st.characters(blacklist_characters="/"), max_size=4), max_size=40).map(
    "".join
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    write(d / "x.conf", "log\n}\n{\n")
    return d


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_TEXT, known=st.booleans())
def test_only_setup_errors_on_random_text(sandbox: Path, text: str, known: bool) -> None:
    lex(text, "F")
    env = {"A": "{$B}", "B": "x y", "C": "{$C}"}
    try:
        blocks = parse(text, str(sandbox / "Corefile"), env=env, known_directives=KNOWN if known else None)
    except SetupError:
        return
    for block in blocks:
        with contextlib.suppress(SetupError):
            build_configs([block], 53)
