"""Rename the identifiers a Python snippet binds (variables, parameters, loop and comprehension targets), so a
code model learns that names are the programmer's choice, while the code stays runnable and behaves the same.

How it decides, and why:

- ``symtable`` (the compiler's own scope analysis) says, for every scope, whether a name is local, free,
  global, imported or declared ``global``/``nonlocal``. A name is renamed only when every use of it, in every
  scope, resolves to a binding inside the snippet that is not a class attribute; then renaming it everywhere
  (one new name for all its uses) is an alpha-renaming and cannot change what the code does. Writing our own
  scope resolver would copy Python's rules, and get the corners (comprehensions, class bodies) wrong.
- Left alone, because code outside the snippet may see them: builtins, imported names, ``global``/``nonlocal``
  names, def and class names (the snippet's interface), names bound in class bodies (attributes), dunders,
  ``self``/``cls``/``_`` (renaming them is legal but unidiomatic), parameters of decorated functions (frameworks
  such as Flask or pytest bind by parameter name), parameters passed by keyword to anything but a plain
  function of the snippet, every parameter when some call unpacks ``**kwargs``, names in ``match`` patterns,
  and names used inside f-strings: before Python 3.12 the positions of names in f-strings are unreliable, and
  leaving them alone everywhere keeps the output the same on every Python version (``f"{x=}"`` prints the
  name, too). A snippet that reads names dynamically (``eval``, ``exec``, ``locals()``, ...) is not renamed.
- The source text is edited at the positions ``ast`` gives, instead of printing the tree with ``ast.unparse``,
  so comments and formatting survive. The result is parsed again and must equal the original tree with the
  names replaced; anything else (a position we misread) leaves the snippet unchanged.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import random
import re
import symtable
import warnings
from collections.abc import Collection, MutableMapping
from dataclasses import dataclass, field

# Generic names a programmer might pick; a new name is one or two of these, never a word of the snippet.
NAME_WORDS = (
    "acc", "amount", "arg", "buf", "count", "cur", "data", "elem", "entry", "first", "flag", "head", "idx",
    "item", "key", "left", "line", "lst", "num", "obj", "out", "pair", "part", "pos", "prev", "rest", "res",
    "result", "right", "row", "seq", "size", "step", "tail", "temp", "tmp", "total", "val", "value", "var",
    "word", "xs",
)  # fmt: skip
# Calls that look names up by their spelling: renaming a variable would change what they find.
DYNAMIC_NAMES = frozenset({"eval", "exec", "locals", "globals", "vars", "dir", "__import__", "compile"})
KEEP = frozenset({"self", "cls", "_"})
_WORD = re.compile(r"\w+")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)?")
_PYTHON_TAGS = frozenset({"", "python", "py", "python3", "py3"})
# A fenced Markdown code block; its body is what gets renamed.
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<ticks>`{3,}|~{3,})[ \t]*(?P<lang>[\w+.#-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)(?P=ticks)[ \t]*$",
    re.M | re.S,
)
_INLINE_CODE = re.compile(r"(?<!`)`([A-Za-z_]\w*)`(?!`)")


@dataclass(frozen=True)
class Renamed:
    """A snippet after renaming: its code, the names changed (old -> new), or why nothing changed."""

    code: str
    renamed: dict[str, str] = field(default_factory=dict)
    skipped: str | None = None  # "not Python", "no renamable names", "reads names dynamically", ...


def rename_identifiers(
    source: str,
    rng: random.Random,
    *,
    names: MutableMapping[str, str] | None = None,
    taken: Collection[str] = (),
) -> Renamed:
    """``source`` with the names it binds renamed consistently (see the module docstring for which).

    ``names`` (old -> new) is reused and extended, so several snippets of one record (a question's code and
    its answer's) get the same new names; ``taken`` lists words a new name must not be (e.g. every word of
    the record), on top of every word of ``source``, keywords and builtins.
    """
    names = {} if names is None else names
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # `x is 1` is the snippet's business, not ours
            tree = ast.parse(source)
            compile(tree, "<snippet>", "exec", dont_inherit=True)  # parses but does not compile: top-level `return`
            table = symtable.symtable(source, "<snippet>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return Renamed(source, skipped="not Python")
    if any(isinstance(n, ast.Name) and n.id in DYNAMIC_NAMES for n in ast.walk(tree)):
        return Renamed(source, skipped="reads names dynamically (eval, exec, locals, ...)")
    words = set(_WORD.findall(source))
    # A name renamed in an earlier snippet keeps its new name, unless that name is already a word of this one.
    candidates = {n for n in _renamable(tree, table) if n not in names or names[n] not in words}
    if not candidates:
        return Renamed(source, skipped="no renamable names")
    avoid = words | set(taken) | set(names.values())
    for old in sorted(candidates):
        if old not in names:
            names[old] = _fresh_name(rng, avoid)
            avoid.add(names[old])
    mapping = {old: names[old] for old in candidates}
    sites = _sites(tree, source, mapping)
    if sites is None:
        return Renamed(source, skipped="name positions unreliable")
    code = _edit(source, sites, mapping)
    if code is None or not _same_tree(tree, sites, mapping, code):
        return Renamed(source, skipped="name positions unreliable")
    return Renamed(code, mapping)


def rename_code(
    text: str, rng: random.Random, *, names: dict[str, str] | None = None, taken: Collection[str] = ()
) -> tuple[str, list[str]]:
    """Python code in ``text`` with its identifiers renamed, and what happened to each snippet.

    The snippets are the ```python (or untagged) fenced blocks when the text has fences, else the whole text.
    Outside the fences only inline code spans naming a renamed variable (`` `total` ``) change, so the
    explanation still names the code's variables; plain prose words are left alone (they may be English).
    A snippet that does not parse is left unchanged and reported as "not Python".
    """
    names = {} if names is None else names
    notes: list[str] = []
    taken = set(taken) | set(_WORD.findall(text))

    def one(code: str) -> str:
        result = rename_identifiers(code, rng, names=names, taken=taken)
        notes.append("code: renamed" if result.skipped is None else f"code: {result.skipped}")
        return result.code

    fences = list(_FENCE.finditer(text))
    if not fences:
        return one(text), notes
    pieces, end = [], 0
    for m in fences:
        pieces.append(text[end : m.start("body")])
        body = m.group("body")
        if m.group("lang").lower() in _PYTHON_TAGS:
            body = one(body)
        else:
            notes.append("code: another language")
        pieces.append(body)
        end = m.end("body")
    pieces.append(text[end:])
    # Inline spans live outside the fences (even indices); only names some snippet renamed change.
    for i in range(0, len(pieces), 2):
        pieces[i] = _INLINE_CODE.sub(lambda s: f"`{names.get(s.group(1), s.group(1))}`", pieces[i])
    return "".join(pieces), notes


def _renamable(tree: ast.AST, table: symtable.SymbolTable) -> set[str]:
    """Names whose every use resolves to a non-class binding of the snippet, minus those we leave alone."""
    module_bound = {s.get_name() for s in table.get_symbols() if s.is_local()}
    ok: set[str] = set()
    bad: set[str] = set()
    params: set[str] = set()
    stack = [table]
    while stack:
        scope = stack.pop()
        stack.extend(scope.get_children())
        in_class = scope.get_type() == "class"
        for sym in scope.get_symbols():
            name = sym.get_name()
            if sym.is_parameter():
                params.add(name)
            if sym.is_imported() or sym.is_declared_global() or sym.is_nonlocal() or sym.is_namespace():
                bad.add(name)
            elif sym.is_local():
                (bad if in_class else ok).add(name)
            elif sym.is_free():
                ok.add(name)  # bound in an enclosing function of the snippet
            elif name in module_bound:
                ok.add(name)  # an implicit global that the snippet itself assigns
            else:
                bad.add(name)  # a builtin, or a global from outside the snippet
    bad |= _left_alone(tree, params)
    return {
        n
        for n in ok - bad
        if n.isidentifier() and not keyword.iskeyword(n) and not hasattr(builtins, n) and not _dunder(n)
    } - KEEP


def _left_alone(tree: ast.AST, params: set[str]) -> set[str]:
    """Names that resolve inside the snippet but that outside code or the text may still see (module docstring)."""
    out: set[str] = set()
    functions: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.setdefault(node.name, []).append(node)
            if node.decorator_list:
                out |= {a.arg for a in _arguments(node.args)}
        elif isinstance(node, ast.JoinedStr):
            out |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            out.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            out.add(node.rest)
        elif type(node).__name__ in ("TypeVar", "ParamSpec", "TypeVarTuple"):  # 3.12 type parameters
            out.add(node.name)  # type: ignore[attr-defined]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        for kw in node.keywords:
            if kw.arg is None:
                out |= params  # **kwargs at a call: a dict's keys may name any parameter
            elif kw.arg in params and _renamed_keyword(node, kw.arg, functions) is None:
                out.add(kw.arg)
    return out


def _renamed_keyword(call: ast.Call, arg: str, functions: dict[str, list]) -> bool | None:
    """True when keyword ``arg`` of ``call`` names a parameter of a plain function of the snippet (every def of
    that name takes it, none takes ``**kwargs``), so renaming the parameter must rename the keyword too."""
    if not isinstance(call.func, ast.Name) or call.func.id not in functions:
        return None
    defs = functions[call.func.id]
    if all(d.args.kwarg is None and arg in {a.arg for a in _arguments(d.args)} for d in defs):
        return True
    return None


def _arguments(args: ast.arguments) -> list[ast.arg]:
    extra = [a for a in (args.vararg, args.kwarg) if a is not None]
    return [*args.posonlyargs, *args.args, *args.kwonlyargs, *extra]


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _fresh_name(rng: random.Random, avoid: set[str]) -> str:
    for _ in range(20):
        name = rng.choice(NAME_WORDS) if rng.random() < 0.5 else f"{rng.choice(NAME_WORDS)}_{rng.choice(NAME_WORDS)}"
        if name not in avoid and not keyword.iskeyword(name) and not hasattr(builtins, name):
            return name
    base, n = rng.choice(NAME_WORDS), 2
    while f"{base}{n}" in avoid:
        n += 1
    return f"{base}{n}"


# A place to edit: (line number, column in UTF-8 bytes, the node, the attribute holding the name).
_Site = tuple[int, int, ast.AST, str]


def _sites(tree: ast.AST, source: str, mapping: dict[str, str]) -> list[_Site] | None:
    functions = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    defs: dict[str, list] = {}
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defs.setdefault(n.name, []).append(n)
    sites: list[_Site] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in mapping:
            sites.append((node.lineno, node.col_offset, node, "id"))
        elif isinstance(node, ast.arg) and node.arg in mapping:
            sites.append((node.lineno, node.col_offset, node, "arg"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions:
            for kw in node.keywords:
                if kw.arg in mapping and _renamed_keyword(node, kw.arg, defs):
                    sites.append((kw.lineno, kw.col_offset, kw, "arg"))
        elif isinstance(node, ast.ExceptHandler) and node.name in mapping:
            where = _except_name(source, node)
            if where is None:
                return None
            sites.append((*where, node, "name"))
    return sites


def _except_name(source: str, handler: ast.ExceptHandler) -> tuple[int, int] | None:
    """Where ``e`` of ``except E as e`` is: ast gives the handler's position, not the name's."""
    if handler.type is None or handler.type.end_lineno is None or handler.type.end_col_offset is None:
        return None
    lines = _lines(source)
    line_no, col = handler.type.end_lineno, handler.type.end_col_offset
    rest = b"".join(lines[line_no - 1 :])[col:]
    match = re.match(rb"\s*as\s+" + re.escape(handler.name.encode()) + rb"\b", rest)  # type: ignore[union-attr]
    if match is None:
        return None
    before = rest[: match.end() - len(handler.name.encode())]  # type: ignore[union-attr]
    newlines = before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n")
    if newlines == 0:
        return line_no, col + len(before)
    return line_no + newlines, len(re.split(rb"\r\n|\r|\n", before)[-1])


def _lines(source: str) -> list[bytes]:
    """The source's lines as UTF-8 bytes, with their line ends: ast columns are byte offsets."""
    return [m.group().encode() for m in _LINE.finditer(source) if m.group()] or [b""]


def _edit(source: str, sites: list[_Site], mapping: dict[str, str]) -> str | None:
    lines = _lines(source)
    for line_no, col, node, attr in sorted(sites, key=lambda s: (s[0], s[1]), reverse=True):
        old = getattr(node, attr).encode()
        line = lines[line_no - 1]
        if line[col : col + len(old)] != old:
            return None
        lines[line_no - 1] = line[:col] + mapping[getattr(node, attr)].encode() + line[col + len(old) :]
    return b"".join(lines).decode()


def _same_tree(tree: ast.AST, sites: list[_Site], mapping: dict[str, str], code: str) -> bool:
    """The edited code must parse to the original tree with exactly the chosen names replaced."""
    for _, _, node, attr in sites:
        setattr(node, attr, mapping[getattr(node, attr)])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            return ast.dump(ast.parse(code)) == ast.dump(tree)
    except (SyntaxError, ValueError, RecursionError):
        return False
