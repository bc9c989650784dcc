"""Augmentation: what each strategy changes (and keeps), the copies' provenance, the refusals, the CLI."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest
from support import chat_record, run_cli, run_main, write_jsonl

from lmtune.api import augment
from lmtune.data.augment import (
    STRATEGIES,
    AugmentOptions,
    augment_records,
    check_paths,
)
from lmtune.data.augment_strategies import backtranslate_texts, paraphrase_texts
from lmtune.data.formats import normalize
from lmtune.data.load import load_records
from lmtune.data.prepare import record_key
from lmtune.data.pyrename import rename_code
from lmtune.data.textnoise import eda_text, noise_text
from lmtune.data.types import Record
from lmtune.errors import DataError, LmtuneError

TEXT = "The quick brown fox jumps over the lazy dog.\nWhat is 3 plus 4? Answer in words, please."


def records(*rows: dict, source: str = "train.jsonl") -> list[Record]:
    return [Record(row, source, line) for line, row in enumerate(rows, start=1)]


def letters_and_digits(text: str) -> tuple[str, str]:
    return re.sub(r"[^A-Za-z]", "", text), re.sub(r"\D", "", text)


# ---- noise and EDA -------------------------------------------------------------------------------------------------


def test_noise_is_seeded_changes_letters_only_and_scales_with_the_rate():
    out = noise_text(TEXT, random.Random(1))
    assert out == noise_text(TEXT, random.Random(1)) and out != TEXT
    assert letters_and_digits(out)[1] == letters_and_digits(TEXT)[1]  # "3" and "4" survive
    assert out.count("\n") == TEXT.count("\n")
    long = " ".join(["alpha beta gamma delta"] * 50)

    def changed(rate: float) -> int:
        out = noise_text(long, random.Random(0), rate, level="char")
        return sum(a != b for a, b in zip(out, long, strict=False)) + abs(len(out) - len(long))

    assert changed(0.01) < changed(0.2)


@pytest.mark.parametrize("level", ["char", "word", "both"])
def test_noise_levels_never_empty_a_text(level):
    for seed in range(30):
        assert noise_text("a", random.Random(seed), 1.0, level).strip()
        assert noise_text("hi there", random.Random(seed), 1.0, level).strip()


def test_word_noise_drops_or_doubles_whole_words():
    words = TEXT.split()
    out = noise_text(TEXT, random.Random(2), 0.3, level="word")
    assert out != TEXT and set(out.split()) <= set(words)
    assert out.count("\n") == TEXT.count("\n")


def test_eda_operations_do_what_they_say():
    words = TEXT.split()
    swapped = eda_text(TEXT, random.Random(0), 0.2, operation="swap")
    assert Counter(swapped.split()) == Counter(words) and swapped != TEXT
    deleted = eda_text(TEXT, random.Random(0), 0.3, operation="delete")
    assert 0 < len(deleted.split()) < len(words) and Counter(deleted.split()) <= Counter(words)
    inserted = eda_text(TEXT, random.Random(0), 0.2, operation="insert", pool=["zebra", "yak"])
    added = Counter(inserted.split()) - Counter(words)
    assert len(inserted.split()) == len(words) + round(0.2 * len(words)) and set(added) <= {"zebra", "yak"}
    for text in (swapped, deleted, inserted):
        assert text.count("\n") == 1 and "3" in text and "4?" in text  # lines and numbers stay


def test_eda_keeps_a_one_word_text_non_empty():
    for seed in range(20):
        assert eda_text("hello", random.Random(seed), operation="delete").strip()


# ---- records: fields, provenance, refusals ---------------------------------------------------------------------------


def test_copies_change_the_input_side_only_and_say_where_they_came_from():
    rows = records(
        {"prompt": "Summarise the meeting about budgets and hiring.", "completion": "Budgets were cut.", "id": 7},
        {"prompt": "Translate the greeting into French for me.", "completion": "Bonjour.", "id": 8},
    )
    before = json.dumps([r.data for r in rows])
    result = augment_records(rows, "noise", seed=5)
    assert json.dumps([r.data for r in rows]) == before  # originals untouched
    assert result.fields == ("prompt",) and len(result.copies) == 2
    for row, copy in zip(rows, result.copies, strict=True):
        assert copy["completion"] == row.data["completion"] and copy["id"] == row.data["id"]
        assert copy["prompt"] != row.data["prompt"]
        assert copy["augmentation"] == {
            "strategy": "noise",
            "source": "train.jsonl",
            "line": row.line,
            "of": record_key(row.data),
            "seed": 5,
            "copy": 1,
        }
    assert augment_records(rows, "noise", seed=5).copies == result.copies
    assert augment_records(rows, "noise", seed=6).copies != result.copies


def test_chat_records_change_user_turns_and_instruction_records_instruction_and_input():
    chat = augment_records(records(chat_record(0), chat_record(1)), "eda")
    for copy, i in zip(chat.copies, (0, 1), strict=True):
        original = chat_record(i)["messages"]
        assert [m["role"] for m in copy["messages"]] == [m["role"] for m in original]
        assert copy["messages"][0] == original[0] and copy["messages"][2] == original[2]
        assert copy["messages"][1]["content"] != original[1]["content"]
    row = {"instruction": "Sort the numbers below in order.", "input": "five two nine", "output": "2, 5, 9"}
    (copy,) = augment_records(records(row), "noise", options=AugmentOptions(rate=0.3)).copies
    assert copy["output"] == row["output"]
    assert (copy["instruction"], copy["input"]) != (row["instruction"], row["input"])
    assert normalize([Record(copy, "x.jsonl", 1)])  # a copy is still a valid record of its shape


def test_fields_override_the_defaults_and_a_missing_field_names_its_line():
    rows = records({"question": "Where is the big old library?", "answer": "Downtown."})
    (copy,) = augment_records(rows, "noise", fields=["question"]).copies
    assert copy["answer"] == "Downtown." and copy["question"] != rows[0].data["question"]
    with pytest.raises(DataError) as info:
        augment_records(rows, "noise", fields=["context"])
    assert (info.value.line, info.value.field) == (1, "context")
    with pytest.raises(LmtuneError, match="--fields"):
        augment_records(rows, "noise")  # no known shape: the user must say which columns


def test_more_copies_differ_and_identical_ones_are_skipped():
    rows = records({"text": "A fairly long sentence with plenty of letters to perturb here."})
    result = augment_records(rows, "noise", copies=3)
    assert len({c["text"] for c in result.copies}) == 3
    assert [c["augmentation"]["copy"] for c in result.copies] == [1, 2, 3]
    # a "model" that ignores its prompt writes the same text for every copy: one copy, two skipped
    same = augment_records(rows, "paraphrase", copies=3, generate=lambda ps: ["Constant reply."] * len(ps))
    assert len(same.copies) == 1 and same.skipped == {"same as another copy": 2}


def test_augmented_records_are_refused_as_sources():
    copy = augment_records(records({"text": "some words to change"}), "eda").copies[0]
    with pytest.raises(DataError, match="augmented copy already") as info:
        augment_records(records({"text": "fine"}, copy), "eda")
    assert info.value.line == 2


def test_unknown_strategy_lists_the_strategies():
    with pytest.raises(LmtuneError) as info:
        augment_records(records({"text": "x"}), "synonyms")
    assert all(name in str(info.value) for name in STRATEGIES)


# ---- model-based strategies, with a stand-in model -------------------------------------------------------------------


def test_paraphrase_fills_the_template_and_skips_empty_and_echoed_outputs():
    seen: list[str] = []

    def generate(prompts: list[str]) -> list[str | None]:
        seen.extend(prompts)
        return ["  A new wording.  ", "", "the SAME text", None]

    texts = ["first text", "second text", "The same   text", "a very long text"]
    assert paraphrase_texts(texts, generate, "Reword: {text}") == [
        ("A new wording.", "rewritten"),
        (None, "empty output"),
        (None, "same as the input"),
        (None, "too long for the model"),
    ]
    assert seen == [f"Reword: {t}" for t in texts]
    result = augment_records(records(*({"text": t} for t in texts)), "paraphrase", generate=generate, model="m", seed=1)
    assert [c["text"] for c in result.copies] == ["A new wording."]
    assert result.copies[0]["augmentation"]["model"] == "m"
    assert result.skipped == {"empty output": 1, "same as the input": 1, "too long for the model": 1}


def test_backtranslation_goes_to_the_pivot_and_back():
    calls: list[list[str]] = []

    def generate(prompts: list[str]) -> list[str | None]:
        calls.append(prompts)
        return ["Guten Tag." if "to German" in p else "Good day to you." for p in prompts]

    assert backtranslate_texts(["Hello there."], generate) == [("Good day to you.", "rewritten")]
    assert calls == [["Translate English to German: Hello there."], ["Translate German to English: Guten Tag."]]
    result = backtranslate_texts(["Hi."], generate, pivot="French")
    assert calls[-2] == ["Translate English to French: Hi."] and result == [("Good day to you.", "rewritten")]
    nothing = backtranslate_texts(["Hi.", "Hello."], lambda prompts: [""] * len(prompts))
    assert nothing == [(None, "empty German translation")] * 2


def test_model_strategies_need_a_model_and_a_template_with_text():
    rows = records({"text": "words"})
    with pytest.raises(LmtuneError, match="needs a model"):
        augment_records(rows, "paraphrase")
    with pytest.raises(LmtuneError, match=r"\{text\}"):
        augment_records(rows, "paraphrase", options=AugmentOptions(template="Reword this"), generate=lambda p: p)
    with pytest.raises(LmtuneError, match="unknown placeholders"):
        augment_records(rows, "paraphrase", options=AugmentOptions(template="{text} {lang}"), generate=lambda p: p)


# ---- code-rename -----------------------------------------------------------------------------------------------------


def test_code_rename_renames_fenced_python_and_inline_mentions_only():
    answer = (
        "Use a loop:\n\n```python\ndef total(values):\n    acc = 0\n    for v in values:\n        acc += v\n"
        "    return acc\n```\n\nHere `acc` holds the running sum; acc is a common name.\n\n```js\nlet acc = 0;\n```\n"
    )
    out, notes = rename_code(answer, random.Random(0))
    new = re.search(r"    (\w+) = 0", out).group(1)
    assert new != "acc" and f"Here `{new}` holds" in out
    assert "acc is a common name" in out and "let acc = 0;" in out  # prose and other languages stay
    assert notes == ["code: renamed", "code: another language"]
    code = re.search(r"```python\n(.*?)```", out, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "<x>", "exec", dont_inherit=True), namespace)
    assert namespace["total"]([1, 2, 3]) == 6


def test_code_rename_changes_answers_and_counts_what_is_not_python():
    rows = records(
        {"instruction": "Write a function.", "input": "", "output": "def f(n):\n    out = n * 2\n    return out"},
        {"instruction": "Explain lists.", "input": "", "output": "A list holds items in order."},
    )
    result = augment_records(rows, "code-rename")
    assert result.fields == ("output", "input") and len(result.copies) == 1
    assert result.copies[0]["instruction"] == "Write a function." and "out" not in result.copies[0]["output"]
    assert result.skipped == {"not Python": 1}
    assert result.notes == {"code: renamed": 1, "code: not Python": 1}


# ---- paths ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["val.jsonl", "data_test.jsonl", "dialogsum-dev.jsonl", "validation.json"])
def test_held_out_files_are_refused_unless_forced(tmp_path, name):
    with pytest.raises(LmtuneError, match="training split only"):
        check_paths(str(tmp_path / name), tmp_path / "out.jsonl")
    assert check_paths(str(tmp_path / name), tmp_path / "out.jsonl", force=True) == tmp_path / "out.jsonl"
    check_paths(str(tmp_path / "interval_latest.jsonl"), tmp_path / "out.jsonl")  # "val"/"test" inside a word


def test_output_must_be_new_json_and_not_the_input(tmp_path):
    source = write_jsonl(tmp_path / "train.jsonl", [{"text": "x"}])
    with pytest.raises(LmtuneError, match="CSV cannot hold"):
        check_paths(str(source), tmp_path / "out.csv")
    with pytest.raises(LmtuneError, match="is the input file"):
        check_paths(str(source), source, overwrite=True)
    (tmp_path / "out.jsonl").write_text("")
    with pytest.raises(LmtuneError, match="--overwrite"):
        check_paths(str(source), tmp_path / "out.jsonl")
    assert check_paths(str(source), tmp_path / "out.jsonl", overwrite=True)


# ---- API and CLI ---------------------------------------------------------------------------------------------------


def test_augment_writes_originals_in_order_then_copies(tmp_path):
    rows = [{"text": f"Sentence number {i} has several plain words in it."} for i in range(4)]
    source = write_jsonl(tmp_path / "train.jsonl", rows)
    report = augment(str(source), "eda", out=tmp_path / "out.jsonl", copies=2, seed=3)
    written = load_records(str(tmp_path / "out.jsonl"))
    assert [r.data for r in written[:4]] == rows
    assert (report.originals, report.copies, report.written) == (4, 8, 12) == (4, len(written) - 4, len(written))
    assert [r.data["augmentation"]["line"] for r in written[4:]] == [1, 1, 2, 2, 3, 3, 4, 4]
    only = augment(str(source), "eda", out=tmp_path / "new.jsonl", copies=2, seed=3, only_new=True)
    assert [r.data for r in load_records(str(tmp_path / "new.jsonl"))] == [r.data for r in written[4:]]
    assert only.written == 8


def test_cli_json_summary_and_clean_errors(tmp_path, monkeypatch, capsys):
    source = write_jsonl(tmp_path / "train.jsonl", [chat_record(i) for i in range(3)])
    out = tmp_path / "aug.jsonl"
    code, stdout, _ = run_main(monkeypatch, capsys, "data", "augment", source, "--strategy", "noise", "--out", out,
                               "--copies", "2", "--json")  # fmt: skip
    report = json.loads(stdout)
    assert code == 0 and report["copies"] == 6 and report["fields"] == ["messages:user"]
    assert len(load_records(str(out))) == 9
    for args, needle in [
        (["--strategy", "synonyms"], "noise, eda, paraphrase, backtranslate, code-rename"),
        (["--strategy", "paraphrase"], "needs a model"),
        (["--strategy", "paraphrase", "--model", tmp_path / "no-model"], "no such directory"),
        (["--strategy", "noise", "--rate", "2"], "--rate must be in (0, 1]"),
    ]:
        code, _, stderr = run_main(monkeypatch, capsys, "data", "augment", source, "--out", tmp_path / "x.jsonl", *args)
        assert code == 2 and "Traceback" not in stderr and needle in stderr
    code, _, stderr = run_main(monkeypatch, capsys, "data", "augment", source, "--out", out, "--strategy", "noise")
    assert code == 2 and "exists already" in stderr and "--overwrite" in stderr
    val = write_jsonl(tmp_path / "val.jsonl", [chat_record(0)])
    code, _, stderr = run_main(monkeypatch, capsys, "data", "augment", val, "--strategy", "eda", "--out", out)
    assert code == 2 and "training split only" in stderr and "--force" in stderr


def test_cli_subprocess_prints_a_summary(tmp_path):
    rows = [
        {"instruction": "Double it.", "input": "", "output": "def double(x):\n    result = x * 2\n    return result"}
    ]
    source = write_jsonl(tmp_path / "train.jsonl", rows)
    done = run_cli("data", "augment", source, "--strategy", "code-rename", "--out", tmp_path / "out.jsonl")
    assert done.returncode == 0, done.stderr
    assert "1 originals + 1 code-rename copies" in done.stdout and "1 code: renamed" in done.stdout


# ---- real (tiny, random) models: the plumbing, not the quality -------------------------------------------------------


@pytest.mark.parametrize(("strategy", "model"), [("paraphrase", "preset:tiny-chat"), ("backtranslate", "t5")])
def test_model_strategies_write_marked_copies_with_a_tiny_model(tmp_path, t5_dir, strategy, model):
    model = str(t5_dir) if model == "t5" else model
    rows = [{"prompt": f"Tell me about item {i} and why it matters.", "completion": f"Item {i}."} for i in range(3)]
    source = write_jsonl(tmp_path / "train.jsonl", rows)
    report = augment(str(source), strategy, model=model, out=tmp_path / "out.jsonl", max_new_tokens=12)
    written = [r.data for r in load_records(str(tmp_path / "out.jsonl"))]
    copies = written[3:]
    assert written[:3] == rows
    assert report.copies == len(copies) and report.copies + sum(report.skipped.values()) == 3
    assert report.copies >= 1 and report.notes.get("rewritten", 0) == report.copies
    assert sum(report.notes.values()) == 3  # one note per text sent to the model
    for copy in copies:
        assert copy["augmentation"]["strategy"] == strategy and copy["augmentation"]["model"] == model
        original = rows[copy["augmentation"]["line"] - 1]
        assert copy["completion"] == original["completion"] and copy["prompt"] != original["prompt"]
