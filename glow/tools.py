"""Tools an agent may call, referenced from a test's YAML by import path (`glow.tools:calculator`).

A tool is a plain Python function with typed parameters; the first line of its docstring is the
description the model sees. Tools raise `ValueError` with a message meant for the model when the
input is refused, so the agent loop can hand the message back as the tool result.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable

_MAX_EXPRESSION_CHARS = 500
_MAX_EXPONENT = 100
_MAX_INT_BITS = 4096  # ~1,200 decimal digits: far beyond any sane answer, cheap to compute

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression (numbers, + - * / // % **, parentheses) exactly.

    Args:
        expression: e.g. "1234 * 5678" or "(2 + 3) ** 4 / 7".

    Returns the result as text: integers exactly, other numbers with up to 12 significant digits.
    Raises ValueError, naming what was refused, for anything that is not plain arithmetic (names,
    calls, attributes...), for exponents above 100, huge results, and division by zero.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError("calculator: give an arithmetic expression such as '1234 * 5678'")
    if len(expression) > _MAX_EXPRESSION_CHARS:
        raise ValueError(f"calculator: expression longer than {_MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"calculator: not a valid expression: {expression!r}") from exc
    return _format(_evaluate(tree.body))


def _evaluate(node: ast.AST) -> int | float:
    """Walk the syntax tree, allowing only numbers and the arithmetic operators above."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ValueError(f"calculator: only numbers are allowed, not {node.value!r}")
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise ValueError(f"calculator: exponent {right} is too large (max {_MAX_EXPONENT})")
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError as exc:
            raise ValueError("calculator: division by zero") from exc
        except OverflowError as exc:
            raise ValueError("calculator: result is too large") from exc
        if isinstance(result, complex):
            raise ValueError("calculator: result is not a real number")
        if isinstance(result, int) and result.bit_length() > _MAX_INT_BITS:
            raise ValueError("calculator: result is too large")
        return result
    raise ValueError(
        f"calculator: {type(node).__name__} is not allowed; use numbers, + - * / // % ** and "
        "parentheses only"
    )


def _format(value: int | float) -> str:
    """Integers exactly; integral floats without '.0'; others with 12 significant digits."""
    if isinstance(value, int):
        return str(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("calculator: result is not a finite number")
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".12g")
