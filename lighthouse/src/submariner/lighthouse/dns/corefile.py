"""The Corefile lexer and parser, a port of `coredns/caddy` `caddyfile` (lexer.go, parse.go, dispenser.go).

The parser mirrors Caddy's cursor-over-a-token-list design on purpose: its quirks (a missing final `}` goes
unnoticed after a nested block, `{` on the line after the keys, imported tokens compared by line number) are
part of what "accepts the same Corefiles" means, and they fall out of the same control flow. Only the storage
differs: consumed tokens and the (reversed) rest are two lists, so an `import` splices in O(imported tokens).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from submariner.lighthouse.dns.plugin import Directive, SetupError

__all__ = ["DEFAULT_COREFILE", "ServerBlock", "Token", "lex", "parse"]

_log = logging.getLogger(__name__)

#: What CoreDNS serves when no Corefile is found (`whoami` and `log` for every name): substitute the
#: `-dns.port` value with `DEFAULT_COREFILE.replace("{port}", str(port))` (the braces rule out str.format)
#: and parse it as file "Corefile".
DEFAULT_COREFILE = ".:{port} {\n    whoami\n    log\n}\n"

#: Caps on `import` expansions per parse: cyclic snippets or files fail instead of looping forever.
MAX_SNIPPET_EXPANSIONS = 10_000
MAX_FILE_EXPANSIONS = 100_000

# Go's unicode.IsSpace (Python's str.isspace also accepts U+001C..U+001F, Go does not).
_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)

# Bounds on `{$NAME}` expansion: Go loops forever on a self-referencing value, we refuse instead.
_ENV_MAX_ROUNDS = 10_000
_ENV_MAX_LEN = 1 << 20


class Token(NamedTuple):
    """One lexed word with the file and line it starts on."""

    text: str
    file: str
    line: int


@dataclass(slots=True)
class ServerBlock:
    """A parsed server block: raw keys (after `{$ENV}`), its directives in file order, where it starts."""

    keys: list[str]
    directives: list[Directive]
    file: str
    line: int


def lex(text: str, file: str) -> list[Token]:
    """Split a Corefile into tokens exactly as Caddy's lexer does (quotes, comments, line counting)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    tokens: list[Token] = []
    val: list[str] = []
    line = start = 1
    quoted = escaped = comment = False
    for ch in text:
        if quoted:
            if not escaped:
                if ch == "\\":
                    escaped = True
                    continue
                if ch == '"':
                    # The closing quote ends the token at once: `"a"b` is two tokens.
                    quoted = False
                    tokens.append(Token("".join(val), file, start))
                    val = []
                    continue
            if ch == "\n":
                line += 1
            if escaped and ch != '"':
                val.append("\\")  # only \" is an escape; any other backslash stays literal
            val.append(ch)
            escaped = False
            continue
        if ch in _SPACE:
            if ch == "\r":
                continue  # skipped, and (as in Go) it does not even end a word
            if ch == "\n":
                line += 1
                comment = False
            if val:
                tokens.append(Token("".join(val), file, start))
                val = []
            continue
        if ch == "#":
            comment = True  # even in the middle of a word
        if comment:
            continue
        if not val:
            start = line
            if ch == '"':
                quoted = True
                continue
        val.append(ch)
    if val:
        tokens.append(Token("".join(val), file, start))
    return tokens


def parse(
    text: str,
    file: str = "Corefile",
    *,
    env: Mapping[str, str] | None = None,
    known_directives: Collection[str] | None = None,
) -> list[ServerBlock]:
    """Parse a Corefile into server blocks, expanding snippets, imports and `{$ENV}` as CoreDNS does.

    `file` names the text in errors and is the base for relative imports. `env` defaults to the process
    environment. With `known_directives`, any other directive name is an error ("Unknown directive").
    """
    parser = _Parser(lex(text, file), file, os.environ if env is None else env, known_directives)
    return parser.parse_all()


class _EnvLoopError(Exception):
    pass


class _BadPatternError(Exception):
    pass


def _replace_refs(s: str, start: str, end: str, env: Mapping[str, str], rounds: list[int]) -> str:
    # Go's replaceEnvReferences: replace every occurrence of the first reference, rescan from the start.
    index = s.find(start)
    while index != -1:
        end_index = s.find(end, index)
        if end_index == -1:
            break
        if end_index <= index + len(start):
            return s  # `{$}` or `{%%}`: Go stops here
        ref = s[index : end_index + len(end)]
        s = s.replace(ref, env.get(ref[len(start) : len(ref) - len(end)], ""))
        rounds[0] += 1
        if rounds[0] > _ENV_MAX_ROUNDS or len(s) > _ENV_MAX_LEN:
            raise _EnvLoopError
        index = s.find(start)
    return s


def _replace_env(s: str, env: Mapping[str, str]) -> str:
    if "{" not in s:
        return s
    rounds = [0]
    s = _replace_refs(s, "{%", "%}", env, rounds)
    return _replace_refs(s, "{$", "}", env, rounds)


def _breaks(tok: Token) -> int:
    return tok.text.count("\n")


class _Parser:
    """Caddy's parser over a cursor: `_done[-1]` is the current token, `_rest[-1]` the next one."""

    def __init__(self, tokens: list[Token], filename: str, env: Mapping[str, str],
                 known: Collection[str] | None) -> None:
        self._rest = tokens[::-1]
        self._done: list[Token] = []
        self._past_end = False  # cursor beyond the last token (only after an import at the very end)
        self._filename = filename
        self._env = env
        self._known = None if known is None else frozenset(known)
        self._snippets: dict[str, list[Token]] = {}
        self._snippet_expansions = 0
        self._file_expansions = 0
        # One parse sees one state of the file system; cycles re-import the same files up to the cap.
        self._file_cache: dict[str, list[Token]] = {}
        self._glob_cache: dict[str, list[str]] = {}

    # -- cursor (Dispenser) ------------------------------------------------------------------------------

    def _next(self) -> bool:
        if not self._rest:
            return False
        self._done.append(self._rest.pop())
        self._past_end = False
        return True

    def _unread(self) -> None:
        self._rest.append(self._done.pop())

    def _val(self) -> str:
        return self._done[-1].text if self._done and not self._past_end else ""

    def _is_new_line(self) -> bool:
        if len(self._done) < 2:
            return True
        prev, cur = self._done[-2], self._done[-1]
        return prev.file != cur.file or prev.line + _breaks(prev) < cur.line

    def _next_arg(self) -> bool:
        if not self._rest or not self._done:
            return False
        cur, nxt = self._done[-1], self._rest[-1]
        if cur.file == nxt.file and cur.line + _breaks(cur) == nxt.line:
            return self._next()
        return False

    def _where(self) -> tuple[str, int]:
        if not self._done or self._past_end:
            return self._filename, 0
        tok = self._done[-1]
        return tok.file or self._filename, tok.line

    def _err(self, message: str) -> SetupError:
        file, line = self._where()
        return SetupError(f"{file}:{line} - Error during parsing: {message}")

    def _syntax_err(self, expected: str) -> SetupError:
        file, line = self._where()
        return SetupError(f"{file}:{line} - Syntax error: Unexpected token '{self._val()}', expecting '{expected}'")

    def _env_of(self, text: str) -> str:
        try:
            return _replace_env(text, self._env)
        except _EnvLoopError:
            raise self._err(f"environment variable substitution does not terminate in '{text}'") from None

    # -- grammar -----------------------------------------------------------------------------------------

    def parse_all(self) -> list[ServerBlock]:
        blocks: list[ServerBlock] = []
        while self._next():
            block = self._parse_one()
            if block is not None and block.keys:
                blocks.append(block)
        return blocks

    def _parse_one(self) -> ServerBlock | None:
        keys: list[str] = []
        first, eof = self._addresses(keys)
        block = ServerBlock(keys, [], first.file if first else self._filename, first.line if first else 0)
        if eof:
            return block  # a line of keys and nothing else
        if len(keys) == 1 and keys[0].startswith("(") and keys[0].endswith(")"):
            self._define_snippet(keys[0][1:-1])
            return None
        has_brace = self._val() == "{"
        if not has_brace:
            self._unread()  # a single block may omit braces: the rest of the file is its body
        self._directives(block)
        if has_brace and self._val() != "}":
            raise self._syntax_err("}")
        return block

    def _addresses(self, keys: list[str]) -> tuple[Token | None, bool]:
        """Read the key line(s), leaving the cursor on `{` or the first body token.

        Returns the first key's token and whether the file ended with the keys.
        """
        expecting_another = False
        first: Token | None = None
        while True:
            raw = self._val()
            tkn = self._env_of(raw)
            if tkn == "import" and self._is_new_line():
                self._do_import()
                if not self._next():
                    self._past_end = True
                continue
            if raw == "{":
                if expecting_another:
                    raise self._err(f"Expected another address but had '{tkn}' - check for extra comma")
                break
            if tkn:
                # A trailing comma says another key follows, possibly on the next line.
                if tkn.endswith(","):
                    tkn = tkn[:-1]
                    expecting_another = True
                else:
                    expecting_another = False
                keys.append(tkn)
                if first is None:
                    first = self._done[-1]
            if not self._next():
                if expecting_another:
                    raise self._err("Unexpected EOF")
                return first, True
            if not expecting_another and self._is_new_line():
                return first, False
        return first, False

    def _define_snippet(self, name: str) -> None:
        if name in self._snippets:
            raise self._err(f"redeclaration of previously declared snippet {name}")
        if self._val() != "{":
            raise self._syntax_err("{")
        count = 1
        tokens: list[Token] = []
        while self._next():
            raw = self._val()
            if raw == "}":
                count -= 1
                if count == 0:
                    break
            elif raw == "{":
                count += 1
            tokens.append(self._done[-1])
        if count != 0:
            raise self._syntax_err("}")
        # Reject the trivial cycle `(s) { import s }` up front, as Caddy does.
        for i in range(len(tokens) - 1):
            tok = tokens[i]
            if tok.text != "import":
                continue
            at_line_start = i == 0 or tokens[i - 1].file != tok.file or tokens[i - 1].line != tok.line
            if at_line_start and self._env_of(tokens[i + 1].text) == name:
                raise self._err(f"maximum snippet import depth ({MAX_SNIPPET_EXPANSIONS}) exceeded")
        self._snippets[name] = tokens

    def _directives(self, block: ServerBlock) -> None:
        while self._next():
            raw = self._val()
            if raw == "}":
                break
            if raw == "import":
                self._do_import()
                continue
            block.directives.append(self._directive())

    def _directive(self) -> Directive:
        """Collect one directive: its line, plus any `{ ... }` it opens, with `import` expanded inside."""
        name_tok = self._done[-1]
        name = self._env_of(name_tok.text)
        if self._known is not None and name not in self._known:
            raise self._err(f"Unknown directive '{name}'")
        collected: list[tuple[Token, str]] = []  # (token after {$ENV}, raw text deciding structure)
        nesting = 0
        while self._next():
            raw = self._val()
            if raw == "{":
                nesting += 1
            elif nesting == 0 and self._is_new_line():
                self._unread()  # read too far
                break
            elif raw == "}":
                if nesting == 0:
                    raise self._err("Unexpected '}' because no matching opening brace")
                nesting -= 1
            elif raw == "import" and self._is_new_line():
                self._do_import()
                continue
            tok = self._done[-1]
            tok = Token(self._env_of(raw), tok.file, tok.line)
            self._done[-1] = tok  # substituted in place, as Caddy does (line counting sees the value)
            collected.append((tok, raw))
        if nesting > 0:
            raise self._err("Unexpected EOF")
        return self._build(name, name_tok, collected)

    def _build(self, name: str, name_tok: Token, collected: list[tuple[Token, str]]) -> Directive:
        """Split a directive's tokens into arguments and nested block lines the way setup code reads them."""
        args: list[str] = []
        prev = name_tok
        i, n = 0, len(collected)
        while i < n:
            tok, raw = collected[i]
            if raw == "{" or not _same_line(prev, tok):
                break
            args.append(tok.text)
            prev = tok
            i += 1
        directive = Directive(name, args, [], name_tok.file, name_tok.line, [])
        if i == n:
            return directive
        tok, raw = collected[i]
        if raw != "{" or not _same_line(prev, tok):
            raise _token_err(tok, "Unexpected '{' on a new line: a block must open on the directive's line")
        depth = 1
        prev = tok
        new_line = True  # the first token after `{` starts a line wherever it sits
        i += 1
        while i < n:
            tok, raw = collected[i]
            i += 1
            if raw == "}" and depth == 1:
                break
            if raw == "{":
                depth += 1
            elif raw == "}":
                depth -= 1
            if new_line or not _same_line(prev, tok):
                directive.block.append([tok.text])
                directive.block_line_numbers.append(tok.line)
                new_line = False
            else:
                directive.block[-1].append(tok.text)
            prev = tok
        if i < n:
            tok = collected[i][0]
            raise _token_err(tok, f"Unexpected token '{tok.text}' after the block of '{name}'")
        return directive

    # -- import ------------------------------------------------------------------------------------------

    def _do_import(self) -> None:
        """Replace `import PATTERN` by the snippet's or files' tokens; the cursor stays before them."""
        if not self._next_arg():
            raise self._err(f"Wrong argument count or unexpected line ending after '{self._val()}'")
        arg_tok = self._done[-1]
        pattern = self._env_of(arg_tok.text)
        if not pattern:
            raise self._err("Import requires a non-empty filepath")
        if self._next_arg():
            raise self._err("Import takes only one argument (glob pattern or file)")
        if pattern in self._snippets:
            if self._snippet_expansions >= MAX_SNIPPET_EXPANSIONS:
                raise self._err(f"maximum snippet import depth ({MAX_SNIPPET_EXPANSIONS}) exceeded")
            self._snippet_expansions += 1
            imported = self._snippets[pattern]
        else:
            if self._file_expansions >= MAX_FILE_EXPANSIONS:
                raise self._err(f"maximum file import depth ({MAX_FILE_EXPANSIONS}) exceeded")
            self._file_expansions += 1
            imported = self._import_files(pattern, arg_tok)
        del self._done[-2:]  # splice out `import` and its argument
        self._rest.extend(reversed(imported))

    def _import_files(self, pattern: str, arg_tok: Token) -> list[Token]:
        importing = os.path.abspath(arg_tok.file or self._filename)
        if os.path.isabs(pattern):
            glob_pattern = pattern
        else:
            glob_pattern = os.path.normpath(os.path.join(os.path.dirname(importing), pattern))
        if glob_pattern.count("*") > 1 or glob_pattern.count("?") > 1 or ("[" in glob_pattern and "]" in glob_pattern):
            raise self._err(f"Glob pattern may only contain one wildcard (*), but has others: {glob_pattern}")
        matches = self._glob_cache.get(glob_pattern)
        if matches is None:
            try:
                matches = self._glob_cache[glob_pattern] = _glob(glob_pattern)
            except _BadPatternError:
                raise self._err(f"Failed to use import pattern {pattern}: syntax error in pattern") from None
        if not matches:
            if any(c in glob_pattern for c in "*?[]"):
                _log.warning("No files matching import glob pattern: %s", pattern)
            else:
                raise self._err(f"File to import not found: {pattern}")
        imported: list[Token] = []
        for match in matches:
            imported.extend(self._single_import(match, importing))
        return imported

    def _single_import(self, match: str, importing: str) -> list[Token]:
        path = os.path.abspath(match)
        if path == importing:
            # Caddy would expand this until the import cap; the outcome is the same error, only slower.
            raise self._err(f"Could not import {match}: a file cannot import itself")
        cached = self._file_cache.get(path)
        if cached is not None:
            return cached
        try:
            if os.path.isdir(path):
                raise self._err(f"Could not import {match}: is a directory")
            with open(path, "rb") as f:
                data = f.read()
        except (OSError, ValueError) as e:
            raise self._err(f"Could not import {match}: {e}") from None
        # Tokens carry the absolute path so errors name the imported file and its imports resolve from there.
        tokens = lex(data.decode("utf-8", errors="replace"), path)
        self._file_cache[path] = tokens
        return tokens


def _same_line(prev: Token, tok: Token) -> bool:
    return prev.file == tok.file and prev.line + _breaks(prev) == tok.line


def _token_err(tok: Token, message: str) -> SetupError:
    return SetupError(f"{tok.file}:{tok.line} - Error during parsing: {message}")


# -- Go's filepath.Glob, so hidden files, `\` escapes and sorting behave as in CoreDNS ----------------------


def _translate(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            if i == n:
                raise _BadPatternError
            out.append(re.escape(pattern[i]))
            i += 1
        elif ch == "[":
            raise _BadPatternError  # with both `[` and `]` rejected earlier, a class can never close
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _has_meta(path: str) -> bool:
    return any(c in path for c in "*?[\\")


def _glob(pattern: str) -> list[str]:
    _translate(pattern)  # validates the whole pattern first, as Go does
    if not _has_meta(pattern):
        try:
            return [pattern] if os.path.lexists(pattern) else []
        except ValueError:
            return []
    head, tail = os.path.split(pattern)
    head = head or "."
    if not _has_meta(head):
        return _glob_dir(head, tail)
    if head == pattern:
        raise _BadPatternError
    matches: list[str] = []
    for d in _glob(head):
        matches.extend(_glob_dir(d, tail))
    return matches


def _glob_dir(directory: str, pattern: str) -> list[str]:
    regex = _translate(pattern)
    try:
        if not os.path.isdir(directory):
            return []
        names = sorted(os.listdir(directory))
    except (OSError, ValueError):
        return []
    return [os.path.normpath(os.path.join(directory, n)) for n in names if regex.fullmatch(n)]
