"""Finds where in the user's code a cosine call was made, and what its arguments were called.

The interpreter knows the exact source span of the instruction a frame is executing
(``co_positions``, Python 3.11+). We parse the file once, find the call expression with that
span, and read its first two arguments back as source text, so ``F.cosine_similarity(
vector1_tensor, vector2_tensor)`` names ``vector1_tensor`` and ``vector2_tensor``, even across
lines, with keywords, through an alias, or through a module call (``self.cos(z, self.memory)``).
Everything is cached per code object and instruction: the hot path is one dict look-up.
"""

from __future__ import annotations

import ast
import linecache
import os
import sys
import types
from dataclasses import dataclass

CONTEXT_LINES = 3


@dataclass(frozen=True)
class SiteInfo:
    path: str
    line: int
    function: str
    call_start: int
    call_end: int
    exprs: tuple[str | None, ...]
    """Source text of each positional argument; keywords are looked up by name below."""
    keywords: tuple[tuple[str, str], ...]


_trees: dict[str, tuple[dict[tuple[int, int, int, int], ast.Call], list[str]] | None] = {}
"""Per file: its calls by their source span, and its lines as the parser numbers them."""
_sites: dict[tuple[str, types.CodeType, int], SiteInfo] = {}
"""Keyed by file too: code objects of identical functions in two files compare equal."""


def display_path(filename: str) -> str:
    """The file as the user would name it: relative to the working directory when inside it."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:
        return filename
    outside = relative == os.pardir or relative.startswith(os.pardir + os.sep)
    return filename if outside else relative


def _summed_product(node: ast.AST) -> list[ast.expr] | None:
    """The two factors of ``(a * b).sum(...)`` or ``torch.sum(a * b, ...)`` (row-wise cosines
    of normalised rows, as BYOL's loss computes them)."""
    if not isinstance(node, ast.Call) or getattr(node.func, "attr", getattr(node.func, "id", None)) != "sum":
        return None
    product = node.func.value if isinstance(node.func, ast.Attribute) and not node.args[:1] else None
    if product is None or not (isinstance(product, ast.BinOp) and isinstance(product.op, ast.Mult)):
        product = node.args[0] if node.args else None
    if isinstance(product, ast.BinOp) and isinstance(product.op, ast.Mult):
        return [product.left, product.right]
    return None


def _as_product(node: ast.AST) -> ast.Call | None:
    """A matrix product read as a call of its two operands (a similarity matrix's sides):
    ``a @ b`` and ``a.mm(b)`` / ``a.matmul(b)``, whose first operand is not an argument,
    ``einsum(equation, a, b)``, whose first argument is not an operand, and a summed product
    ``(a * b).sum(-1)``."""
    if isinstance(node, ast.BinOp):
        operands = [node.left, node.right]
    elif (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("mm", "matmul")
        and len(node.args) == 1 and not node.keywords
    ):
        operands = [node.func.value, node.args[0]]
    elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "einsum" and not node.keywords:
        # (The equation first; the operands after it, or in one list: MoCo's ``einsum(eq, [q, k])``.)
        listed = len(node.args) == 2 and isinstance(node.args[1], (ast.List, ast.Tuple))
        operands = list(node.args[1].elts) if listed else node.args[1:]  # type: ignore[attr-defined]
        if len(operands) != 2:
            return None
    elif _summed_product(node) is not None:
        operands = _summed_product(node)  # type: ignore[assignment]
    else:
        return None
    call = ast.Call(func=ast.Name("matmul"), args=operands, keywords=[])
    return ast.copy_location(call, node)


def _calls_in(filename: str) -> tuple[dict[tuple[int, int, int, int], ast.Call], list[str]] | None:
    if filename in _trees:
        return _trees[filename]
    parsed = None
    text = "".join(linecache.getlines(filename))
    if text:
        try:
            tree = ast.parse(text, filename)
        except (SyntaxError, ValueError, RecursionError):
            tree = None
        if tree is not None:
            calls = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and node.end_lineno is not None:
                    key = (node.lineno, node.end_lineno, node.col_offset, node.end_col_offset or 0)
                    calls[key] = _as_product(node) or node
                elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult) and node.end_lineno is not None:
                    key = (node.lineno, node.end_lineno, node.col_offset, node.end_col_offset or 0)
                    calls[key] = _as_product(node)  # type: ignore[assignment]
            # The parser ends a line at \n, \r\n or \r (not at a form feed, as splitlines does).
            parsed = calls, text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    _trees[filename] = parsed
    return parsed


def _segment(lines: list[str], node: ast.AST) -> str | None:
    """The expression as the user wrote it (whitespace folded), else as ast prints it."""
    text = _source_text(lines, node)
    if text:
        return " ".join(text.split())
    try:
        return ast.unparse(node)
    except Exception:  # noqa: BLE001 - a name we cannot print is just unknown
        return None


def _source_text(lines: list[str], node: ast.AST) -> str | None:
    """What ``ast.get_source_segment`` reads for ``node`` (its lines joined by newlines), from
    the file's ``lines`` as the parser numbers them, without their ends: that function splits
    the whole source again, in Python, at every call. Column offsets count UTF-8 bytes."""
    first, last = getattr(node, "lineno", None), getattr(node, "end_lineno", None)
    start, end = getattr(node, "col_offset", None), getattr(node, "end_col_offset", None)
    if first is None or last is None or start is None or end is None or not 1 <= first <= last <= len(lines):
        return None
    if first == last:
        return lines[first - 1].encode()[start:end].decode()
    head, tail = lines[first - 1].encode()[start:].decode(), lines[last - 1].encode()[:end].decode()
    return "\n".join([head, *lines[first : last - 1], tail])


def site_of(frame: types.FrameType) -> SiteInfo:
    code = frame.f_code
    key = (code.co_filename, code, frame.f_lasti)
    site = _sites.get(key)
    if site is None:
        site = _sites[key] = _build_site(frame)
    return site


def _build_site(frame: types.FrameType) -> SiteInfo:
    code = frame.f_code
    filename = code.co_filename
    line = frame.f_lineno or code.co_firstlineno
    call_start = call_end = line
    exprs: tuple[str | None, ...] = ()
    keywords: tuple[tuple[str, str], ...] = ()
    position = None
    if sys.version_info >= (3, 11):
        positions = list(code.co_positions())
        index = frame.f_lasti // 2
        if 0 <= index < len(positions):
            position = positions[index]
    parsed = _calls_in(filename)
    if parsed is not None and position is not None and None not in position:
        calls, lines = parsed
        start, end, col, end_col = position  # type: ignore[misc]
        node = calls.get((start, end, col, end_col))
        if node is not None:
            call_start, call_end = node.lineno, node.end_lineno or node.lineno
            exprs = tuple(_segment(lines, arg) for arg in node.args)
            keywords = tuple(
                (kw.arg, expr) for kw in node.keywords if kw.arg and (expr := _segment(lines, kw.value))
            )
    return SiteInfo(
        path=display_path(filename),
        line=line,
        function=code.co_qualname if hasattr(code, "co_qualname") else code.co_name,
        call_start=call_start,
        call_end=call_end,
        exprs=exprs,
        keywords=keywords,
    )


def argument_names(site: SiteInfo, names: tuple[str, str]) -> tuple[str, str]:
    """Source expressions of the two compared tensors, ``arg0``/``arg1`` when unknown."""
    keywords = dict(site.keywords)
    result = []
    for index, name in enumerate(names):
        expr = site.exprs[index] if index < len(site.exprs) else keywords.get(name)
        result.append(expr if expr else f"arg{index}")
    return result[0], result[1]


def argument_given(site: SiteInfo, argument: tuple[int | None, str | None]) -> str | None:
    """The source text of one argument of the call: by its ``(position, parameter name)`` as
    the called function numbers and names it; ``None`` where the call does not show it (an
    argument unpacked from ``*args`` or ``**kwargs``)."""
    position, name = argument
    exprs = site.exprs
    if position is not None and position < len(exprs) and not any(e is None or e.startswith("*") for e in exprs[: position + 1]):
        return exprs[position]
    keywords = dict(site.keywords)
    return keywords.get(name) if name is not None else None


def source_lines(filename: str, site: SiteInfo) -> tuple[int, list[str]]:
    """The call's lines with context, and the number of the first one."""
    lines = linecache.getlines(filename)
    if not lines:
        return site.line, []
    first = max(1, site.call_start - CONTEXT_LINES)
    last = min(len(lines), site.call_end + CONTEXT_LINES)
    return first, [text.rstrip("\n") for text in lines[first - 1 : last]]
