"""A small, safe query language for catalog objects.

Grammar (case-insensitive keywords)::

    expr    := term (OR term)*
    term    := factor (AND factor)*
    factor  := NOT factor | '(' expr ')' | column OP value
    OP      := = | != | <> | < | <= | > | >=
    value   := number | 'quoted string' | "quoted string" | bare word | true | false

``class = mitochondrion AND volume_nm3 > 1e7 AND NOT touches_border = true``.
Columns come from a whitelist (:data:`~emseg.catalog._schema.QUERY_COLUMNS`);
the SQL text is built only from whitelisted column expressions, operators
and placeholders: every value is a bound parameter, never part of the SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from emseg.catalog._schema import QUERY_COLUMNS
from emseg.errors import EmsegValueError

OPERATORS = ("=", "!=", "<>", "<=", ">=", "<", ">")

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])
  | (?P<str>'(?:[^']|'')*'|"(?:[^"]|"")*")
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<paren>[()])
  | (?P<word>[A-Za-z_][A-Za-z_0-9.\-]*)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Compare:
    """``column op value``."""

    column: str
    op: str
    value: float | str | bool


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class BoolOp:
    """``AND`` / ``OR`` of two or more operands."""

    op: str
    operands: tuple[Node, ...]


Node = Compare | Not | BoolOp


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise EmsegValueError(
                f"query: cannot read {text[pos : pos + 20]!r} at position {pos} of {text!r}; "
                "write comparisons like volume_nm3 > 1e7 joined by AND / OR / NOT."
            )
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise EmsegValueError(f"query: {self.text!r} ends too early.")
        self.i += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok and tok[0] == "word" and tok[1].upper() == word:
            self.i += 1
            return True
        return False

    def expr(self) -> Node:
        items = [self.term()]
        while self.keyword("OR"):
            items.append(self.term())
        return items[0] if len(items) == 1 else BoolOp("OR", tuple(items))

    def term(self) -> Node:
        items = [self.factor()]
        while self.keyword("AND"):
            items.append(self.factor())
        return items[0] if len(items) == 1 else BoolOp("AND", tuple(items))

    def factor(self) -> Node:
        if self.keyword("NOT"):
            return Not(self.factor())
        tok = self.take()
        if tok == ("paren", "("):
            node = self.expr()
            if self.take() != ("paren", ")"):
                raise EmsegValueError(f"query: missing ')' in {self.text!r}.")
            return node
        if tok[0] != "word":
            raise EmsegValueError(
                f"query: expected a column name, got {tok[1]!r} in {self.text!r}."
            )
        column = tok[1].lower()
        if column not in QUERY_COLUMNS:
            raise EmsegValueError(
                f"query: unknown column {tok[1]!r}; valid columns: {', '.join(sorted(QUERY_COLUMNS))}."
            )
        op_tok = self.take()
        if op_tok[0] != "op":
            raise EmsegValueError(
                f"query: expected one of {' '.join(OPERATORS)} after {tok[1]!r}; got {op_tok[1]!r}."
            )
        return Compare(column, op_tok[1], self.value(column))

    def value(self, column: str) -> float | str | bool:
        kind, text = self.take()
        ctype = QUERY_COLUMNS[column]
        if kind == "num":
            if ctype == "text":
                return text
            return float(text)
        if kind == "str" and ctype == "text":
            q = text[0]
            return text[1:-1].replace(q + q, q)
        if kind == "word":
            if text.lower() in ("true", "false"):
                return text.lower() == "true"
            if ctype == "text":
                return text
        raise EmsegValueError(
            f"query: {column} needs a {'number' if ctype == 'num' else 'value'}; got {text!r}."
        )


def parse_query(text: str) -> Node | None:
    """Parse `text` into an AST (``None`` for an empty query: every object).

    Raises
    ------
    EmsegValueError
        For unknown columns, operators or malformed text (the message says where).
    """
    if not text or not text.strip():
        return None
    p = _Parser(text)
    node = p.expr()
    if p.peek() is not None:
        raise EmsegValueError(
            f"query: unexpected {p.peek()[1]!r} in {text!r}; join conditions with AND / OR."  # type: ignore[index]
        )
    return node


#: SQL expression of each query column (objects aliased ``o``, datasets ``d``).
def column_sql(column: str) -> str:
    if column == "dataset":
        return "d.name"
    return f"o.{column}"


def to_sql(node: Node | None, placeholder: str) -> tuple[str, list[object]]:
    """Compile an AST into a WHERE fragment and its bound parameters."""
    params: list[object] = []

    def emit(n: Node) -> str:
        if isinstance(n, Compare):
            op = "!=" if n.op == "<>" else n.op
            if op not in OPERATORS:  # defensive: the parser only makes these
                raise EmsegValueError(f"query: bad operator {n.op!r}.")
            value: object = n.value
            if QUERY_COLUMNS[n.column] == "bool" or isinstance(value, bool):
                value = int(bool(value)) if not isinstance(value, str) else value
            params.append(value)
            return f"{column_sql(n.column)} {op} {placeholder}"
        if isinstance(n, Not):
            return f"(NOT {emit(n.operand)})"
        return "(" + f" {n.op} ".join(emit(o) for o in n.operands) + ")"

    if node is None:
        return "1=1", params
    return emit(node), params


def check_sort(column: str | None) -> str | None:
    """Validate a sort column against the whitelist; return its SQL expression."""
    if column is None:
        return None
    if column.lower() not in QUERY_COLUMNS:
        raise EmsegValueError(
            f"`sort` must be a column name; got {column!r}. Valid: {', '.join(sorted(QUERY_COLUMNS))}."
        )
    return column_sql(column.lower())
