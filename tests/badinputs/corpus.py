"""A corpus of malformed or awkward training inputs, each with the outcome `lmtune data check` must give it.

`CASES` is generated (nothing binary is committed): every case is a file name, its bytes, the task it is checked
for (and any `--set` overrides), the exit code (0: accepted, maybe with warnings; 2: refused) and what the output
must name: `file:line` for a problem at a line, the file for a problem of the whole file, and for accepted inputs
the warning it must give (its words, e.g. `exact duplicate`), if any.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    id: str
    filename: str
    data: bytes
    code: int  # 0 accepted, 2 refused
    where: int | None = None  # the line the output must name (None: the file)
    needles: tuple[str, ...] = ()  # further text the output must contain (e.g. a warning's check name)
    task: str = "sft"
    args: tuple[str, ...] = field(default=())  # extra --set overrides


def jl(*records: object) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def chat(user: str = "What is 2 plus 2?", answer: str = "4.") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def chats(n: int = 4) -> list[dict]:
    return [chat(f"What is {i} plus {i}?", f"{2 * i}.") for i in range(n)]


def pc(i: int) -> dict:
    return {"prompt": f"Summarise: report number {i} on the weather.", "completion": f"Weather report {i}."}


def pair(i: int) -> dict:
    return {"prompt": f"Question {i}?", "chosen": f"A helpful answer {i}.", "rejected": f"Rude reply {i}."}


def cls(i: int) -> dict:
    return {"text": f"sentence number {i} is {'good' if i % 2 else 'bad'}", "label": "pos" if i % 2 else "neg"}


def parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


GOOD = jl(*chats())
DEEP = "[" * 10_000 + "]" * 10_000
CONLL_GOOD = "EU B-ORG\nrejects O\nGerman B-MISC\n\nPeter B-PER\nBlackburn I-PER\n"
TOK = ("--task", "token_classification")


def _jsonl_cases() -> list[Case]:
    lines = GOOD.decode().splitlines()
    return [
        Case("jsonl-broken", "a.jsonl", (lines[0] + "\n" + lines[1][:-5] + "\n").encode(), 2, 2),
        Case("jsonl-truncated-end", "a.jsonl", GOOD[:-20], 2, 4),
        Case("jsonl-bad-utf8", "a.jsonl", GOOD + b'{"text": "caf\xe9"}\n', 2, 5),
        Case("jsonl-bom", "a.jsonl", b"\xef\xbb\xbf" + GOOD, 0),
        Case("jsonl-crlf", "a.jsonl", GOOD.replace(b"\n", b"\r\n"), 0),
        Case("jsonl-nul-escape", "a.jsonl", jl(*chats(3), chat("a\u0000b")), 0, needles=("characters",)),
        Case("jsonl-raw-nul", "a.jsonl", GOOD + b'{"messages": \x00}\n', 2, 5),
        Case("jsonl-surrogate", "a.jsonl", GOOD + b'{"text": "x \\ud83d y"}\n', 2, 5, ("surrogate",)),
        Case("jsonl-deep", "a.jsonl", GOOD + ('{"text": ' + DEEP + "}\n").encode(), 2, 5, ("nested too deeply",)),
        Case("jsonl-nan", "a.jsonl", b'{"text": "a", "label": NaN}\n', 2, 1, ("NaN",), "classification"),
        Case("jsonl-infinity", "a.jsonl", GOOD + b'{"text": "b", "score": Infinity}\n', 2, 5, ("Infinity",)),
        Case("jsonl-array-line", "a.jsonl", GOOD + b'["a", "b"]\n', 2, 5, ("JSON object",)),
        Case("jsonl-empty", "a.jsonl", b"", 2, None, ("no records",)),
        Case("jsonl-blank-lines", "a.jsonl", b"\n\n  \n", 2, None, ("no records",)),
        Case("jsonl-messages-string", "a.jsonl", jl(*chats(3), {"messages": "hi"}), 2, 4, ("messages",)),
        Case("jsonl-bad-role", "a.jsonl", jl(*chats(3), {"messages": [{"role": "robot", "content": "x"}]}), 2, 4),
        Case("jsonl-missing-content", "a.jsonl", jl(*chats(3), {"messages": [{"role": "user"}]}), 2, 4),
        Case("jsonl-content-number", "a.jsonl", jl(*chats(3), {"messages": [{"role": "user", "content": 7}]}), 2, 4),
        Case(
            "jsonl-bad-weight",
            "a.jsonl",
            jl(
                *chats(3),
                {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0.5}]},
            ),
            2,
            4,
            ("weight",),
        ),
        Case(
            "jsonl-weight-on-user",
            "a.jsonl",
            jl(
                *chats(3),
                {"messages": [{"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]},
            ),
            2,
            4,
            ("weight",),
        ),
        Case("jsonl-no-assistant", "a.jsonl", jl(*chats(3), {"messages": [{"role": "user", "content": "q"}]}), 2, 4),
        Case("jsonl-messages-empty-list", "a.jsonl", jl(*chats(3), {"messages": []}), 2, 4),
        Case("jsonl-duplicates", "a.jsonl", jl(*chats(3), chats(3)[0]), 0, needles=("exact duplicate",)),
        Case(
            "jsonl-extra-fields", "a.jsonl", jl(*[{**c, "id": i, "meta": {"x": 1}} for i, c in enumerate(chats())]), 0
        ),
        Case("jsonl-huge-line", "a.jsonl", jl(*chats(3), chat("long " * 200_000)), 0, needles=("length",)),
        Case("jsonl-pc-missing-completion", "a.jsonl", jl(pc(1), pc(2), {"prompt": "x"}), 2, 3),
        Case("jsonl-pc-null-prompt", "a.jsonl", jl(pc(1), pc(2), {"prompt": None, "completion": "y"}), 2, 3),
        Case("jsonl-pc-empty-completion", "a.jsonl", jl(pc(1), pc(2), {"prompt": "x", "completion": ""}), 2, 3),
        Case("jsonl-mixed-shapes", "a.jsonl", jl(pc(1), chat(), pc(2)), 2, 2),
        Case("jsonl-unknown-shape", "a.jsonl", jl({"question": "q", "answer": "a"}), 2, 1, ("format",)),
    ]


def _json_cases() -> list[Case]:
    return [
        Case("json-one-object", "a.json", b'{"text": "just one"}\n', 2, 1, ("one JSON object",)),
        Case("json-wrapped-list", "a.json", json.dumps({"data": chats()}, indent=1).encode(), 2, 1, ("'data'",)),
        Case("json-truncated", "a.json", json.dumps(chats(), indent=1).encode()[:-30], 2, None, ("invalid JSON",)),
        Case("json-strings", "a.json", b'["a", "b"]', 2, 1, ("array element 0",)),
        Case("json-trailing", "a.json", json.dumps(chats()).encode() + b"\n]", 2, 2),
        Case("json-nan", "a.json", b'[\n{"text": "a"},\n{"text": "b", "x": NaN}\n]', 2, 3, ("NaN",)),
        Case("json-empty-array", "a.json", b"[]", 2, None, ("no records",)),
        Case("json-pretty-ok", "a.json", json.dumps(chats(), indent=2).encode(), 0),
    ]


def _csv_cases() -> list[Case]:
    text = ("--set", "data.columns.text=sentence")
    ok = "sentence,label\ngood film,pos\nbad film,neg\nfine film,pos\n"
    return [
        Case("csv-ragged", "a.csv", (ok + "too,many,columns\n").encode(), 2, 5, task="classification", args=text),
        Case("csv-missing-cell", "a.csv", (ok + "lonely\n").encode(), 2, 5, task="classification", args=text),
        Case("csv-quoted-newline", "a.csv", (ok + '"two\nlines",neg\n').encode(), 0, task="classification", args=text),
        Case("csv-unterminated-quote", "a.csv", (ok + '"open,neg\n').encode(), 2, 5, task="classification", args=text),
        Case("csv-header-only", "a.csv", b"sentence,label\n", 2, None, ("no records",), "classification", text),
        Case("csv-bom", "a.csv", b"\xef\xbb\xbf" + ok.encode(), 0, task="classification", args=text),
        Case("csv-empty-label", "a.csv", (ok + "odd film,\n").encode(), 2, 5, task="classification", args=text),
        Case("csv-bad-utf8", "a.csv", ok.encode() + b"caf\xe9,pos\n", 2, 5, task="classification", args=text),
        Case("tsv-spaces", "a.tsv", b"sentence label\ngood pos\nbad neg\n", 2, None, task="classification", args=text),
        Case("tsv-ok", "a.tsv", ok.replace(",", "\t").encode(), 0, task="classification", args=text),
        Case("csv-crlf", "a.csv", ok.replace("\n", "\r\n").encode(), 0, task="classification", args=text),
    ]


def _parquet_cases() -> list[Case]:
    return [
        Case("parquet-corrupt", "a.parquet", b"PAR1 this is not parquet PAR1", 2, None),
        Case("parquet-truncated", "a.parquet", parquet(chats())[:-40], 2, None),
        Case("parquet-wrong-columns", "a.parquet", parquet([{"q": "a", "a": "b"}]), 2, 1),
        Case("parquet-ok", "a.parquet", parquet(chats()), 0),
    ]


def _token_cases() -> list[Case]:
    return [
        Case("conll-one-column", "a.conll", (CONLL_GOOD + "\nlonely\n").encode(), 2, 8, task=TOK[1], args=TOK[:0]),
        Case(
            "conll-bad-bio",
            "a.conll",
            (CONLL_GOOD + "\nthe O\nman I-PER\n").encode(),
            0,
            needles=("I-PER",),
            task=TOK[1],
        ),
        Case("conll-not-bio", "a.conll", b"Peter PERSON\nsaid O\n", 2, 1, ("not a BIO tag",), TOK[1]),
        Case("conll-empty", "a.conll", b"\n\n", 2, None, ("no records",), TOK[1]),
        Case("conll-txt", "a.txt", CONLL_GOOD.encode(), 0, task=TOK[1]),
        Case("conll-bad-utf8", "a.conll", CONLL_GOOD.encode() + b"\ncaf\xe9 O\n", 2, 8, task=TOK[1]),
        Case("tokens-length-mismatch", "a.jsonl", jl({"tokens": ["a", "b"], "tags": ["O"]}), 2, 1, task=TOK[1]),
        Case("tokens-not-list", "a.jsonl", jl({"tokens": "a b", "tags": ["O", "O"]}), 2, 1, task=TOK[1]),
    ]


def _pair_cases() -> list[Case]:
    pairs = [pair(i) for i in range(4)]
    return [
        Case(
            "pair-identical",
            "p.jsonl",
            jl(*pairs, {"prompt": "q", "chosen": "same", "rejected": "same"}),
            0,
            needles=("identical",),
            task="dpo",
        ),
        Case("pair-missing-rejected", "p.jsonl", jl(*pairs, {"prompt": "q", "chosen": "a"}), 2, 5, task="dpo"),
        Case(
            "pair-empty-chosen",
            "p.jsonl",
            jl(*pairs, {"prompt": "q", "chosen": " ", "rejected": "b"}),
            2,
            5,
            task="dpo",
        ),
        Case(
            "pair-chosen-number",
            "p.jsonl",
            jl(*pairs, {"prompt": "q", "chosen": 1, "rejected": "b"}),
            2,
            5,
            task="reward",
        ),
        Case(
            "pair-hh-no-assistant",
            "p.jsonl",
            jl(*pairs, {"chosen": "Human: hi", "rejected": "Human: yo"}),
            2,
            5,
            task="dpo",
        ),
        Case("pair-duplicates", "p.jsonl", jl(*pairs, pairs[0]), 0, needles=("exact duplicate",), task="dpo"),
        Case("pair-bad-json", "p.jsonl", jl(*pairs) + b'{"prompt": "q", "chosen": \n', 2, 5, task="dpo"),
        Case(
            "pair-bad-role",
            "p.jsonl",
            jl(*pairs, {"prompt": [{"role": "wizard", "content": "q"}], "chosen": "a", "rejected": "b"}),
            2,
            5,
            task="dpo",
        ),
    ]


def _other_task_cases() -> list[Case]:
    rl = ("--set", "rlhf.reward_model=runs/reward")
    return [
        Case("rlhf-prompt-number", "r.jsonl", jl({"prompt": "q"}, {"prompt": 3}), 2, 2, task="rlhf", args=rl),
        Case(
            "rlhf-ends-with-assistant",
            "r.jsonl",
            jl(
                {"prompt": "q"}, {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
            ),
            2,
            2,
            task="rlhf",
            args=rl,
        ),
        Case("seq2seq-missing-completion", "s.jsonl", jl(pc(1), pc(2), {"prompt": "x"}), 2, 3, task="seq2seq"),
        Case(
            "cls-label-list",
            "c.jsonl",
            jl(*[cls(i) for i in range(4)], {"text": "t", "label": ["a"]}),
            2,
            5,
            task="classification",
        ),
        Case(
            "cls-label-missing", "c.jsonl", jl(*[cls(i) for i in range(4)], {"text": "t"}), 2, 5, task="classification"
        ),
        Case(
            "cls-empty-text",
            "c.jsonl",
            jl(*[cls(i) for i in range(4)], {"text": "", "label": "pos"}),
            2,
            5,
            task="classification",
        ),
    ]


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
TOOLS = ("--set", "data.chat_template=chatml-tools")


def tool_chat(i: int = 0, name: str = "get_weather", arguments: str = '{"city": "Paris"}', answers: str = "c1") -> dict:
    call = {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}
    return {
        "tools": [WEATHER],
        "messages": [
            {"role": "user", "content": f"Weather in Paris, day {i}?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": answers, "content": f"{20 + i} C"},
            {"role": "assistant", "content": f"It is {20 + i} degrees."},
        ],
    }


def _tool_cases() -> list[Case]:
    good = [tool_chat(i) for i in range(4)]
    turn = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
    return [
        Case("tool-ok", "t.jsonl", jl(*good), 0, args=TOOLS),
        Case(
            "tool-unknown-name", "t.jsonl", jl(*good, tool_chat(name="get_time")), 2, 5, ("unknown tool",), args=TOOLS
        ),
        Case(
            "tool-args-not-json", "t.jsonl", jl(*good, tool_chat(arguments="{city: Paris")), 2, 5, ("not valid JSON",)
        ),
        Case(
            "tool-result-no-call",
            "t.jsonl",
            jl(*good, tool_chat(answers="c9")),
            2,
            5,
            ("matches no pending",),
            args=TOOLS,
        ),
        Case("tool-template-refused", "t.jsonl", jl(*good), 2, None, ("cannot render tool calling",)),
        Case("sharegpt-ok", "s.jsonl", jl(*[{"conversations": turn}] * 3), 0),
        Case(
            "sharegpt-unknown-speaker",
            "s.jsonl",
            jl({"conversations": turn}, {"conversations": [{"from": "bot", "value": "x"}, *turn]}),
            2,
            2,
            ("unknown speaker",),
        ),
    ]


CASES: list[Case] = [
    *_tool_cases(),
    *_jsonl_cases(),
    *_json_cases(),
    *_csv_cases(),
    *_parquet_cases(),
    *_token_cases(),
    *_pair_cases(),
    *_other_task_cases(),
]
