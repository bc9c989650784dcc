from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from support import REPO, run_cli, write_jsonl

from lmtune.data.dedup import (
    _all_pairs,
    _lsh_pairs,
    _size_neighbours,
    dedup_file,
    find_duplicates,
    jaccard,
    lsh_params,
    normalized,
    record_docs,
    shingle_set,
    similar_pairs,
)
from lmtune.data.load import load_records
from lmtune.data.records_io import file_sha256
from lmtune.data.text import Doc, normalize_text
from lmtune.data.types import Record
from lmtune.errors import DataError, LmtuneError

PLANTED = REPO / "tests" / "assets" / "planted"
EXPECTED = json.loads((PLANTED / "expected.json").read_text(encoding="utf-8"))


def planted_docs(name: str) -> list[Doc]:
    return record_docs(load_records(str(PLANTED / name))).whole


def test_every_planted_duplicate_is_found_and_nothing_else():
    found = {(d.kind, d.doc.line, d.of.line) for d in find_duplicates(planted_docs("train.jsonl"))}
    expected = {(d["kind"], d["line"], d["of"]) for d in EXPECTED["dedup"]["duplicates"]}
    assert found == expected


def test_near_similarity_is_the_exact_jaccard_of_the_shingle_sets_and_reaches_the_threshold():
    near = [d for d in find_duplicates(planted_docs("train.jsonl")) if d.kind == "near"]
    assert len(near) == 5
    for d in near:
        assert d.similarity == jaccard(shingle_set(d.doc.text), shingle_set(d.of.text))
        assert 0.85 <= d.similarity < 1


@pytest.mark.parametrize("name", ["validation.jsonl", "test.jsonl", "benchmark.jsonl"])
def test_files_without_planted_duplicates_have_none(name):
    assert find_duplicates(planted_docs(name)) == []


def test_exact_only_finds_the_exact_duplicates():
    found = {(d.kind, d.doc.line) for d in find_duplicates(planted_docs("train.jsonl"), near=None)}
    assert found == {("exact", d["line"]) for d in EXPECTED["dedup"]["duplicates"] if d["kind"] == "exact"}


def test_exact_duplicates_ignore_case_whitespace_and_punctuation_only():
    docs = [Doc(t, "f", i + 1) for i, t in enumerate(["Hello, World!", "  hello   world ", "Hello World again"])]
    assert [(d.doc.line, d.of.line) for d in find_duplicates(docs, near=None)] == [(2, 1)]


def test_near_duplicates_are_not_chained_through_a_dropped_doc():
    a = "the quick brown fox jumps over the lazy dog while a small cat sleeps on the warm red mat"
    b = a.replace("brown", "grey")  # one word changed
    c = b.replace("small", "big")  # and a second one
    sa, sb, sc = (shingle_set(t) for t in (a, b, c))
    threshold = 0.8
    assert jaccard(sa, sb) >= threshold and jaccard(sb, sc) >= threshold > jaccard(sa, sc)
    docs = [Doc(t, "f", i + 1) for i, t in enumerate([a, b, c])]
    assert [(d.doc.line, d.of.line) for d in find_duplicates(docs, near=threshold)] == [(2, 1)]


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.85, 0.9, 0.95])
def test_lsh_bands_propose_a_pair_at_the_threshold_with_high_probability(threshold):
    bands, rows = lsh_params(threshold)
    assert bands * rows <= 128
    assert 1 - (1 - threshold**rows) ** bands >= 0.999


def test_one_thousand_dialogues_of_150_words_take_well_under_ten_seconds():
    rng = random.Random(0)
    vocabulary = [f"w{i}" for i in range(3000)]
    docs = [Doc(" ".join(rng.choices(vocabulary, k=150)), "f", i + 1) for i in range(1000)]
    docs[500] = Doc(docs[10].text.replace(docs[10].text.split()[5], "changed", 1), "f", 501)
    started = time.perf_counter()
    found = find_duplicates(docs)
    assert time.perf_counter() - started < 5
    assert [(d.kind, d.doc.line, d.of.line) for d in found] == [("near", 501, 11)]


def _brute_force(sets, threshold, keys=None):
    found = {}
    for i in range(len(sets)):
        for j in range(i):
            if frozenset({""}) in (sets[i], sets[j]) or (keys and keys[i] == keys[j]):
                continue
            if jaccard(sets[i], sets[j]) >= threshold:
                found.setdefault(i, []).append((j, jaccard(sets[i], sets[j])))
    return found


def _edited_docs(count: int) -> list[frozenset[str]]:
    """Docs of 5 to 400 words, a third of them an earlier doc with a few words changed."""
    rng = random.Random(3)
    words = [f"w{i}" for i in range(400)]
    texts: list[str] = []
    for _ in range(count):
        if texts and rng.random() < 0.33:
            base = rng.choice(texts).split()
            for _ in range(rng.randint(0, 3)):
                base[rng.randrange(len(base))] = rng.choice(words)
            texts.append(" ".join(base))
        else:
            texts.append(" ".join(rng.choices(words, k=rng.randint(5, 400))))
    texts[7] = ""
    return [shingle_set(t) for t in texts]


@pytest.mark.parametrize("threshold", [0.5, 0.85])
def test_exact_pairs_and_lsh_both_find_every_pair_brute_force_finds(threshold):
    sets = _edited_docs(150)
    keys = [i % 3 for i in range(150)]
    for k in (None, keys):
        expected = _brute_force(sets, threshold, k)
        docs = _size_neighbours(sets, threshold)
        assert _all_pairs(sets, docs, threshold, k) == expected
        assert {i: sorted(m) for i, m in _lsh_pairs(sets, docs, threshold, k).items()} == expected
        assert {i: sorted(m) for i, m in similar_pairs(sets, threshold, k).items()} == expected


def test_a_doc_with_no_other_of_its_size_is_neither_hashed_nor_compared():
    huge = frozenset(f"w{i}" for i in range(100_000))
    sets = [shingle_set("a b c d"), shingle_set("a b c e"), huge, frozenset(list(huge)[:84_000]), shingle_set("x")]
    assert _size_neighbours(sets, 0.85) == [0, 1]  # 84,000 / 100,000 < 0.85: the two large ones cannot match
    assert _size_neighbours(sets, 0.8) == [0, 1, 2, 3]


def test_fast_normalisation_equals_normalize_text():
    rng = random.Random(1)
    ascii_chars = [chr(c) for c in range(128)]
    samples = ["".join(rng.choices(ascii_chars, k=40)) for _ in range(3000)]
    samples += ["Ça   VA? Straße\u00a0ﬁne", "I ' Ve — done_it!", "", "  \x1c\x1f  "]
    assert [normalized(t) for t in samples] == [normalize_text(t) for t in samples]


def test_character_shingles_are_available_too():
    a, b = "Water the cactus every two weeks.", "Water the cactus every two weeks!!"
    assert shingle_set(a, "char", 5) == shingle_set(b, "char", 5)
    assert "water" in shingle_set(a, "char", 5) and "water the" in shingle_set(a, "word", 2)


# --- record text ---------------------------------------------------------------------------------


def test_instruction_records_are_compared_without_the_alpaca_boilerplate():
    records = [Record({"instruction": "Add 2 and 3.", "input": "", "output": "5"}, "f.jsonl", 1)]
    texts = record_docs(records)
    assert texts.shape == "instruction"
    assert "Below is an instruction" not in texts.whole[0].text
    assert texts.inputs is not None and texts.inputs[0].text.strip() == "Add 2 and 3."


def test_undetectable_shape_lists_the_keys_and_suggests_fields():
    records = [Record({"id": "x1", "dialogue": "A long conversation here.", "summary": "Short."}, "d.jsonl", 1)]
    with pytest.raises(LmtuneError, match=r"d\.jsonl.*line 1.*\['dialogue', 'id', 'summary'\]") as info:
        record_docs(records)
    assert "--fields dialogue,summary" in str(info.value)


def test_fields_are_joined_and_a_missing_one_names_file_line_and_field():
    records = [Record({"a": "one", "b": "two"}, "d.jsonl", 1), Record({"a": "three"}, "d.jsonl", 2)]
    with pytest.raises(DataError, match=r"d\.jsonl:2: field 'b': missing"):
        record_docs(records, fields=["a", "b"])
    assert record_docs(records[:1], fields=["a", "b"]).whole[0].text == "one\n\ntwo"


# --- dedup_file ----------------------------------------------------------------------------------


def test_dedup_file_writes_the_kept_records_unchanged_and_in_order(tmp_path):
    out = tmp_path / "dedup.jsonl"
    result = dedup_file(str(PLANTED / "train.jsonl"), str(out))
    dropped = {d["line"] for d in EXPECTED["dedup"]["duplicates"]}
    originals = load_records(str(PLANTED / "train.jsonl"))
    assert [r.data for r in load_records(str(out))] == [r.data for r in originals if r.line not in dropped]
    assert (result.records, result.kept, result.counts()) == (53, 45, {"exact": 3, "near": 5})
    assert result.sha256 == file_sha256(out)


def test_dedup_file_keeps_the_input_format(tmp_path):
    source = tmp_path / "d.csv"
    source.write_text("text,label\nHello there friend,a\nhello THERE friend!,b\nSomething else,a\n", encoding="utf-8")
    dedup_file(str(source), str(tmp_path / "out.csv"))
    assert (tmp_path / "out.csv").read_text(encoding="utf-8") == "text,label\nHello there friend,a\nSomething else,a\n"


def test_dedup_file_refuses_to_overwrite_and_never_writes_over_its_input(tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": "a b c"}, {"text": "A b c"}])
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n", encoding="utf-8")
    with pytest.raises(LmtuneError, match="already exists"):
        dedup_file(str(source), str(out))
    assert out.read_text(encoding="utf-8") == "keep me\n"
    assert dedup_file(str(source), str(out), overwrite=True).kept == 1
    with pytest.raises(LmtuneError, match="is the input file"):
        dedup_file(str(source), str(source), overwrite=True)


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_dedup_json_is_one_object_with_every_removed_line(tmp_path):
    out = tmp_path / "out.jsonl"
    result = run_cli("data", "dedup", PLANTED / "train.jsonl", "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # exactly one JSON document: json.loads fails on anything extra
    assert report["removed"] == {"exact": 3, "near": 5} and report["kept"] == 45
    assert sorted(d["line"] for d in report["duplicates"]) == sorted(d["line"] for d in EXPECTED["dedup"]["duplicates"])
    assert all(d["source"].endswith("train.jsonl") and "line" in d["of"] for d in report["duplicates"])


def test_cli_dedup_human_output_and_exact_only(tmp_path):
    result = run_cli("data", "dedup", PLANTED / "train.jsonl", "--out", tmp_path / "o.jsonl", "--exact-only")
    assert result.returncode == 0, result.stderr
    assert "train.jsonl:8: exact duplicate of line 4" in result.stdout
    assert "removed 3 exact and 0 near duplicates: kept 50 of 53 records" in result.stdout


def test_cli_dedup_bad_input_exits_2_naming_the_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    result = run_cli("data", "dedup", bad, "--out", tmp_path / "o.jsonl")
    assert result.returncode == 2
    assert f"{bad}:2" in result.stderr and "Traceback" not in result.stderr
    assert not Path(tmp_path / "o.jsonl").exists()
