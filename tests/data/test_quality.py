"""The checks behind `lmtune data check`, one by one, then the whole check through the API and the CLI."""

import json
from pathlib import Path

import pytest
from support import REPO, chat_record, run_cli, run_main, write_jsonl

from lmtune.api import check_data
from lmtune.data.formats import ChatExample, Message, PromptCompletionExample
from lmtune.data.quality import (
    SplitReport,
    augmented_findings,
    character_findings,
    label_findings,
    length_findings,
    role_findings,
)
from lmtune.data.template_check import template_check
from lmtune.data.types import Record

NO_END_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}"
)


def rec(data: dict, line: int = 1) -> Record:
    return Record(data, "d.jsonl", line)


def test_control_and_invisible_characters_are_flagged_with_their_field() -> None:
    records = [rec({"text": "fine\nwith a tab\t"}), rec({"text": "bell\x07 and zero\u200bwidth"}, 2)]
    records.append(rec({"messages": [{"role": "user", "content": "mojibake \ufffd"}]}, 3))
    found = character_findings(records, "train")
    assert [(f.line, f.field) for f in found] == [(2, "text"), (3, "messages[0].content")]
    assert "U+0007" in found[0].message and "U+200B" in found[0].message
    assert "non-UTF-8" in found[1].message


def test_roles_out_of_order() -> None:
    def chat(*roles: str, line: int) -> ChatExample:
        return ChatExample(tuple(Message(r, f"{r} text") for r in roles), "d.jsonl", line)

    examples = [
        chat("system", "user", "assistant", line=1),
        chat("assistant", "user", "assistant", line=2),
        chat("user", "user", "assistant", line=3),
        chat("user", "assistant", "user", line=4),
    ]
    found = role_findings(examples, "train")
    assert [(f.line, f.severity) for f in found] == [(2, "warning"), (3, "warning"), (4, "info")]
    assert "two user turns in a row" in found[1].message


def test_labels_counts_and_problems() -> None:
    records = [rec({"text": "a", "label": 1}, i) for i in range(1, 22)]
    records += [rec({"text": "b", "label": 0}, 22), rec({"text": "c", "label": None}, 23)]
    records += [rec({"text": "d", "label": "1"}, 24), rec({"text": "e", "label": 0.5}, 25)]
    counts, found = label_findings(records, "label", "train")
    assert counts == {"0": 1, "1": 22}
    problems = {(f.line, f.severity) for f in found if f.line is not None}
    assert problems == {(23, "error"), (25, "error")}
    messages = " | ".join(f.message for f in found if f.line is None)
    assert "mix types" in messages and "class '0' has 1 example" in messages and "imbalanced 22:1" in messages


def test_augmented_copies_outside_train_are_errors() -> None:
    records = [
        rec({"text": "x"}),
        rec({"text": "y", "augmentation": {"strategy": "eda", "source": "t.jsonl", "line": 7}}, 2),
    ]
    (found,) = augmented_findings(records, "validation")
    assert found.severity == "error" and found.line == 2 and "t.jsonl:7" in found.message


def test_length_findings_count_truncated_and_dropped() -> None:
    report = SplitReport("train", "d.jsonl", lengths=[10, 600, 700, 20], truncated=1, dropped=1)
    (found,) = length_findings(report, 512, "truncate")
    assert "2 of 4 examples (50.0%)" in found.message and "1 truncated, 1 dropped" in found.message
    assert length_findings(SplitReport("t", "d", lengths=[10, 20]), 512, "truncate") == []


def test_template_check_passes_for_chatml(tokenizer, chat) -> None:
    examples = [chat(("user", "hi"), ("assistant", "hello"), ("user", "and?"), ("assistant", "bye"))]
    info, found = template_check(examples, tokenizer, "auto", [tokenizer.eos_token_id])
    assert found == [] and info["ok"] and info["stop_tokens"] == ["<|im_end|>"]


def test_template_without_end_of_turn_token_is_an_error(tokenizer, chat) -> None:
    tokenizer.chat_template = NO_END_TEMPLATE
    examples = [chat(("user", "hi"), ("assistant", "hello"), ("user", "and?"), ("assistant", "bye"))]
    info, found = template_check(examples, tokenizer, "auto", [tokenizer.eos_token_id])
    assert not info["ok"] and info["answers_without_stop"] == 1
    assert any(f.severity == "error" and "will not stop" in f.message for f in found)
    # One turn only: the EOS appended after the last answer teaches the stop, so the same template passes.
    info, found = template_check(
        [chat(("user", "hi"), ("assistant", "hello"))], tokenizer, "auto", [tokenizer.eos_token_id]
    )
    assert info["answers_without_stop"] == 0


def test_stop_token_that_generation_ignores_is_an_error(tokenizer, chat) -> None:
    examples = [chat(("user", "hi"), ("assistant", "hello"))]
    _, found = template_check(examples, tokenizer, "auto", [tokenizer.pad_token_id])
    assert any("will not stop" in f.message for f in found)


def test_prompt_that_merges_with_the_answer_is_flagged(tokenizer) -> None:
    # 'Answer: the' + 're' tokenizes 'there' as one token: inference, given the prompt alone, sees ' the' instead.
    merged = [PromptCompletionExample("Answer: the", "re", "d.jsonl", i) for i in range(1, 4)]
    clean = [PromptCompletionExample("Answer:\n", "there", "d.jsonl", i) for i in range(1, 4)]
    info, found = template_check(merged, tokenizer, "raw", [tokenizer.eos_token_id])
    assert info["prompt_prefix_mismatches"] == 3
    assert [(f.severity, f.line) for f in found] == [("warning", 1)] and "prefix of the training tokens" in found[
        0
    ].message
    info, found = template_check(clean, tokenizer, "raw", [tokenizer.eos_token_id])
    assert info["prompt_prefix_mismatches"] == 0 and found == [] and info["ok"]


def test_megabyte_fields_are_checked_at_their_seams(tokenizer, chat) -> None:
    # The scan tokenizes the ends of a long prompt and answer (data.template_check.WINDOW), not the whole text: the
    # merge at the boundary and the missing stop are still found, with the example's own line.
    filler = "lorem ipsum dolor " * 50_000
    merged = [PromptCompletionExample(filler + "Answer: the", "re" + " and so on" * 1000, "d.jsonl", 7)]
    info, found = template_check(merged, tokenizer, "raw", [tokenizer.eos_token_id])
    assert info["prompt_prefix_mismatches"] == 1 and [f.line for f in found] == [7]
    tokenizer.chat_template = NO_END_TEMPLATE
    turns = chat(("user", filler), ("assistant", "hello " + filler), ("user", "and?"), ("assistant", "bye"))
    info, _ = template_check([turns], tokenizer, "auto", [tokenizer.eos_token_id])
    assert info["answers_without_stop"] == 1


# --- the whole check --------------------------------------------------------------------------------


def planted(tmp_path: Path) -> tuple[Path, dict[str, set[int]]]:
    """A chat file with one planted problem per kind, at known lines; the rest are clean, distinct examples."""
    records: list = [chat_record(i) for i in range(12)]
    for i, r in enumerate(records):
        r["messages"][1]["content"] = f"Question {i}: " + " ".join(["alpha", "beta", "gamma", "delta"][: i % 4 + 1]) * (
            i + 1
        )
    lines = [json.dumps(r) for r in records]
    expect: dict[str, set[int]] = {}

    def plant(kind: str, line: str) -> None:
        lines.append(line)
        expect.setdefault(kind, set()).add(len(lines))

    plant("file", '{"messages": [ broken json')
    plant("record", json.dumps({"messages": [{"role": "usr", "content": "x"}, {"role": "assistant", "content": "y"}]}))
    plant(
        "record", json.dumps({"messages": [{"role": "user", "content": "   "}, {"role": "assistant", "content": "y"}]})
    )
    plant("record", json.dumps({"messages": [{"role": "user", "content": "only a question"}]}))
    plant("exact-duplicate", lines[0].replace("Question 0", "QUESTION 0"))
    plant(
        "personal-data",
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "mail me: kim@example.org"},
                    {"role": "assistant", "content": "ok"},
                ]
            }
        ),
    )
    plant(
        "characters",
        json.dumps(
            {"messages": [{"role": "user", "content": "hidden\u202etext"}, {"role": "assistant", "content": "ok"}]}
        ),
    )
    plant(
        "roles",
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": "b"},
                    {"role": "assistant", "content": "c"},
                ]
            }
        ),
    )
    path = tmp_path / "planted.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, expect


def test_check_reports_every_planted_problem_and_nothing_else(tmp_path: Path) -> None:
    path, expect = planted(tmp_path)
    report = check_data(path)
    found: dict[str, set[int]] = {}
    for f in report.findings:
        if f.line is not None:  # an unreadable line is a record problem too; the plant calls it "file"
            found.setdefault("file" if f.line in expect["file"] else f.check, set()).add(f.line)
    assert found == expect
    assert report.exit_code() == 2
    assert report.splits["train"].records == 19 and report.splits["train"].examples == 16


def test_check_clean_config_exits_0_and_strict_warnings_exit_1(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [chat_record(i) for i in range(10)])
    leaky = write_jsonl(tmp_path / "val.jsonl", [chat_record(3)])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  train: {train}\n  validation: {leaky}\n", encoding="utf-8")
    report = check_data(cfg)
    assert [f.check for f in report.findings] == ["leakage"] and report.findings[0].line == 1
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 1
    assert report.splits["validation"].records == 1


def test_check_carves_validation_like_training(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [chat_record(i) for i in range(20)])
    report = check_data(train, overrides=["data.val_fraction=0.25"])
    assert report.splits["train"].examples == 15 and report.splits["validation"].examples == 5


def test_cli_check_json_is_one_object_and_html_is_self_contained(tmp_path: Path) -> None:
    path, _ = planted(tmp_path)
    result = run_cli("data", "check", path, "--json", "--html", tmp_path / "r.html", "--plot", tmp_path / "len.png")
    assert result.returncode == 2, result.stderr
    payload = json.loads(result.stdout)  # exactly one object: anything else on stdout would fail here
    assert payload["errors"] == 4 and payload["splits"]["train"]["records"] == 19
    assert all({"source", "line"} <= set(f) for f in payload["findings"] if f["check"] != "length")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in page and "<script" not in page and "planted.jsonl" in page
    assert (tmp_path / "len.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_check_on_the_quickstart_config_is_clean_of_errors(monkeypatch, capsys) -> None:
    code, stdout, stderr = run_main(monkeypatch, capsys, "data", "check", REPO / "configs/quickstart.yaml", "--strict",
                                    "--set", f"data.train={REPO}/examples/quickstart/train.jsonl",
                                    "--set", f"data.validation={REPO}/examples/quickstart/validation.jsonl")  # fmt: skip
    assert "template: chat template" in stdout and "0 errors, 1 warning " in stdout, stdout + stderr
    assert "validation.jsonl:5: ngram leak" in stdout  # a real one: the same answer to a reworded question
    assert code == 1  # --strict: a warning fails it


@pytest.mark.parametrize(
    "args",
    [
        ["data", "check", "missing.yaml"],
        ["data", "redact", "missing.jsonl", "--out", "o.jsonl"],
        ["data", "split", "missing.jsonl", "--out", "splits"],
        ["data", "dedup", "missing.jsonl", "--out", "o.jsonl"],
        ["data", "leakage", "missing.jsonl", "other.jsonl"],
        ["data", "augment", "missing.jsonl", "--strategy", "noise", "--out", "o.jsonl"],
        ["data", "augment", "{train}", "--strategy", "nonsense", "--out", "o.jsonl"],
        ["data", "split", "{train}", "--val", "1.5", "--out", "splits"],
        ["data", "leakage", "{train}", "{train}", "--near", "2"],
    ],
)
def test_every_data_command_ends_bad_input_with_a_message_and_exit_2(args, tmp_path, monkeypatch, capsys) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [chat_record(i) for i in range(4)])
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run_main(monkeypatch, capsys, *[a.format(train=train) for a in args])
    assert code == 2
    assert stderr.startswith("error:") and "Traceback" not in stderr, stderr


def test_cli_check_non_utf8_file(tmp_path: Path, monkeypatch, capsys) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    code, stdout, _ = run_main(monkeypatch, capsys, "data", "check", path, "--json")
    payload = json.loads(stdout)
    assert code == 2
    assert [(f["line"], "UTF-8" in f["message"]) for f in payload["findings"] if f["severity"] == "error"] == [
        (2, True)
    ]
