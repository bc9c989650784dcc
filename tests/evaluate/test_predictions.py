"""Predictions files: read with file:line errors, paired with a baseline, scored by `lmtune eval --predictions`."""

from __future__ import annotations

import json

import pytest
import sacrebleu
from support import run_main, write_jsonl

from lmtune.errors import DataError, LmtuneError
from lmtune.evaluate.metrics import compute_metrics
from lmtune.evaluate.predictions import align, read_predictions, score_predictions

REFS = [
    ["The meeting moved to Friday because the room was booked.", "They moved the meeting to Friday."],
    ["Tom lends Anna his bike for the weekend.", "Anna borrows Tom's bike."],
    ["The shop is closed on Sundays.", "On Sundays the shop does not open."],
    ["Mia orders a pizza with mushrooms.", "Mia wants a mushroom pizza."],
    ["The train was late by twenty minutes.", "Their train arrived twenty minutes late."],
    ["Ben forgot his keys at the office.", "Ben left his keys at work."],
]
GOOD = [
    "The meeting was moved to Friday since the room was booked.",
    "Tom lends Anna his bike this weekend.",
    "The shop is closed every Sunday.",
    "Mia orders a mushroom pizza.",
    "The train was twenty minutes late.",
    "Ben forgot his keys at work.",
]
STREAMS = [[r[0] for r in REFS], [r[1] for r in REFS]]  # sacrebleu: one stream per reference position
BAD = ["Hello.", "Bikes are nice.", "Shops sell things.", "Food.", "Trains run.", "Keys."]


def write_preds(path, preds, refs=REFS, ids=True):
    records = [
        {**({"id": f"ex{i}"} if ids else {}), "prediction": p, "references": r, "input": f"dialogue {i}"}
        for i, (p, r) in enumerate(zip(preds, refs, strict=True))
    ]
    return write_jsonl(path, records)


def test_reads_every_reference_shape(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prediction": "a", "references": ["x", "y"], "id": 7, "input": "q"},
            {"prediction": "b", "reference": "z"},
            {"prediction": 1, "label": 1},
        ],
    )
    recs = read_predictions(path)
    assert [(r.prediction, r.references, r.line) for r in recs] == [
        ("a", ("x", "y"), 1),
        ("b", ("z",), 2),
        ("1", ("1",), 3),
    ]
    assert (recs[0].id, recs[0].input, recs[1].id) == ("7", "q", None)
    json_path = tmp_path / "p.json"
    json_path.write_text(json.dumps([{"prediction": "a", "reference": "b"}], indent=2), encoding="utf-8")
    assert read_predictions(json_path)[0].line == 2
    csv_path = tmp_path / "p.csv"
    csv_path.write_text('prediction,references\nhi,"[""hi there"", ""hello""]"\n', encoding="utf-8")
    assert read_predictions(csv_path)[0].references == ("hi there", "hello")


@pytest.mark.parametrize(
    ("record", "where"),
    [
        ({"references": ["x"]}, "field 'prediction': missing"),
        ({"prediction": ["a"], "reference": "x"}, "field 'prediction': expected a string or an integer, got an array"),
        ({"prediction": "a"}, "field 'references': missing"),
        ({"prediction": "a", "references": "x"}, "field 'references': expected a list of strings, got a string"),
        ({"prediction": "a", "references": []}, "field 'references': is an empty list"),
        ({"prediction": "a", "references": ["x", 3]}, "field 'references[1]': expected a string, got a number"),
        ({"prediction": "a", "references": ["x", " "]}, "field 'references[1]': is empty"),
        ({"prediction": "a", "reference": "x", "label": "y"}, "give one of reference, label, not several"),
        ({"prediction": "a", "reference": "x", "input": 3}, "field 'input': expected a string"),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path, record, where):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prediction": "ok", "reference": "ok"}, record])
    with pytest.raises(DataError) as e:
        read_predictions(path)
    assert f"{path}:2: " in str(e.value) and where in str(e.value)


def test_missing_file_is_not_looked_up_on_the_hub(tmp_path):
    with pytest.raises(LmtuneError, match="predictions file not found"):
        read_predictions(tmp_path / "preds")


def test_baseline_is_matched_by_id_or_checked_line_by_line(tmp_path):
    system = read_predictions(write_preds(tmp_path / "s.jsonl", GOOD))
    shuffled = write_jsonl(
        tmp_path / "b.jsonl",
        [{"id": f"ex{i}", "prediction": BAD[i], "references": REFS[i]} for i in reversed(range(len(REFS)))],
    )
    assert [r.prediction for r in align(system, read_predictions(shuffled))] == BAD
    no_ids = read_predictions(write_preds(tmp_path / "n.jsonl", BAD, ids=False))
    assert [r.prediction for r in align(system, no_ids)] == BAD
    other = read_predictions(write_preds(tmp_path / "o.jsonl", BAD, refs=[*REFS[:2], REFS[3], REFS[2], *REFS[4:]]))
    other = [r.__class__(r.prediction, r.references, r.source, r.line) for r in other]  # drop ids: match by position
    with pytest.raises(DataError, match=r"o\.jsonl:3: field 'references': differ from those of .*s\.jsonl:3"):
        align(system, other)
    with pytest.raises(LmtuneError, match=r"6 records but .* has 5"):
        align(system, no_ids[:5])
    short = read_predictions(write_preds(tmp_path / "short.jsonl", BAD[:5], refs=REFS[:5]))
    with pytest.raises(DataError, match="'ex5' has no prediction"):
        align(system, short)


def test_score_predictions_compares_with_the_baseline(tmp_path):
    report = score_predictions(
        write_preds(tmp_path / "s.jsonl", GOOD), baseline=write_preds(tmp_path / "b.jsonl", BAD), n_resamples=200
    )
    assert report.chosen == "references are text" and report.count == 6
    assert report.metrics == compute_metrics(["rouge", "bleu", "chrf", "exact_match"], GOOD, REFS)
    c = report.comparison
    assert c is not None and c.headline == "rougeL" and c.deltas["rougeL"].low > 0
    assert c.deltas["bleu"].value_a == pytest.approx(sacrebleu.corpus_bleu(BAD, STREAMS).score)
    assert c.verdict.startswith("system beats baseline by +")


def test_cli_json_prints_one_object(monkeypatch, capsys, tmp_path):
    system, base = write_preds(tmp_path / "s.jsonl", GOOD), write_preds(tmp_path / "b.jsonl", BAD)
    code, out, err = run_main(
        monkeypatch, capsys, "eval", "--predictions", system, "--metrics", "rougeL,bleu", "--json",
        "--baseline-predictions", base, "--resamples", "200",
    )  # fmt: skip
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1
    data = json.loads(out)
    assert data["count"] == 6 and list(data["metrics"]) == ["rougeL", "bleu"]
    assert data["metrics"]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(GOOD, STREAMS).score)
    assert data["comparison"]["deltas"]["rougeL"]["significant"] is True
    assert data["comparison"]["verdict"].startswith("system beats baseline")


def test_cli_labels_get_label_metrics_and_a_per_class_table(monkeypatch, capsys, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("prediction,label\npos,pos\nneg,pos\nneg,neg\nneu,neu\n", encoding="utf-8")
    code, out, err = run_main(monkeypatch, capsys, "eval", "--predictions", path, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert list(data["metrics"]) == ["accuracy", "f1", "precision", "recall"]
    assert data["metrics"]["accuracy"] == 0.75 and data["per_class"]["recall"] == {"neg": 1.0, "neu": 1.0, "pos": 0.5}
    code, out, err = run_main(monkeypatch, capsys, "eval", "--predictions", path)
    assert code == 0 and "per class" in out and "accuracy" in out and "look like labels" in err


def test_cli_human_output_has_the_comparison_and_verdict(monkeypatch, capsys, tmp_path):
    system, base = write_preds(tmp_path / "s.jsonl", GOOD), write_preds(tmp_path / "b.jsonl", list(GOOD))
    code, out, _ = run_main(
        monkeypatch, capsys, "eval", "--predictions", system, "--baseline-predictions", base, "--resamples", "100"
    )
    assert code == 0
    assert "95% CI" in out and "no significant difference in rougeL" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics", "rouge,blue"], "unknown metric 'blue'"),
        (["--metrics", "perplexity"], "log-probabilities"),
        (["--metrics", "f1"], "exactly one reference label"),
        (["--baseline-predictions", "missing.jsonl"], "predictions file not found"),
    ],
)
def test_cli_bad_input_exits_2_without_a_traceback(monkeypatch, capsys, tmp_path, args, message):
    system = write_preds(tmp_path / "s.jsonl", GOOD)
    code, out, err = run_main(monkeypatch, capsys, "eval", "--predictions", system, *args)
    assert code == 2 and out == ""
    assert err.startswith("error:") and message in err and "Traceback" not in err


def test_cli_bad_file_and_run_directory(monkeypatch, capsys, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prediction": "a", "reference": "b"}, {"reference": "c"}])
    code, _, err = run_main(monkeypatch, capsys, "eval", "--predictions", path, "--json")
    assert code == 2 and f"{path}:2: field 'prediction': missing" in err and "Traceback" not in err
    code, _, err = run_main(monkeypatch, capsys, "eval", tmp_path)
    assert code == 2 and "is not a run directory" in err and "Traceback" not in err
    code, _, err = run_main(monkeypatch, capsys, "eval")
    assert code == 2 and "--predictions" in err
