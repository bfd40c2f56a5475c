"""Label and field selectors: kube's string syntax (list/watch query parameters) and metav1.LabelSelector.

The label parser follows `k8s.io/apimachinery/pkg/labels` token by token, so the same inputs are accepted
and rejected with the same messages. Parsed selectors are immutable and cached by text, since clients repeat
the same few selectors on every list and watch.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from submariner.broker.apiserver.errors import ApiError
from submariner.broker.apiserver.validation import (
    is_label_key,
    is_label_value,
    validate_label_key,
    validate_label_value,
)

__all__ = ["FieldRequirement", "FieldSelector", "LabelSelector", "Requirement"]

# Operators, spelled as kube's `selection.Operator` values.
EXISTS = "exists"
DOES_NOT_EXIST = "!"
EQUALS = "="
DOUBLE_EQUALS = "=="
NOT_EQUALS = "!="
IN = "in"
NOT_IN = "notin"
GREATER_THAN = "gt"
LESS_THAN = "lt"

_EMPTY_LABELS: Mapping[str, str] = {}


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class Requirement:
    """One `key op values` term; `values` is sorted, as kube keeps it."""

    key: str
    operator: str
    values: tuple[str, ...] = ()
    _set: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    _int: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_set", frozenset(self.values))
        if self.operator in (GREATER_THAN, LESS_THAN):
            object.__setattr__(self, "_int", int(self.values[0]))

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        value = labels.get(self.key)
        if op in (EQUALS, DOUBLE_EQUALS, IN):
            return value is not None and value in self._set
        if op in (NOT_EQUALS, NOT_IN):
            return value is None or value not in self._set
        if op == EXISTS:
            return self.key in labels
        if op == DOES_NOT_EXIST:
            return self.key not in labels
        if value is None:
            return False
        try:
            number = int(value, 10)
        except ValueError:
            return False
        return number > self._int if op == GREATER_THAN else number < self._int

    def __str__(self) -> str:
        op = self.operator
        if op == EXISTS:
            return self.key
        if op == DOES_NOT_EXIST:
            return "!" + self.key
        if op in (IN, NOT_IN):
            return f"{self.key} {op} ({','.join(self.values)})"
        symbol = {GREATER_THAN: ">", LESS_THAN: "<"}.get(op, op)
        return f"{self.key}{symbol}{self.values[0]}"


def _field_invalid(path: str, value: str, msgs: list[str]) -> str:
    return f"{path}: Invalid value: {_quote(value)}: {'; '.join(msgs)}"


def _new_requirement(key: str, op: str, values: Iterable[str]) -> Requirement:
    """kube's NewRequirement: validate, sort values, and report every problem at once."""
    vals = sorted(set(values))
    errs: list[str] = []
    if not is_label_key(key):
        errs.append(_field_invalid("key", key, validate_label_key(key)))
    if op in (IN, NOT_IN):
        if not vals:
            errs.append("values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty")
    elif op in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS):
        if len(vals) != 1:
            errs.append("values: Invalid value: []: exact-match compatibility requires one single value")
    elif op in (EXISTS, DOES_NOT_EXIST):
        if vals:
            errs.append(
                f"values: Invalid value: {vals}: values set must be empty for exists and does not exist"
            )
    elif op in (GREATER_THAN, LESS_THAN):
        if len(vals) != 1:
            errs.append("values: Invalid value: []: for 'Gt', 'Lt' operators, exactly one value is required")
        for i, v in enumerate(vals):
            try:
                int(v, 10)
            except ValueError:
                msg = "for 'Gt', 'Lt' operators, the value must be an integer"
                errs.append(_field_invalid(f"values[{i}]", v, [msg]))
    else:
        errs.append(f"operator: Unsupported value: {_quote(op)}")
    for i, v in enumerate(vals):
        if not is_label_value(v):
            errs.append(_field_invalid(f"values[{i}][{key}]", v, validate_label_value(v)))
    if errs:
        raise _Invalid(errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]")
    return Requirement(key, op, tuple(vals))


class _Invalid(Exception):
    """A requirement rejected by validation (turned into a 400 by the callers)."""


# --- the label-selector string parser ------------------------------------------------------------------

(
    _T_ERROR,
    _T_EOS,
    _T_CLOSE,
    _T_COMMA,
    _T_NOT,
    _T_DEQ,
    _T_EQ,
    _T_GT,
    _T_IDENT,
    _T_IN,
    _T_LT,
    _T_NEQ,
    _T_NOTIN,
    _T_OPEN,
) = range(14)

_SYMBOLS = {
    ")": _T_CLOSE,
    ",": _T_COMMA,
    "!": _T_NOT,
    "==": _T_DEQ,
    "=": _T_EQ,
    ">": _T_GT,
    "<": _T_LT,
    "!=": _T_NEQ,
    "(": _T_OPEN,
}
_KEYWORDS = {"in": _T_IN, "notin": _T_NOTIN}
# Longest special-symbol match first, exactly like kube's lexer; identifiers run to whitespace or a symbol.
_LEX_RE = re.compile(r"[ \t\r\n]*(?:(!=|==|[=!(),<>])|([^ \t\r\n=!(),<>]+)|\Z)")
_BINARY_OPS = "in, notin, =, ==, !=, gt, lt"
_OPERATOR_TOKENS = {
    _T_IN: IN,
    _T_NOTIN: NOT_IN,
    _T_EQ: EQUALS,
    _T_DEQ: DOUBLE_EQUALS,
    _T_NEQ: NOT_EQUALS,
    _T_GT: GREATER_THAN,
    _T_LT: LESS_THAN,
}


def _lex(text: str) -> list[tuple[int, str]]:
    items: list[tuple[int, str]] = []
    pos = 0
    while True:
        m = _LEX_RE.match(text, pos)
        assert m is not None  # the pattern can always match (possibly empty, at end of string)
        symbol, ident = m.group(1), m.group(2)
        if symbol is not None:
            items.append((_SYMBOLS[symbol], symbol))
        elif ident is not None:
            items.append((_KEYWORDS.get(ident, _T_IDENT), ident))
        else:
            items.append((_T_EOS, ""))
            return items
        pos = m.end()


class _Parser:
    """kube's recursive-descent selector parser; "in"/"notin" are identifiers where values are expected."""

    __slots__ = ("items", "pos")

    def __init__(self, text: str) -> None:
        self.items = _lex(text)
        self.pos = 0

    def lookahead(self, values: bool = True) -> tuple[int, str]:
        tok, lit = self.items[self.pos]
        if values and tok in (_T_IN, _T_NOTIN):
            tok = _T_IDENT
        return tok, lit

    def consume(self, values: bool = True) -> tuple[int, str]:
        item = self.lookahead(values)
        if self.pos < len(self.items) - 1:
            self.pos += 1
        return item

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            tok, lit = self.lookahead()
            if tok in (_T_IDENT, _T_NOT):
                try:
                    requirements.append(self.requirement())
                except _Invalid as e:
                    raise ApiError(400, f"unable to parse requirement: {e}") from None
                tok, lit = self.consume()
                if tok == _T_EOS:
                    return requirements
                if tok == _T_COMMA:
                    tok2, lit2 = self.lookahead()
                    if tok2 not in (_T_IDENT, _T_NOT):
                        raise ApiError(400, f"found '{lit2}', expected: identifier after ','")
                else:
                    raise ApiError(400, f"found '{lit}', expected: ',' or 'end of string'")
            elif tok == _T_EOS:
                return requirements
            else:
                raise ApiError(400, f"found '{lit}', expected: !, identifier, or 'end of string'")

    def requirement(self) -> Requirement:
        op = ""
        tok, lit = self.consume()
        if tok == _T_NOT:
            op = DOES_NOT_EXIST
            tok, lit = self.consume()
        if tok != _T_IDENT:
            raise _Invalid(f"found '{lit}', expected: identifier")
        key = lit
        if not is_label_key(key):
            raise _Invalid(_field_invalid("<nil>", key, validate_label_key(key)))
        if self.lookahead()[0] in (_T_EOS, _T_COMMA) and op != DOES_NOT_EXIST:
            op = EXISTS
        if op in (EXISTS, DOES_NOT_EXIST):
            return _new_requirement(key, op, ())
        tok, lit = self.consume(values=False)
        op = _OPERATOR_TOKENS.get(tok, "")
        if not op:
            raise _Invalid(f"found '{lit}', expected: {_BINARY_OPS}")
        values = self.value_set() if op in (IN, NOT_IN) else self.exact_value()
        return _new_requirement(key, op, values)

    def value_set(self) -> set[str]:
        tok, lit = self.consume()
        if tok != _T_OPEN:
            raise _Invalid(f"found '{lit}' expected: '('")
        tok, lit = self.lookahead()
        if tok in (_T_IDENT, _T_COMMA):
            values = self.identifiers()
            tok, lit = self.consume()
            if tok != _T_CLOSE:
                raise _Invalid(f"found '{lit}', expected: ')'")
            return values
        if tok == _T_CLOSE:  # "()" means the one empty value, as in kube
            self.consume()
            return {""}
        raise _Invalid(f"found '{lit}', expected: ',', ')' or identifier")

    def identifiers(self) -> set[str]:
        values: set[str] = set()
        while True:
            tok, lit = self.consume()
            if tok == _T_IDENT:
                values.add(lit)
                tok2, lit2 = self.lookahead()
                if tok2 == _T_COMMA:
                    continue
                if tok2 == _T_CLOSE:
                    return values
                raise _Invalid(f"found '{lit2}', expected: ',' or ')'")
            if tok == _T_COMMA:  # empty values: "(,a)", "(a,)", "(a,,b)"
                if not values:
                    values.add("")
                tok2, _ = self.lookahead()
                if tok2 in (_T_CLOSE, _T_COMMA):
                    values.add("")
                if tok2 == _T_CLOSE:
                    return values
                continue
            raise _Invalid(f"found '{lit}', expected: ',', or identifier")

    def exact_value(self) -> tuple[str, ...]:
        tok, _ = self.lookahead()
        if tok in (_T_EOS, _T_COMMA):
            return ("",)
        tok, lit = self.consume()
        if tok == _T_IDENT:
            return (lit,)
        raise _Invalid(f"found '{lit}', expected: identifier")


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """An AND of label requirements, sorted by key; no requirements selects everything."""

    requirements: tuple[Requirement, ...] = ()

    @staticmethod
    def parse(text: str) -> LabelSelector:
        """Parse kube's string syntax (`a=b,c in (x,y),!d`); raise ApiError(400) on bad syntax."""
        return _parse_labels(text)

    @staticmethod
    def from_dict(sel: Mapping[str, Any] | None) -> LabelSelector:
        """Build from a metav1.LabelSelector; None and {} both select everything."""
        if sel is None:
            return _EVERYTHING
        if not isinstance(sel, Mapping):
            raise ApiError(400, "a label selector must be an object")
        match_labels = sel.get("matchLabels") or {}
        match_expressions = sel.get("matchExpressions") or []
        if not isinstance(match_labels, Mapping) or not isinstance(match_expressions, list):
            raise ApiError(400, "matchLabels must be an object and matchExpressions a list")
        reqs: list[Requirement] = []
        try:
            for k, v in match_labels.items():
                if not isinstance(k, str) or not isinstance(v, str):
                    raise _Invalid(f"matchLabels: Invalid value: {k!r}: keys and values must be strings")
                reqs.append(_new_requirement(k, EQUALS, (v,)))
            for expr in match_expressions:
                reqs.append(_expression(expr))
        except _Invalid as e:
            raise ApiError(400, f"invalid label selector: {e}") from None
        if not reqs:
            return _EVERYTHING
        reqs.sort(key=lambda r: r.key)
        return LabelSelector(tuple(reqs))

    @property
    def is_empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if labels is None:
            labels = _EMPTY_LABELS
        return all(r.matches(labels) for r in self.requirements)

    def requires_exact_match(self, key: str) -> str | None:
        """The one value `key` must have, if any: lets a store narrow a scan by an indexed label."""
        for r in self.requirements:
            if r.key == key:
                if r.operator in (EQUALS, DOUBLE_EQUALS, IN) and len(r.values) == 1:
                    return r.values[0]
                return None
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


_EVERYTHING = LabelSelector()
_EXPRESSION_OPS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


def _expression(expr: Any) -> Requirement:
    if not isinstance(expr, Mapping):
        raise _Invalid("matchExpressions: each expression must be an object")
    key = expr.get("key")
    operator = expr.get("operator")
    values = expr.get("values") or []
    if not isinstance(key, str):
        raise _Invalid("matchExpressions.key: Required value")
    op = _EXPRESSION_OPS.get(operator) if isinstance(operator, str) else None
    if op is None:
        raise _Invalid(f"{_quote(str(operator))} is not a valid label selector operator")
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise _Invalid("matchExpressions.values: Invalid value: values must be a list of strings")
    return _new_requirement(key, op, values)


@functools.lru_cache(maxsize=512)
def _parse_labels(text: str) -> LabelSelector:
    if not text or text.isspace():
        return _EVERYTHING
    reqs = _Parser(text).parse()
    reqs.sort(key=lambda r: r.key)
    return LabelSelector(tuple(reqs))


# --- field selectors -----------------------------------------------------------------------------------

_FIELD_KEY_RE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    """`path = value` or `path != value`; `path` is a dotted path into the object."""

    key: str
    value: str
    negate: bool = False
    _path: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_path", tuple(self.key.split(".")))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        current: Any = obj
        for part in self._path:
            if not isinstance(current, Mapping):
                current = None
                break
            current = current.get(part)
        return (_field_string(current) == self.value) != self.negate

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
        return f"{self.key}{'!=' if self.negate else '='}{escaped}"


def _field_string(value: Any) -> str | None:
    """Field selectors compare strings: a missing field is "", booleans are "true"/"false"."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None  # an object or list equals no selector value


@dataclass(frozen=True, slots=True)
class FieldSelector:
    """An AND of field requirements; no requirements selects everything."""

    requirements: tuple[FieldRequirement, ...] = ()

    @staticmethod
    def parse(text: str) -> FieldSelector:
        """Parse `k=v,k==v,k!=v` (values may escape `\\`, `,` and `=`); raise ApiError(400) on bad syntax."""
        return _parse_fields(text)

    @property
    def is_empty(self) -> bool:
        return not self.requirements

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all(r.matches(obj) for r in self.requirements)

    def requires_exact_match(self, key: str) -> str | None:
        """The value `key` must equal, if the selector pins it (e.g. metadata.name)."""
        for r in self.requirements:
            if r.key == key and not r.negate:
                return r.value
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


_NO_FIELDS = FieldSelector()


def _split_unescaped(text: str, sep: str) -> list[str]:
    """Split on `sep` where it is not backslash-escaped (escapes are kept for _unescape)."""
    if "\\" not in text:
        return text.split(sep)
    parts: list[str] = []
    start, escaped = 0, False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == sep:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _unescape(value: str) -> str:
    if "\\" not in value and "," not in value and "=" not in value:
        return value
    out: list[str] = []
    escaped = False
    for c in value:
        if escaped:
            if c not in "\\,=":
                raise ApiError(400, f"invalid field selector: invalid escape sequence: \\{c}")
            out.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c in ",=":
            raise ApiError(400, f"invalid field selector: unescaped character in value: {c}")
        else:
            out.append(c)
    if escaped:
        raise ApiError(400, "invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _split_term(term: str) -> tuple[str, str, str] | None:
    """kube's splitTerm: the leftmost operator wins, trying `!=`, then `==`, then `=` at each position."""
    for i in range(len(term)):
        if term.startswith("!=", i):
            return term[:i], "!=", term[i + 2 :]
        if term.startswith("==", i):
            return term[:i], "==", term[i + 2 :]
        if term[i] == "=":
            return term[:i], "=", term[i + 1 :]
    return None


@functools.lru_cache(maxsize=512)
def _parse_fields(text: str) -> FieldSelector:
    if not text or text.isspace():
        return _NO_FIELDS
    reqs: list[FieldRequirement] = []
    for part in sorted(_split_unescaped(text, ",")):
        if not part.strip():
            continue
        split = _split_term(part)
        if split is None:
            raise ApiError(400, f"invalid selector: '{text}'; can't understand '{part}'")
        lhs, op, rhs = split
        key = lhs.strip()
        if not key or _FIELD_KEY_RE.fullmatch(key) is None:
            raise ApiError(400, f"invalid selector: '{text}'; can't understand '{part}'")
        reqs.append(FieldRequirement(key, _unescape(rhs.strip()), negate=op == "!="))
    return FieldSelector(tuple(reqs))
