import json
from pathlib import Path

import pytest
from support import run_cli, write_jsonl

from lmtune.data.load import load_records
from lmtune.data.pii import find_pii, redact, redact_file
from lmtune.errors import LmtuneError

PLANTED = {
    "email": ["jane.doe@example.com", "ops+alerts@mail.example.co.uk"],
    "phone": ["+44 20 7946 0958", "(415) 555-2671", "+49 30 901820"],
    "card": ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"],
    "iban": ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000"],
}
# Look-alikes that must not be flagged: failed checksums, dates, versions, ids, code.
CLEAN = [
    "Order 12345678 shipped on 2023-05-01.",
    "ISBN 978-3-16-148410-0 and version 1.12.3.",
    "Card-like but wrong checksum: 4111 1111 1111 1112.",
    "IBAN-like but wrong: GB82 WEST 1234 5698 7654 33.",
    "pi is 3.14159265358979 and e is 2.718281828459045",
    "x = a@b; decorators like @property are code",
    "The year 1999 had 365 days and 52 weeks.",
]


@pytest.mark.parametrize(("kind", "value"), [(k, v) for k, vs in PLANTED.items() for v in vs])
def test_finds_every_planted_kind(kind: str, value: str) -> None:
    text = f"Contact: {value}, thanks."
    matches = find_pii(text)
    assert [(m.kind, m.text) for m in matches] == [(kind, value)]


@pytest.mark.parametrize("text", CLEAN)
def test_look_alikes_are_not_flagged(text: str) -> None:
    assert find_pii(text) == []


def test_redact_masks_and_keeps_the_rest() -> None:
    text, matches = redact("Mail jane.doe@example.com or call (415) 555-2671 today.")
    assert text == "Mail [EMAIL] or call [PHONE] today."
    assert [m.kind for m in matches] == ["email", "phone"]
    assert redact("nothing here")[0] == "nothing here"


def test_masked_sample_does_not_repeat_the_data() -> None:
    (m,) = find_pii("card 4111 1111 1111 1111")
    assert "1111 1111" not in m.masked and m.masked.startswith("41")


def test_redact_file_masks_chat_messages_and_reports_lines(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "I am jane.doe@example.com"},
                    {"role": "assistant", "content": "ok"},
                ]
            },
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            {
                "messages": [
                    {"role": "user", "content": "pay 4111 1111 1111 1111"},
                    {"role": "assistant", "content": "no"},
                ]
            },
        ],
    )
    result = redact_file(str(src), str(tmp_path / "out.jsonl"))
    rows = [r.data for r in load_records(str(tmp_path / "out.jsonl"))]
    assert rows[0]["messages"][0]["content"] == "I am [EMAIL]"
    assert rows[1] == json.loads(src.read_text().splitlines()[1])
    assert rows[2]["messages"][0]["content"] == "pay [CARD_NUMBER]"
    assert [(r.line, r.field, r.kinds) for r in result.redactions] == [
        (1, "messages[0].content", ("email",)),
        (3, "messages[0].content", ("card",)),
    ]
    with pytest.raises(LmtuneError, match="exists"):
        redact_file(str(src), str(tmp_path / "out.jsonl"))


def test_cli_redact_json(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", [{"text": "write to a.b@example.org"}, {"text": "plain"}])
    result = run_cli("data", "redact", src, "--out", tmp_path / "o.jsonl", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["counts"] == {"email": 1} and payload["records_changed"] == 1
    assert payload["redactions"][0]["line"] == 1
    bad = run_cli("data", "redact", src, "--out", tmp_path / "o2.jsonl", "--kinds", "email,ssn")
    assert bad.returncode == 2 and "unknown personal-data kind" in bad.stderr and "Traceback" not in bad.stderr


def test_phones_are_found_as_the_matcher_finds_them_over_the_whole_text() -> None:
    """_phones runs libphonenumber on the stretches with seven digits close together: on texts mixing numbers,
    code, dates and prose it must find exactly what the matcher finds on the whole text."""
    import random

    import phonenumbers

    from lmtune.data.pii import _PHONE_REGION, _phones

    rng = random.Random(0)
    parts = ["(415) 555-2671", "+44 20 7946 0958", "415.555.0199", "call 212-555-0147 now", "x[i]=y[i]*123;",
             "2026-12-06", "ISBN 978-3-16-148410-0", " ", "\n", "order 55512345", "ext. 42", "tel:+1-202-555-0123",
             "a1b2c3d4e5f6g7", "(0) 30 1234567", "12 34 56 78 90"]  # fmt: skip
    found = 0
    for _ in range(200):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(1, 40)))
        whole = [
            (m.start, m.end)
            for m in phonenumbers.PhoneNumberMatcher(text, _PHONE_REGION, leniency=phonenumbers.Leniency.VALID)
        ]
        assert [(m.start, m.end) for m in _phones(text)] == whole, text
        found += len(whole)
    assert found > 200  # the texts do hold phone numbers
