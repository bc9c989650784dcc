from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support import REPO, run_cli, write_jsonl

from lmtune.data.dedup import jaccard, shingle_set
from lmtune.data.formats import PromptCompletionExample, TextExample
from lmtune.data.leakage import Split, cheap_leaks, find_leaks, leakage_report, split_names, word_ngrams
from lmtune.data.text import Doc, normalize_text
from lmtune.errors import DataError, LmtuneError

PLANTED = REPO / "tests" / "assets" / "planted"
EXPECTED = json.loads((PLANTED / "expected.json").read_text(encoding="utf-8"))
FILES = [str(PLANTED / name) for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "benchmark.jsonl")]


@pytest.fixture(scope="module")
def report():
    return leakage_report(FILES)


def record_at(source: str, line: int) -> dict:
    return json.loads(Path(source).read_text(encoding="utf-8").splitlines()[line - 1])


def short(source: str, line: int) -> str:
    return f"{source.rsplit('/', 1)[-1]}:{line}"


def test_every_planted_leak_is_reported_and_nothing_else(report):
    found = {(k.kind, short(k.a.source, k.a.line), short(k.b.source, k.b.line)) for k in report.leaks}
    assert found == {(k["kind"], k["a"], k["b"]) for k in EXPECTED["leaks"]}
    assert report.counts() == {"exact": 3, "input-exact": 1, "near": 2, "input-near": 1, "ngram": 2, "total": 9}


def test_split_names_and_record_counts(report):
    assert {name: s["records"] for name, s in report.splits.items()} == {
        "train": 53,
        "validation": 19,
        "test": 18,
        "benchmark": 6,
    }
    assert all(k.a.split != k.b.split for k in report.leaks)


def test_near_similarity_is_the_exact_jaccard(report):
    for leak in report.leaks:
        if leak.kind in ("near", "input-near"):
            a, b = record_at(leak.a.source, leak.a.line), record_at(leak.b.source, leak.b.line)
            if leak.kind == "input-near":
                a_text, b_text = a["prompt"], b["prompt"]
            else:
                a_text, b_text = (f"{r['prompt']}\n\n{r['completion']}" for r in (a, b))
            assert leak.similarity == jaccard(shingle_set(a_text), shingle_set(b_text)) >= 0.8


def test_ngram_leaks_carry_a_shared_13_gram_and_the_covered_share(report):
    ngram = [k for k in report.leaks if k.kind == "ngram"]
    assert len(ngram) == 2
    for leak in ngram:
        assert leak.shared_ngrams >= 1 and len(leak.example.split()) == 13
        assert 0 < leak.similarity < 1
    printing = next(k for k in ngram if k.b.split == "test")
    assert printing.example.startswith("johannes gutenberg combined movable metal type")
    assert printing.shared_ngrams == 20 - 13 + 1  # the copied passage is 20 words long
    train_text, test_text = record_at(FILES[0], printing.a.line), record_at(FILES[2], printing.b.line)
    sizes = [len(word_ngrams(f"{r['prompt']} {r['completion']}", 13)) for r in (train_text, test_text)]
    assert printing.similarity == 8 / min(sizes)
    assert printing.example in normalize_text(test_text["completion"])


def test_word_ngrams_are_distinct_normalised_and_ordered():
    assert word_ngrams("A b, C. a B c d", 3) == ["a b c", "b c a", "c a b", "b c d"]
    assert word_ngrams("too short", 13) == []


def test_template_text_shared_by_many_docs_is_not_an_ngram_leak():
    header = "You are a careful assistant. Answer in one sentence and cite the source you used for it."
    rng_words = [f"topic{i} detail{i} fact{i} note{i} point{i} item{i} idea{i} claim{i}" for i in range(30)]
    train = [Doc(f"{header} {rng_words[i]}", "t", i + 1) for i in range(15)]
    val = [Doc(f"{header} {rng_words[15 + i]}", "v", i + 1) for i in range(15)]
    assert find_leaks([Split("train", train), Split("validation", val)], near=None) == []


def test_disabling_checks():
    splits = [Split("train", [Doc("one two three four", "t", 1)]), Split("validation", [Doc("one two three", "v", 1)])]
    assert find_leaks(splits, near=None, ngram=None) == []
    assert [k.kind for k in find_leaks(splits, near=0.5, ngram=None)] == ["near"]


def test_split_names_use_file_stems_after_train_validation_test():
    names = split_names(["a.jsonl", "b.jsonl", "c.jsonl", "bench/gsm8k.jsonl", "other/gsm8k.jsonl"])
    assert names == ["train", "validation", "test", "gsm8k", "gsm8k-2"]


# --- cheap_leaks ---------------------------------------------------------------------------------


def test_cheap_leaks_finds_exact_and_input_matches_only():
    train = [
        PromptCompletionExample("What is 2+2?", "4", "train.jsonl", 1),
        PromptCompletionExample("Name a colour.", "Blue", "train.jsonl", 2),
        PromptCompletionExample("Capital of France?", "Paris is the capital.", "train.jsonl", 3),
    ]
    validation = [
        PromptCompletionExample("what is 2 + 2", "4", "val.jsonl", 1),  # the same after normalisation
        PromptCompletionExample("Name a colour.", "Red", "val.jsonl", 2),  # same prompt, other answer
        PromptCompletionExample("Capital of Francee?", "Paris is the capital.", "val.jsonl", 3),  # near only
    ]
    leaks = cheap_leaks(train, validation)
    assert [(k.kind, k.a.line, k.b.line) for k in leaks] == [("exact", 1, 1), ("input-exact", 2, 2)]
    assert leaks[0].to_dict() == {
        "kind": "exact",
        "similarity": 1.0,
        "a": {"split": "train", "source": "train.jsonl", "line": 1},
        "b": {"split": "validation", "source": "val.jsonl", "line": 1},
    }


def test_cheap_leaks_accepts_docs_and_text_examples():
    docs = [Doc("Same text.", "t", 1)]
    assert [k.kind for k in cheap_leaks(docs, [Doc("same TEXT", "v", 4)])] == ["exact"]
    texts = [TextExample("Same text.", "t", 1)]
    assert [k.kind for k in cheap_leaks(texts, [TextExample("same text", "v", 1)])] == ["exact"]


def test_cheap_leaks_takes_milliseconds_for_ten_thousand_examples():
    train = [PromptCompletionExample(f"question {i} about topic {i * 7}", f"answer {i}", "t", i) for i in range(10_000)]
    val = [PromptCompletionExample(f"question {i} about topic {i * 7}", "x", "v", i) for i in range(9_990, 10_990)]
    started = time.perf_counter()
    leaks = cheap_leaks(train, val)
    assert time.perf_counter() - started < 1.0  # about 0.1 s here; the bound leaves room for a busy machine
    assert len(leaks) == 10 and {k.kind for k in leaks} == {"input-exact"}


# --- files and CLI -------------------------------------------------------------------------------


def test_fields_pick_the_compared_text(tmp_path):
    train = write_jsonl(tmp_path / "a.jsonl", [{"id": "1", "dialogue": "Hi there, how are you?", "summary": "x"}])
    val = write_jsonl(tmp_path / "b.jsonl", [{"id": "2", "dialogue": "hi there how are you", "summary": "y"}])
    report = leakage_report([str(train), str(val)], fields=["dialogue"])
    assert [k.kind for k in report.leaks] == ["exact"]
    with pytest.raises(LmtuneError, match="--fields"):
        leakage_report([str(train), str(val)])
    with pytest.raises(DataError, match=r"a\.jsonl:1: field 'text': missing"):
        leakage_report([str(train), str(val)], fields=["text"])


def test_needs_two_files():
    with pytest.raises(LmtuneError, match="at least two files"):
        leakage_report(FILES[:1])


def test_cli_json_is_one_object_and_strict_exits_1():
    result = run_cli("data", "leakage", *FILES, "--json", "--strict")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"splits", "leaks", "counts", "seconds"}
    assert report["counts"]["total"] == len(report["leaks"]) == len(EXPECTED["leaks"])
    assert report["splits"]["benchmark"] == {"source": FILES[3], "records": 6}
    assert {"kind", "similarity", "a", "b"} <= set(report["leaks"][0])
    assert {"split", "source", "line"} == set(report["leaks"][0]["a"])


def test_cli_table_is_capped_and_clean_files_exit_0_with_strict():
    result = run_cli("data", "leakage", *FILES, "--show", "2")
    assert result.returncode == 0, result.stderr
    assert "train:2" in result.stdout and "validation:4" in result.stdout
    assert "... and 7 more leaks" in result.stdout
    assert "leaks: 3 exact, 1 input-exact, 2 near, 1 input-near, 2 ngram" in result.stdout
    clean = run_cli("data", "leakage", FILES[0], PLANTED / "benchmark.jsonl", "--ngram", "0", "--near", "0", "--strict")
    assert clean.returncode == 1  # the exact copy of a training example is still found
    clean = run_cli("data", "leakage", FILES[1], FILES[3], "--strict")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "clean: no leaks" in clean.stdout


def test_cli_bad_input_exits_2_naming_the_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    result = run_cli("data", "leakage", FILES[0], missing)
    assert result.returncode == 2 and str(missing) in result.stderr and "Traceback" not in result.stderr
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"id": 1, "body": "some text"}])
    result = run_cli("data", "leakage", FILES[0], odd, "--json")
    assert result.returncode == 2 and str(odd) in result.stderr and "--fields" in result.stderr
    assert result.stdout == ""


def test_chat_records_compare_whole_conversations_and_user_turns(tmp_path):
    def chat(user: str, answer: str) -> dict:
        system = {"role": "system", "content": "You are a helpful assistant."}
        return {"messages": [system, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]}

    train = write_jsonl(
        tmp_path / "train.jsonl", [chat("What is the capital of Peru?", "Lima."), chat("Hi!", "Hello.")]
    )
    val = write_jsonl(tmp_path / "val.jsonl", [chat("what is the capital of peru", "It is Lima, on the coast.")])
    leaks = leakage_report([str(train), str(val)]).leaks
    assert [(k.kind, k.a.line, k.b.line) for k in leaks] == [("input-exact", 1, 1)]
