"""Write the small NER dataset used by configs/ner-minilm.yaml (seeded, standard library only).

Run from the repository root:

    .venv/bin/python examples/ner/make_ner.py

It writes examples/ner/train.conll (400 sentences) and examples/ner/test.conll (120 sentences) in CoNLL form: one
token and its IOB2 tag per line, a blank line after each sentence. Sentences are news-like templates filled with
people (PER), places (LOC) and organisations (ORG), many of them two or three words long (B- then I- tags). Each
name list is split in two: the training file uses only the first part, the test file draws half of its names
from the second (never seen in training), so the test F1 measures whether the model learned where entities sit in
a sentence, not just a list of names. The same seed always gives the same files.
"""

from __future__ import annotations

import random
from pathlib import Path

SEED = 2003
N_TRAIN, N_TEST = 400, 120

FIRST = [
    "Anna", "James", "Maria", "David", "Sofia", "Peter", "Laura", "Omar", "Yuki", "Carlos", "Elena", "Samuel",
    "Priya", "Lukas", "Fatima", "George", "Ingrid", "Mateo", "Chloe", "Ahmed", "Nina", "Victor", "Hannah", "Ravi",
]  # fmt: skip
LAST = [
    "Smith", "Garcia", "Müller", "Rossi", "Tanaka", "Kowalski", "Dubois", "Okafor", "Jensen", "Silva", "Novak",
    "Haddad", "Larsen", "Moreau", "Fischer", "Costa", "Patel", "Schmidt", "Ivanova", "Brennan", "Lindqvist", "Mendes",
]  # fmt: skip
CITIES = [
    "Paris", "Berlin", "Lagos", "Osaka", "Lima", "Oslo", "Madrid", "Toronto", "Nairobi", "Lisbon", "Vienna",
    "Santiago", "Hamburg", "Seoul", "Dublin", "Prague", "New York", "Buenos Aires", "Cape Town", "Kuala Lumpur",
    "Mexico City", "São Paulo", "Hong Kong", "Tel Aviv",
]  # fmt: skip
COUNTRIES = [
    "France", "Germany", "Nigeria", "Japan", "Peru", "Norway", "Spain", "Canada", "Kenya", "Portugal", "Austria",
    "Chile", "Brazil", "Ireland", "India", "Poland", "South Korea", "New Zealand", "Costa Rica", "Sri Lanka",
]  # fmt: skip
ORGS = [
    "Siemens", "Nokia", "Reuters", "UNICEF", "Airbus", "Toyota", "Unilever", "Interpol", "Vodafone", "Heineken",
    "Greenpeace", "Barclays", "Acme Corp", "Blue River Bank", "Northwind Traders", "Atlas Motors",
    "World Bank", "Red Cross", "General Electric", "Deutsche Bahn", "Orion Software", "Crescent Airlines",
    "Global Health Fund", "Vertex Pharma",
]  # fmt: skip

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TEMPLATES = [
    "{PER} arrived in {LOC} on {DAY} .",
    "{PER} , a spokesman for {ORG} , declined to comment .",
    "{ORG} said on {DAY} it would open a new office in {LOC} .",
    "Shares of {ORG} fell {NUM} percent after {PER} resigned .",
    "{PER} met {PER} in {LOC} to discuss the deal .",
    "The talks between {ORG} and {ORG} ended without agreement .",
    "Police in {LOC} said {PER} was released on bail .",
    "{PER} will lead the {ORG} team at the summit in {LOC} .",
    "Rain delayed the match in {LOC} for {NUM} minutes .",
    "{ORG} hired {PER} as its chief executive .",
    "Officials from {LOC} and {LOC} signed the treaty .",
    "In an interview , {PER} praised the work of {ORG} .",
    "The minister flew from {LOC} to {LOC} late on {DAY} .",
    "{PER} scored twice as the visitors won in {LOC} .",
    "Analysts expect {ORG} to report {NUM} percent higher profits .",
    "A court in {LOC} fined {ORG} for breaking the rules .",
    "Prices rose {NUM} percent in the quarter to {DAY} , the report said .",
    "{PER} told reporters that {ORG} would appeal .",
]


def _split(names: list[str]) -> tuple[list[str], list[str]]:
    """(seen, unseen): the training file only ever uses three names in four; every fourth is kept for the test."""
    return [n for i, n in enumerate(names) if i % 4 != 3], names[3::4]


def _pools(held_out: bool) -> dict[str, list[str]]:
    parts = {key: _split(names) for key, names in {"FIRST": FIRST, "LAST": LAST, "ORG": ORGS}.items()}
    places = _split(CITIES)[0] + _split(COUNTRIES)[0], _split(CITIES)[1] + _split(COUNTRIES)[1]
    parts["LOC"] = places
    return {key: (seen + unseen if held_out else seen) for key, (seen, unseen) in parts.items()} | {
        f"{key}_unseen": unseen for key, (_, unseen) in parts.items()
    }


def _entity(kind: str, rng: random.Random, pools: dict[str, list[str]], prefer_unseen: bool) -> str:
    pick = lambda key: rng.choice(pools[f"{key}_unseen"] if prefer_unseen else pools[key])  # noqa: E731
    if kind == "PER":
        return pick("FIRST") if rng.random() < 0.2 else f"{pick('FIRST')} {pick('LAST')}"
    return pick(kind)


def sentence(rng: random.Random, pools: dict[str, list[str]], held_out: bool) -> list[tuple[str, str]]:
    """One sentence as (token, tag) pairs, IOB2 tags."""
    out: list[tuple[str, str]] = []
    for piece in rng.choice(TEMPLATES).split():
        kind = piece.strip("{}") if piece.startswith("{") else None
        if kind in (None, "DAY", "NUM"):  # not entities: words that vary so that sentences rarely repeat
            word = {"DAY": rng.choice(DAYS), "NUM": str(rng.randint(2, 60))}.get(kind or "", piece)
            out.append((word, "O"))
            continue
        words = _entity(kind, rng, pools, held_out and rng.random() < 0.5).split()
        out += [(w, f"{'B' if i == 0 else 'I'}-{kind}") for i, w in enumerate(words)]
    return out


def write(path: Path, n: int, rng: random.Random, held_out: bool) -> None:
    pools = _pools(held_out)
    blocks = ["\n".join(f"{tok} {tag}" for tok, tag in sentence(rng, pools, held_out)) for _ in range(n)]
    path.write_text("-DOCSTART- O\n\n" + "\n\n".join(blocks) + "\n", encoding="utf-8")


def main() -> None:
    here = Path(__file__).resolve().parent
    rng = random.Random(SEED)
    write(here / "train.conll", N_TRAIN, rng, held_out=False)
    write(here / "test.conll", N_TEST, rng, held_out=True)
    print(f"wrote {here / 'train.conll'} ({N_TRAIN} sentences) and {here / 'test.conll'} ({N_TEST})")


if __name__ == "__main__":
    main()
