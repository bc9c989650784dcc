"""Identifier renaming: the renamed code compiles, differs, keeps its text otherwise, and behaves the same."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import random
import re
import signal
import types
from typing import Any

import pytest
from support import REPO

from lmtune.data.pyrename import rename_identifiers

CODE_ALPACA = REPO.parent / "shared" / "data" / "instruct" / "code_alpaca_2k.json"

# (snippet, calls made on both versions: (function name, args, kwargs)); printed output is compared too.
# Calls from outside pass arguments by position: parameters are renamed, so a caller's keywords would not match.
SNIPPETS: list[tuple[str, list[tuple[str, tuple, dict]]]] = [
    (
        "def factorial(number):\n"
        "    fact = 1  # the running product\n"
        "    for i in range(1, number + 1):\n"
        "        fact = fact * i\n"
        "    return fact\n"
        "\n"
        "print(factorial(5))\n",
        [("factorial", (6,), {}), ("factorial", (0,), {})],
    ),
    (
        "def fib(n, memo={}):\n"
        "    if n in memo:\n"
        "        return memo[n]\n"
        "    value = n if n < 2 else fib(n - 1) + fib(n - 2)\n"
        "    memo[n] = value\n"
        "    return value\n",
        [("fib", (20,), {})],
    ),
    (
        "class Account:\n"
        "    rate = 0.5\n"
        "\n"
        "    def __init__(self, owner, balance=0):\n"
        "        self.owner = owner\n"
        "        self.balance = balance\n"
        "\n"
        "    def deposit(self, amount):\n"
        "        total = self.balance + amount * (1 + self.rate)\n"
        "        self.balance = total\n"
        "        return total\n"
        "\n"
        "acct = Account('ann', balance=10)\n"
        "print(acct.deposit(4), acct.owner)\n",
        [],
    ),
    (
        "def make_counter(start):\n"
        "    count = start\n"
        "    def step(by=1):\n"
        "        nonlocal count\n"
        "        count += by\n"
        "        return count\n"
        "    return step\n"
        "\n"
        "counter = make_counter(3)\n"
        "counter(); counter(by=5)\n"
        "print(counter())\n",
        [],
    ),
    (
        "def top_words(text, k=2):\n"
        "    counts = {}\n"
        "    for word in text.lower().split():\n"
        "        counts[word] = counts.get(word, 0) + 1\n"
        "    ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))\n"
        "    return [w for w, c in ranked[:k] if c > 0]\n",
        [("top_words", ("the cat and the hat and the bat", 3), {})],
    ),
    (
        "class Opened:\n"
        "    def __enter__(self):\n"
        "        return [1, 2, 3]\n"
        "    def __exit__(self, *exc):\n"
        "        return False\n"
        "\n"
        "def safe_ratio(a, b):\n"
        "    try:\n"
        "        with Opened() as items:\n"
        "            result = sum(items) * a / b\n"
        "    except (ZeroDivisionError,\n"
        "            TypeError) as err:\n"
        "        return type(err).__name__\n"
        "    return result\n",
        [("safe_ratio", (2, 4), {}), ("safe_ratio", (1, 0), {}), ("safe_ratio", (1, "x"), {})],
    ),
    (
        "def scale(values, *, factor=2, offset=0):\n"
        "    return [v * factor + offset for v in values]\n"
        "\n"
        "print(scale([1, 2], factor=3), scale([4], offset=1))\n",
        [("scale", ([5, 6],), {})],
    ),
    (
        "TOTAL = 0\n"
        "\n"
        "def add(x):\n"
        "    global TOTAL\n"
        "    TOTAL += x\n"
        "    label = f'total={TOTAL} after {x}'\n"
        "    return label\n"
        "\n"
        "print(add(2), add(3))\n",
        [("add", (7,), {})],
    ),
    (
        "def chunks(seq, size):\n"
        "    while (rest := len(seq)) > 0:\n"
        "        yield seq[:size], rest\n"
        "        seq = seq[size:]\n"
        "\n"
        "print(list(chunks('abcdefg', 3)))\n",
        [("chunks", ([1, 2, 3, 4], 3), {})],
    ),
    (
        "def describe(shape):\n"
        "    match shape:\n"
        "        case {'kind': 'circle', 'r': radius}:\n"
        "            area = 3 * radius ** 2\n"
        "        case [width, height]:\n"
        "            area = width * height\n"
        "        case _:\n"
        "            area = None\n"
        "    return area\n",
        [("describe", ({"kind": "circle", "r": 2},), {}), ("describe", ([3, 4],), {}), ("describe", ("x",), {})],
    ),
    (
        "def route(path):\n"
        "    def wrap(fn):\n"
        "        return fn\n"
        "    return wrap\n"
        "\n"
        "@route('/user/<username>')\n"
        "def show(username, page=1):\n"
        "    title = username.title()\n"
        "    return title + ':' + str(page)\n"
        "\n"
        "def call(opts):\n"
        "    return show(**opts)\n"
        "\n"
        "print(call({'username': 'bo', 'page': 2}))\n",
        [("call", ({"username": "al"},), {})],
    ),
]


def _run(code: str, calls: list[tuple[str, tuple, dict]]) -> tuple[str, list[str]]:
    """What running the snippet prints, and what each call returns (or raises), as text."""
    namespace: dict[str, Any] = {"__name__": "__snippet__"}
    printed = io.StringIO()
    results = []
    with contextlib.redirect_stdout(printed), _time_limit(2):
        exec(compile(code, "<snippet>", "exec", dont_inherit=True), namespace)
        for name, args, kwargs in calls:
            results.append(_outcome(namespace[name], args, kwargs))
    return printed.getvalue(), results


def _outcome(fn: Any, args: tuple, kwargs: dict) -> str:
    try:
        value = fn(*copy.deepcopy(args), **copy.deepcopy(kwargs))  # a call may change its arguments
        if isinstance(value, types.GeneratorType):
            value = list(value)
        return re.sub(r" at 0x[0-9a-f]+", "", repr(value))  # default reprs carry the object's address
    except Exception as error:  # the same exception type on both sides is the same behaviour
        return f"raises {type(error).__name__}"


@contextlib.contextmanager
def _time_limit(seconds: int):
    def stop(*_: Any) -> None:
        raise TimeoutError("snippet ran too long")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_renamed_snippet_compiles_differs_and_behaves_the_same(index):
    code, calls = SNIPPETS[index]
    result = rename_identifiers(code, random.Random(index))
    assert result.skipped is None and result.renamed
    assert result.code != code
    compile(result.code, "<renamed>", "exec")
    assert _run(result.code, calls) == _run(code, calls)
    for old, new in result.renamed.items():
        assert re.search(rf"\b{re.escape(old)}\b", code)
        assert not re.search(rf"\b{re.escape(new)}\b", code), "a new name must not be a word of the original"


def test_only_names_change_comments_and_layout_stay():
    code, _ = SNIPPETS[0]
    result = rename_identifiers(code, random.Random(0))
    assert "# the running product" in result.code
    assert result.code.count("\n") == code.count("\n")
    expected = code
    for old, new in result.renamed.items():
        expected = re.sub(rf"\b{old}\b", new, expected)
    assert result.code == expected


def test_interface_builtins_attributes_and_imports_are_left_alone():
    code = (
        "import math\n"
        "from os import path as osp\n"
        "class Point:\n"
        "    dims = 2\n"
        "    def __init__(self, x, y):\n"
        "        self.x = x\n"
        "        self.y = y\n"
        "    def norm(self):\n"
        "        squared = self.x ** 2 + self.y ** 2\n"
        "        return math.sqrt(squared)\n"
        "def dist(a, b):\n"
        "    dx = a.x - b.x\n"
        "    return abs(dx) + len(osp.sep)\n"
    )
    result = rename_identifiers(code, random.Random(0))
    assert set(result.renamed) == {"x", "y", "squared", "a", "b", "dx"}
    for kept in ("import math", "osp.sep", "class Point", "dims = 2", "def __init__(self", "def norm(self)",
                 "def dist(", "self.x =", "self.y =", "math.sqrt(", "abs(", "len("):  # fmt: skip
        assert kept in result.code


def test_names_outside_code_may_see_are_kept():
    code, _ = SNIPPETS[10]  # a decorated function, called with **kwargs
    renamed = rename_identifiers(code, random.Random(0)).renamed
    assert "title" in renamed
    assert not {"username", "page", "opts", "fn", "path"} & set(renamed)
    code, _ = SNIPPETS[7]  # `global TOTAL`, and `x` inside an f-string
    renamed = rename_identifiers(code, random.Random(0)).renamed
    assert set(renamed) == {"label"}


def test_keyword_arguments_follow_a_renamed_parameter_or_keep_it():
    # `factor` is passed by keyword to a function of the snippet: renamed at the call too.
    code = "def scale(v, factor=2):\n    return v * factor\nprint(scale(3, factor=4))\n"
    result = rename_identifiers(code, random.Random(0))
    assert "factor" in result.renamed and f"scale(3, {result.renamed['factor']}=4)" in result.code
    # `key` is also a keyword of sorted(): renaming the parameter would not rename that call's keyword target,
    # and the calls through an attribute cannot be followed, so both parameters keep their names.
    code = (
        "def order(items, key):\n"
        "    return sorted(items, key=key)\n"
        "class Box:\n"
        "    def put(self, thing):\n"
        "        return thing\n"
        "print(order([2, 1], key=abs), Box().put(thing=1))\n"
    )
    result = rename_identifiers(code, random.Random(0))
    assert "key" not in result.renamed and "thing" not in result.renamed
    assert "items" in result.renamed
    assert _run(result.code, []) == _run(code, [])


def test_free_names_of_the_snippet_are_not_renamed_where_they_mean_something_outside():
    # `x` is local in f but a global from outside in g: renaming it everywhere would break g.
    code = "def f():\n    x = 1\n    return x\ndef g():\n    return x\n"
    assert "x" not in rename_identifiers(code, random.Random(0)).renamed


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("The answer is 42.", "not Python"),
        ("return 5\n", "not Python"),  # parses, but does not compile
        ("def f(x):\n    return eval('x + 1')\n", "reads names dynamically (eval, exec, locals, ...)"),
        ("print(len('abc'))\n", "no renamable names"),
    ],
)
def test_snippets_that_cannot_be_renamed_are_returned_unchanged_with_the_reason(code, reason):
    result = rename_identifiers(code, random.Random(0))
    assert (result.code, result.renamed, result.skipped) == (code, {}, reason)


def test_renaming_is_seeded_and_a_shared_mapping_carries_across_snippets():
    code, _ = SNIPPETS[0]
    first = rename_identifiers(code, random.Random(3))
    assert rename_identifiers(code, random.Random(3)) == first
    assert any(rename_identifiers(code, random.Random(s)).code != first.code for s in range(4, 8))
    names: dict[str, str] = {}
    question = rename_identifiers("number = 4\n", random.Random(0), names=names)
    answer = rename_identifiers("number = 5\nfact = number * 2\n", random.Random(1), names=names)
    assert answer.renamed["number"] == question.renamed["number"]


def test_non_ascii_text_before_a_name_does_not_shift_the_edit():
    code = "s = 'héllo wörld'; n = len(s)  # zählen\nprint(n, s)\n"
    result = rename_identifiers(code, random.Random(0))
    assert set(result.renamed) == {"s", "n"}
    assert _run(result.code, []) == _run(code, [])


def _safe_to_run(code: str) -> bool:
    """Dataset code is run only when it cannot touch files, the network, stdin or the process."""
    return not re.search(r"\b(import|open|input|exit|quit|os|sys|while)\b", code)


@pytest.mark.skipif(not CODE_ALPACA.exists(), reason="shared Code Alpaca data not present")
def test_code_alpaca_outputs_stay_runnable_and_behave_the_same():
    records = json.loads(CODE_ALPACA.read_text(encoding="utf-8"))
    checked = 0
    for index, record in enumerate(records[:400]):
        code = record["output"]
        result = rename_identifiers(code, random.Random(index))
        if result.skipped is not None:
            continue
        compile(result.code, "<renamed>", "exec")
        if not _safe_to_run(code):
            continue
        try:
            original = _run(code, [])
        except Exception:
            continue  # the snippet fails on its own (it expects variables defined elsewhere, say)
        namespace: dict[str, Any] = {}
        with contextlib.redirect_stdout(io.StringIO()), _time_limit(2):
            exec(compile(code, "<snippet>", "exec", dont_inherit=True), namespace)
        functions = [name for name, value in namespace.items() if isinstance(value, types.FunctionType)]
        calls = [(name, args, {}) for name in functions for args in _arguments_for(namespace[name])]
        assert _run(result.code, calls) == _run(code, calls), f"record {index}: {code!r}"
        assert original == _run(result.code, [])
        checked += 1
    assert checked >= 20


def _arguments_for(fn: types.FunctionType) -> list[tuple]:
    """A few arguments of the function's arity: numbers, lists and strings (a wrong type raises the same way)."""
    n = fn.__code__.co_argcount - len(fn.__defaults__ or ())
    pools = [(3,), ([4, 1, 3],), ("abca",), (0,)]
    return [tuple(pool[0] for _ in range(n)) for pool in pools] if n else [()]
