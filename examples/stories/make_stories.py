"""Write the lighthouse stories used by configs/stories260k-lora.yaml (seeded, standard library only).

Run from the repository root:

    .venv/bin/python examples/stories/make_stories.py

It writes examples/stories/train.jsonl (300 stories) and examples/stories/validation.jsonl (60 stories) as
{"text": ...} records. The stories are short and simple, in the style of TinyStories, but every one is about a
lighthouse keeper, the lamp and the boats at sea: a recurring domain that the stories260K base model (trained on
TinyStories) has rarely seen, so fine-tuning on it visibly lowers the held-out loss. The same seed always gives
the same files; no validation story also appears in the training file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 260
N_TRAIN = 300
N_VALIDATION = 60
MIN_WORDS, MAX_WORDS = 40, 90

KEEPERS = ["Grandpa Joe", "Old Nell", "Captain Finn", "Aunt Rosa", "Mr. Gray", "Grandma Pearl"]
CHILDREN = ["Lily", "Tom", "Mia", "Ben", "Sam", "Anna", "Max", "Lucy", "Tim", "Sue"]
BOATS = ["a little red boat", "a small blue boat", "a fishing boat", "a big ship", "a tiny sailboat", "a green boat"]
SAILORS = ["a fisherman and his son", "two sailors", "a sailor and his dog", "a girl and her dad", "three fishermen"]
WEATHER = ["a big storm", "thick gray fog", "a wild wind", "heavy rain", "a cold wind"]
ANIMALS = ["a seagull", "a crab", "a seal", "a puffin", "a little cat"]
OBJECTS = ["the brass lamp", "the big lamp", "the bright lamp", "the round lamp"]
PLACES = ["on the rocks", "by the sea", "on a small island", "at the end of the harbor", "on the tall cliff"]
FEELINGS = ["happy", "proud", "glad", "warm inside"]
CHORES = [
    "cleaned the glass of the lamp",
    "climbed the long, round stairs",
    "filled the lamp with oil",
    "wound the old clock",
    "rang the bell",
    "looked at the sea with a spyglass",
]
MORALS = [
    "The light helps everyone find the way home.",
    "A small light can keep many people safe.",
    "When we help others, our hearts shine too.",
    "Even in the dark, a friend can show the way.",
]


def opening(r: random.Random, keeper: str, child: str) -> str:
    return r.choice(
        [
            f"Once upon a time, there was a tall white lighthouse {r.choice(PLACES)}. {keeper} was the keeper.",
            f"{keeper} lived in a lighthouse {r.choice(PLACES)}. Every night, {keeper} lit {r.choice(OBJECTS)}.",
            f"One day, {child} went to visit {keeper}, the lighthouse keeper {r.choice(PLACES)}.",
        ]
    )


def middle(r: random.Random, keeper: str, child: str) -> str:
    boat, sailors, weather = r.choice(BOATS), r.choice(SAILORS), r.choice(WEATHER)
    chores = r.sample(CHORES, 2)
    return r.choice(
        [
            f"{child} helped {keeper}. They {chores[0]} and {chores[1]}. Then {weather} came. "
            f"Out at sea, {boat} could not see the rocks.",
            f"One night, {weather} came. {sailors.capitalize()} were in the {boat.removeprefix('a ')}. "
            f"They were lost and scared.",
            f"{keeper} {chores[0]}. {child} saw {r.choice(ANIMALS)} on the rocks. Soon {weather} came, "
            f"and {boat} was far from the harbor.",
        ]
    )


def ending(r: random.Random, keeper: str, child: str) -> str:
    lamp = r.choice(OBJECTS)
    return r.choice(
        [
            f"{keeper} turned on {lamp}. The light went round and round. The boat saw the light and came home "
            f"safe. {child} felt {r.choice(FEELINGS)}.",
            f"{child} ran up the stairs and helped {keeper} light {lamp}. The boat followed the light to the "
            f"harbor. Everyone said thank you.",
            f"The lamp was shining bright. The sailors saw it and turned away from the rocks. {keeper} smiled "
            f"and gave {child} a hug.",
        ]
    )


def story(r: random.Random) -> str:
    keeper, child = r.choice(KEEPERS), r.choice(CHILDREN)
    parts = [opening(r, keeper, child), middle(r, keeper, child), ending(r, keeper, child)]
    if r.random() < 0.5:
        parts.append(r.choice(MORALS))
    text = " ".join(parts)
    return text[0].upper() + text[1:]


def make(seed: int = SEED) -> tuple[list[str], list[str]]:
    r = random.Random(seed)
    seen: set[str] = set()
    stories: list[str] = []
    while len(stories) < N_TRAIN + N_VALIDATION:
        text = story(r)
        if text in seen or not MIN_WORDS <= len(text.split()) <= MAX_WORDS:
            continue
        seen.add(text)
        stories.append(text)
    return stories[:N_TRAIN], stories[N_TRAIN:]


def write(path: Path, texts: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for text in texts:
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")


def main() -> None:
    here = Path(__file__).resolve().parent
    train, validation = make()
    write(here / "train.jsonl", train)
    write(here / "validation.jsonl", validation)
    print(f"wrote {len(train)} train and {len(validation)} validation stories to {here}")


if __name__ == "__main__":
    main()
