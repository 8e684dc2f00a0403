"""The condition language of ``failWhen`` and ``passWhen``: parsed, never ``eval``ed.

Called by ``postdeploy.decisions.checks`` for every run, and by spec resolution
(``postdeploy.decisions.templates``) to reject a bad expression before it runs.

Grammar (lowest precedence first)::

    expr    := or
    or      := and (("or" | "||") and)*
    and     := not (("and" | "&&") not)*
    not     := ("not" | "!") not | compare
    compare := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/") unary)*
    unary   := "-" unary | atom
    atom    := NUMBER ["%"] | "true" | "false" | NAME | NAME "(" expr ("," expr)* ")"
             | "(" expr ")"

Names are ``value``, ``baseline``, ``tolerance`` and any numeric detail a provider
reports (``pValue``, ``lift``, ``hoursToLimit``...). Functions: ``abs``, ``min``,
``max``. ``5%`` is ``0.05``. A condition that refers to a name with no value
(``baseline`` when none could be measured) is *undecidable*, which makes the run
Inconclusive, never Failed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping

from postdeploy.kit import exceptions

__all__ = [
    "Expression",
    "parse",
]


_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)"
    r"|(?P<op><=|>=|==|!=|&&|\|\||[-+*/()<>!,%]))"
)
_FUNCTIONS: dict[str, Callable[..., float]] = {"abs": abs, "min": min, "max": max}
_KEYWORDS = {"and", "or", "not", "true", "false"}
_MAX_LENGTH = 1024
# Bounds that keep parsing and evaluating (both recursive) far from Python's
# recursion limit, whatever the text: 1024 characters hold 500 operators otherwise.
_MAX_TOKENS = 256
_MAX_DEPTH = 32

Value = float | bool


@dataclasses.dataclass(frozen=True)
class _Token:
    kind: str  # number, name, op, end
    text: str
    column: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            column = position + len(text[position:]) - len(text[position:].lstrip()) + 1
            raise exceptions.ConditionError(f"unexpected character {text[column - 1]!r} at column {column}")
        kind = match.lastgroup or "op"
        tokens.append(_Token(kind, match.group(kind), match.start(kind) + 1))
        position = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


# An AST node is a small closure tree: each node evaluates itself against a mapping.
Node = Callable[[Mapping[str, float | None]], Value]
_BOOL, _NUM = "a comparison", "a number"


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0
        self.names: set[str] = set()
        self.kinds: dict[int, str] = {}  # id(node) -> _BOOL or _NUM, checked while parsing
        self.depth = 0
        if len(self.tokens) > _MAX_TOKENS + 1:
            raise exceptions.ConditionError(
                f"a condition has at most {_MAX_TOKENS} tokens (numbers, names, operators)"
            )

    def enter(self, token: _Token) -> None:
        """One level deeper (not, unary minus, parentheses, a call); bounded."""
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise exceptions.ConditionError(
                f"nested more than {_MAX_DEPTH} levels deep at column {token.column}"
            )

    def typed(self, node: Node, kind: str) -> Node:
        self.kinds[id(node)] = kind
        return node

    def need(self, node: Node, kind: str, where: _Token) -> None:
        if self.kinds[id(node)] != kind:
            raise exceptions.ConditionError(
                f"{where.text!r} at column {where.column} needs {kind} on each side, "
                f"not {self.kinds[id(node)]}"
            )

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def accept(self, *texts: str) -> _Token | None:
        token = self.peek()
        if token.kind in ("op", "name") and token.text in texts:
            return self.take()
        return None

    def expect(self, text: str) -> None:
        token = self.take()
        if token.text != text:
            found = repr(token.text) if token.kind != "end" else "the end"
            raise exceptions.ConditionError(f"expected {text!r} at column {token.column}, found {found}")

    def parse(self) -> Node:
        node = self.or_()
        token = self.peek()
        if token.kind != "end":
            raise exceptions.ConditionError(f"unexpected {token.text!r} at column {token.column}")
        return node

    def or_(self) -> Node:
        node = self.and_()
        while token := self.accept("or", "||"):
            left, right = node, self.and_()
            self.need(left, _BOOL, token)
            self.need(right, _BOOL, token)
            node = self.typed(_logical(any, left, right), _BOOL)
        return node

    def and_(self) -> Node:
        node = self.not_()
        while token := self.accept("and", "&&"):
            left, right = node, self.not_()
            self.need(left, _BOOL, token)
            self.need(right, _BOOL, token)
            node = self.typed(_logical(all, left, right), _BOOL)
        return node

    def not_(self) -> Node:
        if token := self.accept("not", "!"):
            self.enter(token)
            inner = self.not_()
            self.depth -= 1
            self.need(inner, _BOOL, token)
            return self.typed(lambda env: not _truth(inner(env)), _BOOL)
        return self.compare()

    def compare(self) -> Node:
        left = self.sum()
        token = self.accept("<", "<=", ">", ">=", "==", "!=")
        if token is None:
            return left
        right = self.sum()
        self.need(left, _NUM, token)
        self.need(right, _NUM, token)
        op = _COMPARISONS[token.text]
        return self.typed(lambda env: op(_number(left(env)), _number(right(env))), _BOOL)

    def sum(self) -> Node:
        node = self.product()
        while token := self.accept("+", "-"):
            left, right = node, self.product()
            self.need(left, _NUM, token)
            self.need(right, _NUM, token)
            node = self.typed(_arithmetic(token.text, left, right), _NUM)
        return node

    def product(self) -> Node:
        node = self.unary()
        while token := self.accept("*", "/"):
            left, right = node, self.unary()
            self.need(left, _NUM, token)
            self.need(right, _NUM, token)
            node = self.typed(_arithmetic(token.text, left, right), _NUM)
        return node

    def unary(self) -> Node:
        if token := self.accept("-"):
            self.enter(token)
            inner = self.unary()
            self.depth -= 1
            self.need(inner, _NUM, token)
            return self.typed(lambda env: -_number(inner(env)), _NUM)
        return self.atom()

    def atom(self) -> Node:
        token = self.take()
        if token.kind == "number":
            number = float(token.text)
            if self.accept("%"):
                number /= 100.0
            return self.typed(lambda env: number, _NUM)
        if token.kind == "name":
            if token.text in ("true", "false"):
                flag = token.text == "true"
                return self.typed(lambda env: flag, _BOOL)
            if token.text in _KEYWORDS:
                raise exceptions.ConditionError(f"unexpected {token.text!r} at column {token.column}")
            if self.peek().text == "(":
                return self.call(token)
            name = token.text
            self.names.add(name)
            return self.typed(lambda env: _lookup(env, name), _NUM)
        if token.text == "(":
            self.enter(token)
            node = self.or_()
            self.expect(")")
            self.depth -= 1
            return node
        found = repr(token.text) if token.kind != "end" else "the end"
        raise exceptions.ConditionError(f"expected a value at column {token.column}, found {found}")

    def call(self, name: _Token) -> Node:
        function = _FUNCTIONS.get(name.text)
        if function is None:
            known = ", ".join(sorted(_FUNCTIONS))
            raise exceptions.ConditionError(
                f"unknown function {name.text!r} at column {name.column} (known: {known})"
            )
        self.expect("(")
        self.enter(name)
        arguments = [self.or_()]
        while self.accept(","):
            arguments.append(self.or_())
        self.expect(")")
        self.depth -= 1
        for argument in arguments:
            self.need(argument, _NUM, name)
        if name.text == "abs" and len(arguments) != 1:
            raise exceptions.ConditionError(f"abs takes one argument (column {name.column})")
        return self.typed(
            lambda env: float(function(*(_number(a(env)) for a in arguments))), _NUM
        )


_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12),
    "!=": lambda a, b: not math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12),
}


def _logical(combine: Callable[[Iterable[bool]], bool], left: Node, right: Node) -> Node:
    def node(env: Mapping[str, float | None]) -> Value:
        # A generator keeps short-circuiting: the right side runs only when needed.
        return combine(_truth(side(env)) for side in (left, right))

    return node


_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: _divide(a, b),
}


def _arithmetic(op: str, left: Node, right: Node) -> Node:
    apply = _ARITHMETIC[op]

    def node(env: Mapping[str, float | None]) -> Value:
        return apply(_number(left(env)), _number(right(env)))

    return node


def _truth(value: Value) -> bool:
    if not isinstance(value, bool):
        raise exceptions.ConditionError("'and', 'or' and 'not' need comparisons, not numbers")
    return value


def _number(value: Value) -> float:
    if isinstance(value, bool):
        raise exceptions.ConditionError("arithmetic and comparison need numbers, not true/false")
    return value


def _divide(a: float, b: float) -> float:
    if b == 0:
        raise exceptions.Undecidable("division by zero")
    return a / b


def _lookup(env: Mapping[str, float | None], name: str) -> float:
    value = env.get(name)
    if value is None:
        raise exceptions.Undecidable(f"{name} has no value")
    if isinstance(value, float) and math.isnan(value):
        raise exceptions.Undecidable(f"{name} is NaN")
    return float(value)


@dataclasses.dataclass(frozen=True)
class Expression:
    text: str
    names: frozenset[str]
    _root: Node = dataclasses.field(repr=False, compare=False)

    def evaluate(self, env: Mapping[str, float | None]) -> bool:
        """True/False; raises Undecidable when a needed name has no value."""
        result = self._root(env)
        if not isinstance(result, bool):
            raise exceptions.ConditionError(f"{self.text!r} is a number, not a condition: compare it")
        return result


@functools.lru_cache(maxsize=4096)
def parse(text: str) -> Expression:
    """Parse a condition; raise ConditionError with the column of the problem.

    Cached: every tick of every review resolves its spec again, and expressions are
    immutable, so each distinct text is parsed once."""
    if len(text) > _MAX_LENGTH:
        raise exceptions.ConditionError(f"a condition is at most {_MAX_LENGTH} characters")
    if not text.strip():
        raise exceptions.ConditionError("empty condition")
    parser = _Parser(text)
    root = parser.parse()
    if parser.kinds[id(root)] != _BOOL:
        raise exceptions.ConditionError(f"{text!r} is a number, not a condition: compare it, e.g. value > 1")
    return Expression(text, frozenset(parser.names), root)
