"""Token-classification data: CoNLL parsing, tokens + tags records, every error with its file:line:field, and
the alignment of word tags to sub-word tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import write_jsonl
from transformers import BertTokenizerFast

from lmtune.config import ModelConfig, load_config
from lmtune.data.conll import TokensExample, bio_problem, parse_conll
from lmtune.data.formats import detect_format, normalize
from lmtune.data.load import load_records
from lmtune.data.ner import align, entity_report, entity_scores, tag_names, tokenize_tokens, word_tags
from lmtune.data.types import IGNORE, Record
from lmtune.errors import DataError, LmtuneError
from lmtune.model import load_tokenizer
from lmtune.tasks import TASKS, TokenizeOptions

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


@pytest.fixture(scope="module")
def wordpiece() -> BertTokenizerFast:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "john", "lives", "in", "paris", "##ville", "."]
    return BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)


def test_conll_sentences_tags_in_the_last_column_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "train.conll"
    path.write_text(CONLL.replace("\n", "\r\n"), encoding="utf-8")  # CRLF files read the same
    records = load_records(str(path))
    assert [r.data for r in records] == [
        {"tokens": ["EU", "rejects", "German", "call"], "tags": ["B-ORG", "O", "B-MISC", "O"]},
        {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]},
    ]
    assert [r.line for r in records] == [3, 8]  # the line of each sentence's first token
    assert detect_format(records[0], {}) == "token_classification"
    (first, second) = normalize(records, format="auto")
    assert first == TokensExample(("EU", "rejects", "German", "call"), ("B-ORG", "O", "B-MISC", "O"), str(path), 3)
    assert second.text == "Peter Blackburn"


def test_conll_line_with_one_column_names_its_line(tmp_path: Path) -> None:
    text = "John B-PER\nlives\nin O\n\nParis B-LOC\n\nOslo\n"
    with pytest.raises(LmtuneError, match=r"2 problems in t.conll:\n  t.conll:2: one column \('lives'\)") as info:
        parse_conll(text, "t.conll")
    assert "t.conll:7: one column ('Oslo')" in str(info.value)
    skipped: list[DataError] = []
    kept = parse_conll(text, "t.conll", skipped)  # `lmtune data check`: reported, and the broken sentences left out
    assert [r.data["tokens"] for r in kept] == [["Paris"]] and [e.line for e in skipped] == [2, 7]


def test_record_errors_name_file_line_and_field(tmp_path: Path) -> None:
    records = [
        Record({"words": ["a", "b"], "ner": ["O"]}, "d.jsonl", 1),
        Record({"words": [], "ner": []}, "d.jsonl", 2),
        Record({"words": ["a", "b"], "ner": ["O", "PER"]}, "d.jsonl", 3),
        Record({"words": ["a"], "ner": [3]}, "d.jsonl", 4),
        Record({"words": ["a", " "], "ner": ["O", "O"]}, "d.jsonl", 5),
        Record({"words": "a b", "ner": ["O", "O"]}, "d.jsonl", 6),
    ]
    with pytest.raises(LmtuneError) as info:
        normalize(records, format="token_classification", columns={"tokens": "words", "tags": "ner"})
    message = str(info.value)
    for expected in [
        "d.jsonl:1: field 'ner': has 1 tags for 2 tokens",
        "d.jsonl:2: field 'words': is empty (a sentence needs at least one token)",
        "d.jsonl:3: field 'ner[1]': 'PER' is not a BIO tag",
        "d.jsonl:4: field 'ner[0]': is an integer id",
        "d.jsonl:5: field 'words[1]': is empty",
        "d.jsonl:6: field 'words': must be a list of strings, got a string",
    ]:
        assert expected in message, message
    # In a CoNLL file a bad tag is reported on its own line.
    with pytest.raises(LmtuneError, match=r"t.conll:4: field 'tags\[2\]': 'LOC' is not a BIO tag"):
        normalize(parse_conll("\nJohn B-PER\nin O\nParis LOC\n", "t.conll"), format="token_classification")


def test_bio_family_is_accepted_and_i_after_o_too() -> None:
    for tag in ("O", "B-PER", "I-LOC", "E-ORG", "S-MISC", "I-PER"):
        assert bio_problem(tag) is None
    for tag in ("PER", "B-", "X-PER", "o"):
        assert bio_problem(tag) is not None
    # IOB1 (I- opens an entity after O) is accepted: seqeval's default mode reads it as an entity.
    (ex,) = normalize([Record({"tokens": ["in", "Paris"], "tags": ["O", "I-LOC"]}, "d.jsonl", 1)], format="auto")
    assert ex.tags == ("O", "I-LOC")


def test_tag_names_put_o_first_then_by_type() -> None:
    examples = [TokensExample(("a",) * 5, ("I-PER", "B-LOC", "O", "B-PER", "I-LOC"), "d", 1)]
    assert tag_names(examples) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_alignment_labels_the_first_piece_of_each_word(wordpiece: BertTokenizerFast) -> None:
    ex = TokensExample(("John", "lives", "in", "Parisville", "."), ("B-PER", "O", "O", "B-LOC", "O"), "d", 1)
    tags = ["O", "B-LOC", "B-PER"]
    (tok,), stats = tokenize_tokens([ex], wordpiece, tags, max_length=32)
    pieces = wordpiece.convert_ids_to_tokens(tok.input_ids)
    assert pieces == ["[CLS]", "john", "lives", "in", "paris", "##ville", ".", "[SEP]"]
    assert tok.labels == [IGNORE, 2, 0, 0, 1, IGNORE, 0, IGNORE]
    assert stats.trained_tokens == 5 and stats.kept == 1
    # The same words as transformers' is_split_into_words + word_ids give (the Hugging Face recipe).
    enc = wordpiece(list(ex.tokens), is_split_into_words=True)
    assert enc["input_ids"] == tok.input_ids and align(ex.tokens, wordpiece)[1] == enc.word_ids()


def test_alignment_on_a_byte_level_bpe_tokenizer_matches_the_plain_sentence() -> None:
    """GPT-2/Llama-style tokenizers: the words are tokenized as the sentence is (with their leading spaces), not
    one by one as is_split_into_words without add_prefix_space would."""
    tokenizer = load_tokenizer(ModelConfig(name="preset:tiny-chat"))
    words = ("John", "lives", "in", "Paris")
    ids, owners = align(words, tokenizer)
    assert ids == tokenizer("John lives in Paris", add_special_tokens=True)["input_ids"]
    firsts = [owners.index(w) for w in range(len(words))]
    assert firsts == sorted(firsts) and all(owners[i] == w for w, i in enumerate(firsts))
    assert word_tags(owners, [1] * len(ids), len(words) + 1, {0: "O", 1: "B-PER"}) == ["B-PER"] * 4 + ["O"]


def test_unknown_validation_tag_truncation_and_drop(wordpiece: BertTokenizerFast) -> None:
    with pytest.raises(DataError, match=r"v.conll:12: field 'tags\[2\]': unknown tag 'B-ORG'"):
        tokenize_tokens(
            [TokensExample(("a", "b", "c"), ("O", "O", "B-ORG"), "v.conll", 10)], wordpiece, ["O"], max_length=9
        )
    long = TokensExample(("john",) * 10, ("O",) * 10, "d", 1)
    (tok,), stats = tokenize_tokens([long], wordpiece, ["O"], max_length=6)
    assert len(tok.input_ids) == 6 and tok.input_ids[-1] == wordpiece.sep_token_id
    assert stats.truncated == 1 and stats.trained_tokens == 4 and stats.lengths == [12]
    kept, stats = tokenize_tokens([long], wordpiece, ["O"], max_length=6, overlong="drop")
    assert kept == [] and stats.dropped == 1
    with pytest.raises(LmtuneError, match="for task token_classification, not sft"):
        TASKS["sft"].tokenize([long], wordpiece, TokenizeOptions(max_length=8))


def test_entity_scores_on_a_hand_checked_case() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    # PER right; LOC predicted as ORG (one wrong, one missed); ORG cut short is still B-ORG alone: right.
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    scores = entity_scores(gold, predicted)
    # 3 gold entities, 3 predicted, 2 match: precision 2/3, recall 2/3; 5 of 6 tags right.
    assert scores == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "accuracy": 5 / 6})
    # A boundary error is a miss and a false alarm: gold [John Smith], predicted [John].
    assert entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])["f1"] == 0.0
    per_type = entity_report(gold, predicted)
    assert per_type["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert per_type["ORG"]["precision"] == 0.5 and per_type["PER"]["f1"] == 1.0


def test_config_defaults_and_refusals(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"tokens": ["a"], "tags": ["O"]}])
    cfg = load_config({"task": "token_classification", "data": {"train": str(data)}})
    assert cfg.data.format == "token_classification"
    with pytest.raises(LmtuneError, match="packing"):
        load_config({"task": "token_classification", "data": {"train": str(data), "packing": True}})
    with pytest.raises(LmtuneError, match="token_classification data is for task token_classification, not sft"):
        load_config({"data": {"train": str(data), "format": "token_classification"}})
    with pytest.raises(LmtuneError, match=r"set data\.format: token_classification"):
        load_config({"task": "token_classification", "data": {"train": str(data), "format": "text"}})


def test_data_check_reports_every_bad_line_and_counts_tags(tmp_path: Path) -> None:
    from lmtune.api.check import check_data

    path = tmp_path / "bad.conll"
    path.write_text("John B-PER\nlives\n\nin O\nParis LOC\n\nOslo I-LOC\nis O\ncold O\n", encoding="utf-8")
    report = check_data(str(path), near=None)
    errors = {(f.line, f.field) for f in report.errors}
    assert errors == {(2, None), (5, "tags[1]")} and report.exit_code() == 2
    assert report.splits["train"].labels == {"O": 2, "I-LOC": 1}
    (iob1,) = [f for f in report.findings if f.check == "tags" and f.severity == "info"]
    assert (iob1.line, iob1.field) == (7, "tags[0]")
