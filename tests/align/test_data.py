"""Preference pairs and prompts: the record shapes, HH transcripts, column mapping and file:line:field errors."""

from __future__ import annotations

import pytest

from lmtune.data.preferences import parse_preferences, parse_prompts, split_transcript, to_trl
from lmtune.data.types import Record
from lmtune.errors import LmtuneError


def records(*rows: dict) -> list[Record]:
    return [Record(row, "pairs.jsonl", i) for i, row in enumerate(rows, start=1)]


def test_explicit_pairs_are_read_as_strings() -> None:
    pairs, warnings = parse_preferences(records({"prompt": "Hi?", "chosen": " Hello.", "rejected": " Go away."}))
    assert (pairs[0].prompt, pairs[0].chosen, pairs[0].rejected, pairs[0].line) == ("Hi?", " Hello.", " Go away.", 1)
    assert warnings == []
    assert to_trl(pairs[0], chat=False) == {"prompt": "Hi?", "chosen": " Hello.", "rejected": " Go away."}
    assert to_trl(pairs[0], chat=True)["chosen"] == [{"role": "assistant", "content": " Hello."}]


def test_hh_transcripts_split_at_the_last_assistant_turn() -> None:
    dialogue = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: A joke?\n\nAssistant:"
    pairs, _ = parse_preferences(records({"chosen": dialogue + " Sure: ...", "rejected": dialogue + " No."}))
    assert pairs[0].prompt == dialogue
    assert (pairs[0].chosen, pairs[0].rejected) == (" Sure: ...", " No.")
    assert split_transcript("no turns here") is None


def test_transcripts_with_different_prompts_are_an_error() -> None:
    rows = records({"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"})
    with pytest.raises(LmtuneError) as e:
        parse_preferences(rows)
    assert "pairs.jsonl:1: field 'rejected'" in str(e.value) and "differ before" in str(e.value)


def test_every_bad_record_is_named_by_file_line_and_field() -> None:
    rows = records(
        {"prompt": "ok", "chosen": "a", "rejected": "b"},
        {"prompt": "p", "rejected": "b"},  # no chosen
        {"prompt": "p", "chosen": "   ", "rejected": "b"},  # empty answer
        {"prompt": 3, "chosen": "a", "rejected": "b"},  # not a string
        {"chosen": "plain text", "rejected": "other"},  # no prompt and not a transcript
    )
    with pytest.raises(LmtuneError) as e:
        parse_preferences(rows)
    text = str(e.value)
    assert "5 problems" in text  # line 5: neither answer is a transcript
    assert "pairs.jsonl:2: field 'chosen': missing" in text
    assert "pairs.jsonl:3: field 'chosen': is empty" in text
    assert "pairs.jsonl:4: field 'prompt'" in text
    assert "pairs.jsonl:5: field 'chosen'" in text and "pairs.jsonl:5: field 'rejected'" in text


def test_identical_answers_are_left_out_with_a_warning() -> None:
    rows = records(
        {"prompt": "p", "chosen": "same", "rejected": "same"}, {"prompt": "p", "chosen": "a", "rejected": "b"}
    )
    pairs, warnings = parse_preferences(rows)
    assert [p.line for p in pairs] == [2]
    assert "1 pairs whose chosen and rejected answers are identical" in warnings[0] and "pairs.jsonl:1" in warnings[0]


def test_columns_are_remapped_and_unknown_names_refused() -> None:
    pairs, _ = parse_preferences(
        records({"question": "q", "good": "a", "bad": "b"}), {"prompt": "question", "chosen": "good", "rejected": "bad"}
    )
    assert (pairs[0].prompt, pairs[0].chosen, pairs[0].rejected) == ("q", "a", "b")
    with pytest.raises(LmtuneError, match="does not read"):
        parse_preferences(records({"prompt": "q", "chosen": "a", "rejected": "b"}), {"completion": "x"})


def test_chat_messages_are_conversational() -> None:
    row = {
        "prompt": [{"role": "user", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "Hello"}],
        "rejected": [{"role": "assistant", "content": "Bye"}],
    }
    pairs, _ = parse_preferences(records(row))
    assert to_trl(pairs[0], chat=False) == row
    bad = {**row, "chosen": [{"role": "user", "content": "Hello"}]}
    with pytest.raises(LmtuneError, match="must end with an assistant message"):
        parse_preferences(records(bad))


def test_prompts_for_rlhf() -> None:
    prompts = parse_prompts(records({"prompt": "Tell a story."}, {"messages": [{"role": "user", "content": "Hi"}]}))
    assert prompts[0].prompt == "Tell a story."
    assert to_trl(prompts[1], chat=False) == {"prompt": [{"role": "user", "content": "Hi"}]}
    with pytest.raises(LmtuneError) as e:
        parse_prompts(records({"text": "x"}))
    assert "pairs.jsonl:1: field 'prompt': missing" in str(e.value)
