"""Write the preference pairs used by configs/stories260k-dpo.yaml (seeded, standard library only).

Run from the repository root:

    .venv/bin/python examples/stories-dpo/make_pairs.py

It writes examples/stories-dpo/train.jsonl (400 pairs) and examples/stories-dpo/validation.jsonl (60 pairs) as
{"prompt", "chosen", "rejected"} records. Each prompt is a TinyStories-style opening (a child, a thing they have,
a friend who comes by); the chosen continuation is kind (the child shares, helps, says sorry), the rejected one
unkind (the child grabs, shouts, runs off), with the same characters and length. stories260K was trained on
TinyStories, where both kinds of turn occur: DPO has to move it towards the kind one. No validation prompt also
appears in the training file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 7
N_TRAIN, N_VALIDATION = 400, 60
HERE = Path(__file__).resolve().parent

KIDS = [("Lily", "she", "her"), ("Tom", "he", "his"), ("Mia", "she", "her"), ("Ben", "he", "his"),
        ("Sue", "she", "her"), ("Max", "he", "his"), ("Anna", "she", "her"), ("Tim", "he", "his")]  # fmt: skip
FRIENDS = ["Sam", "Lucy", "Jack", "Zoe", "Leo", "Emma"]
THINGS = ["red ball", "big kite", "toy car", "teddy bear", "blue truck", "shiny drum", "new doll", "little boat"]
PLACES = ["in the park", "in the garden", "at home", "by the pond", "at school"]
KIND = [
    '{kid} smiled and said, "You can play with my {thing} too." They played together all day and were very happy.',
    '{kid} gave the {thing} to {friend} and said, "Let\'s share." {friend} smiled, and they became best friends.',
    '{kid} said, "Sure, we can take turns." They took turns with the {thing} and laughed a lot.',
]
UNKIND = [
    '{kid} grabbed the {thing} and shouted, "No, it is mine!" {friend} was sad and went home alone.',
    "{kid} pushed {friend} away and ran off with the {thing}. {friend} cried and did not play that day.",
    '{kid} said, "Go away, I do not want to share." {friend} felt sad and walked away.',
]


def pair(r: random.Random) -> dict[str, str]:
    (kid, he, his), friend = r.choice(KIDS), r.choice(FRIENDS)
    thing, place = r.choice(THINGS), r.choice(PLACES)
    prompt = (
        f"Once upon a time, there was a little child named {kid}. {he.capitalize()} loved {his} {thing}. "
        f'One day, {kid} was playing {place}. {friend} came and asked, "Can I play with your {thing}?"'
    )
    fill = dict(kid=kid, friend=friend, thing=thing)
    return {
        "prompt": prompt,
        "chosen": " " + r.choice(KIND).format(**fill),
        "rejected": " " + r.choice(UNKIND).format(**fill),
    }


def make() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The training and validation pairs (the same every time: seeded)."""
    r = random.Random(SEED)
    train = [pair(r) for _ in range(N_TRAIN)]
    seen = {p["prompt"] for p in train}
    validation: list[dict[str, str]] = []
    while len(validation) < N_VALIDATION:
        p = pair(r)
        if p["prompt"] not in seen:
            validation.append(p)
            seen.add(p["prompt"])
    return train, validation


def main() -> None:
    for name, rows in zip(("train", "validation"), make(), strict=True):
        (HERE / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows), encoding="utf-8")


if __name__ == "__main__":
    main()
