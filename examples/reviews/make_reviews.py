"""Write the product-review sentiment data of `make quickstart` (configs/quickstart-reviews.yaml): seeded, standard
library only, written for lmtune (no third-party text).

Run from the repository root:

    .venv/bin/python examples/reviews/make_reviews.py

It writes examples/reviews/train.jsonl (600 reviews) and validation.jsonl (200) as {"text", "label"} records, label
"positive" or "negative", half each. The two splits share no opinion word: training reviews say "great",
"awful", ...; validation reviews say "superb", "dreadful", ... that never occur in training. A model that only
memorised the training words cannot score the validation set; a pretrained encoder (all-MiniLM-L6-v2) knows those
words already and carries the task over to them, which is what the quickstart shows. About a fifth of the reviews
negate the opinion ("not great" is negative), so word spotting alone is not enough either.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 11
HERE = Path(__file__).resolve().parent
PRODUCTS = ["phone", "laptop", "blender", "jacket", "headphones", "coffee maker", "backpack", "desk lamp",
            "vacuum cleaner", "keyboard", "tent", "watch", "camera", "kettle", "sofa", "printer"]  # fmt: skip
ASPECTS = ["battery", "screen", "sound", "build quality", "price", "delivery", "design", "customer service"]
OPINIONS = {
    "train": {
        "positive": ["great", "excellent", "good", "wonderful", "lovely", "amazing", "solid", "nice"],
        "negative": ["awful", "terrible", "bad", "horrible", "poor", "disappointing", "cheap", "broken"],
    },
    "validation": {
        "positive": ["superb", "fantastic", "outstanding", "brilliant", "delightful", "impressive", "reliable"],
        "negative": ["dreadful", "lousy", "mediocre", "useless", "flimsy", "faulty", "atrocious"],
    },
}
TEMPLATES = [
    "The {product} is {word}.",
    "Honestly, the {aspect} of this {product} is {word}.",
    "I bought this {product} last month and it has been {word}.",
    "{Word} {product}, and the {aspect} is {word}.",
    "My new {product} turned out {word}; the {aspect} in particular.",
    "Would I call the {product} {word}? Yes, absolutely {word}.",
]
NEGATED = ["The {product} is not {word} at all.", "I would not say the {aspect} of this {product} is {word}."]


def review(rng: random.Random, split: str, label: str) -> str:
    product, aspect = rng.choice(PRODUCTS), rng.choice(ASPECTS)
    if rng.random() < 0.2:  # a negated opinion of the other polarity: "not great" is negative
        other = "negative" if label == "positive" else "positive"
        word = rng.choice(OPINIONS[split][other])
        return rng.choice(NEGATED).format(product=product, aspect=aspect, word=word)
    word = rng.choice(OPINIONS[split][label])
    text = rng.choice(TEMPLATES).format(product=product, aspect=aspect, word=word, Word=word.capitalize())
    return text


def write(split: str, n: int, rng: random.Random) -> None:
    rows = [{"text": review(rng, split, label), "label": label} for i in range(n)
            for label in [("positive", "negative")[i % 2]]]  # fmt: skip
    with (HERE / f"{split}.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def main() -> None:
    rng = random.Random(SEED)
    write("train", 600, rng)
    write("validation", 200, rng)


if __name__ == "__main__":
    main()
