"""Generate the lmtune quickstart chat dataset.

Writes ``examples/quickstart/train.jsonl`` and ``examples/quickstart/validation.jsonl`` in the OpenAI chat
fine-tuning format. The data is written for lmtune (no third-party corpus): nine small, deterministic assistant
tasks with short answers, so that even a tiny randomly initialised model can visibly learn the answer patterns.

Every user prompt in the pool is unique, and both splits are cut from that pool, so no validation prompt also
appears in train. About 10% of examples are two-turn conversations whose first assistant turn carries
``"weight": 0`` (context only, not trained on).

The output is fully determined by the fixed seed: running the script twice gives byte-identical files.

Usage: .venv/bin/python scripts/make_quickstart_data.py
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "examples" / "quickstart"

SYSTEM_PROMPT = "You are a concise assistant."
N_TRAIN = 800
N_VALIDATION = 100
# Share of examples that are two-turn conversations with a weight-0 first assistant turn.
MULTI_TURN_FRACTION = 0.10

Pair = tuple[str, str]  # (user prompt, assistant answer)

WORDS = [
    "river", "apple", "garden", "window", "silver", "planet", "rocket", "pencil", "bridge", "castle",
    "forest", "guitar", "harbor", "island", "jacket", "kitten", "ladder", "marble", "needle", "orange",
    "pepper", "rabbit", "saddle", "tunnel", "valley", "wallet", "yellow", "anchor", "butter", "candle",
    "dragon", "engine", "falcon", "ginger", "hammer", "jungle", "lemon", "mirror", "nectar", "oyster",
    "parrot", "quartz", "ribbon", "shadow", "timber", "velvet", "winter", "zipper", "banana", "cherry",
    "coffee", "letter", "balloon", "strawberry", "mississippi", "bookkeeper", "committee", "library",
    "puzzle", "summer", "cotton", "tomato", "pizza", "cloud", "stone", "tiger", "music", "ocean",
    "paper", "table", "chair", "bread", "light", "green", "happy", "sunny", "little", "bottle",
]  # fmt: skip

ANTONYMS = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("light", "dark"),
    ("up", "down"), ("open", "closed"), ("early", "late"), ("full", "empty"), ("hard", "soft"),
    ("high", "low"), ("long", "short"), ("old", "new"), ("rich", "poor"), ("strong", "weak"),
    ("wet", "dry"), ("thick", "thin"), ("loud", "quiet"), ("clean", "dirty"), ("cheap", "expensive"),
    ("same", "different"), ("inside", "outside"), ("near", "far"), ("push", "pull"), ("win", "lose"),
    ("begin", "end"), ("buy", "sell"), ("love", "hate"), ("true", "false"), ("wide", "narrow"),
    ("asleep", "awake"), ("sharp", "blunt"), ("brave", "cowardly"), ("ancient", "modern"), ("arrive", "leave"),
    ("accept", "refuse"), ("always", "never"), ("friend", "enemy"), ("question", "answer"), ("day", "night"),
    ("north", "south"), ("east", "west"), ("first", "last"), ("top", "bottom"), ("good", "bad"),
]  # fmt: skip

PLURALS = [
    ("cat", "cats"), ("dog", "dogs"), ("box", "boxes"), ("bus", "buses"), ("city", "cities"),
    ("baby", "babies"), ("leaf", "leaves"), ("knife", "knives"), ("wolf", "wolves"), ("child", "children"),
    ("mouse", "mice"), ("goose", "geese"), ("man", "men"), ("woman", "women"), ("tooth", "teeth"),
    ("foot", "feet"), ("person", "people"), ("sheep", "sheep"), ("fish", "fish"), ("deer", "deer"),
    ("cactus", "cacti"), ("potato", "potatoes"), ("hero", "heroes"), ("photo", "photos"), ("piano", "pianos"),
    ("church", "churches"), ("brush", "brushes"), ("dish", "dishes"), ("watch", "watches"), ("glass", "glasses"),
    ("key", "keys"), ("toy", "toys"), ("day", "days"), ("party", "parties"), ("story", "stories"),
    ("house", "houses"), ("book", "books"), ("apple", "apples"), ("tree", "trees"), ("car", "cars"),
    ("ox", "oxen"), ("life", "lives"), ("wife", "wives"), ("half", "halves"), ("crisis", "crises"),
]  # fmt: skip

# Country names carry their article so that prompts read naturally ("the capital of the Netherlands").
CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
    ("the Netherlands", "Amsterdam"), ("Belgium", "Brussels"), ("Austria", "Vienna"), ("Switzerland", "Bern"),
    ("Poland", "Warsaw"), ("Sweden", "Stockholm"), ("Norway", "Oslo"), ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"), ("Ireland", "Dublin"), ("Greece", "Athens"), ("Hungary", "Budapest"),
    ("the Czech Republic", "Prague"), ("Romania", "Bucharest"), ("Ukraine", "Kyiv"), ("Turkey", "Ankara"),
    ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Nigeria", "Abuja"), ("Ghana", "Accra"), ("Morocco", "Rabat"),
    ("Ethiopia", "Addis Ababa"), ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"),
    ("South Korea", "Seoul"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("the Philippines", "Manila"),
    ("Australia", "Canberra"), ("New Zealand", "Wellington"), ("Canada", "Ottawa"),
    ("the United States", "Washington, D.C."), ("Mexico", "Mexico City"), ("Brazil", "Brasília"),
    ("Argentina", "Buenos Aires"), ("Chile", "Santiago"), ("Peru", "Lima"), ("Colombia", "Bogotá"),
]  # fmt: skip

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip

# (singular source unit, plural source unit, target unit (plural), factor)
UNITS = [
    ("km", "km", "meters", 1000),
    ("meter", "meters", "centimeters", 100),
    ("kg", "kg", "grams", 1000),
    ("liter", "liters", "milliliters", 1000),
    ("hour", "hours", "minutes", 60),
    ("minute", "minutes", "seconds", 60),
    ("day", "days", "hours", 24),
    ("foot", "feet", "inches", 12),
    ("week", "weeks", "days", 7),
]


def gen_arithmetic(rng: random.Random) -> Pair:
    op = rng.choice(["+", "-", "*"])
    if op == "*":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        result = a * b
    else:
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        if op == "-":
            # Keep answers non-negative; negative numbers add a second pattern the tiny model need not learn.
            a, b = max(a, b), min(a, b)
            result = a - b
        else:
            result = a + b
    template = rng.choice(["What is {a} {op} {b}?", "Compute {a} {op} {b}.", "Calculate {a} {op} {b}."])
    return template.format(a=a, op=op, b=b), f"{a} {op} {b} = {result}."


def gen_units(rng: random.Random) -> Pair:
    singular, plural, target, factor = rng.choice(UNITS)
    n = rng.randint(1, 20)
    source = singular if n == 1 else plural
    template = rng.choice(
        ["Convert {n} {src} to {dst}.", "How many {dst} are in {n} {src}?", "What is {n} {src} in {dst}?"]
    )
    # One fixed answer shape ("N unit is M unit.") keeps the pattern learnable for a tiny model.
    return template.format(n=n, src=source, dst=target), f"{n} {source} is {n * factor} {target}."


def gen_reverse(rng: random.Random) -> Pair:
    word = rng.choice(WORDS)
    template = rng.choice(["Spell '{w}' backwards.", "Reverse the word '{w}'.", "Write '{w}' in reverse."])
    return template.format(w=word), word[::-1]


def gen_calendar(rng: random.Random) -> Pair:
    if rng.random() < 0.4:
        i = rng.randrange(len(WEEKDAYS))
        current, following = WEEKDAYS[i], WEEKDAYS[(i + 1) % len(WEEKDAYS)]
        template = rng.choice(
            ["What day comes after {x}?", "Which day follows {x}?", "If today is {x}, what is tomorrow?"]
        )
    else:
        i = rng.randrange(len(MONTHS))
        current, following = MONTHS[i], MONTHS[(i + 1) % len(MONTHS)]
        template = rng.choice(
            ["What month comes after {x}?", "Which month follows {x}?", "What is the month after {x}?"]
        )
    return template.format(x=current), f"{following}."


def gen_antonym(rng: random.Random) -> Pair:
    a, b = rng.choice(ANTONYMS)
    # Ask in both directions so each table row yields two distinct facts.
    word, opposite = (a, b) if rng.random() < 0.5 else (b, a)
    template = rng.choice(
        ["What is the opposite of '{w}'?", "Give an antonym of '{w}'.", "What is the antonym of '{w}'?"]
    )
    return template.format(w=word), opposite


def gen_plural(rng: random.Random) -> Pair:
    word, plural = rng.choice(PLURALS)
    template = rng.choice(["What is the plural of '{w}'?", "Give the plural form of '{w}'.", "One {w}, two what?"])
    return template.format(w=word), plural


def gen_sort(rng: random.Random) -> Pair:
    numbers = rng.sample(range(100), rng.randint(3, 6))
    shown = ", ".join(str(x) for x in numbers)
    template = rng.choice(
        [
            "Sort these numbers in ascending order: {xs}.",
            "Sort from smallest to largest: {xs}.",
            "Put these numbers in increasing order: {xs}.",
        ]
    )
    return template.format(xs=shown), ", ".join(str(x) for x in sorted(numbers))


def gen_capital(rng: random.Random) -> Pair:
    country, capital = rng.choice(CAPITALS)
    template = rng.choice(
        ["What is the capital of {c}?", "Name the capital city of {c}.", "Which city is the capital of {c}?"]
    )
    return template.format(c=country), f"The capital of {country} is {capital}."


def gen_count_letters(rng: random.Random) -> Pair:
    word = rng.choice(WORDS)
    # Mostly letters that occur in the word, sometimes one that does not, so "0" is a possible answer.
    if rng.random() < 0.8:
        letter = rng.choice(sorted(set(word)))
    else:
        letter = rng.choice(sorted(set("abcdefghijklmnopqrstuvwxyz") - set(word)))
    template = rng.choice(
        [
            "How many times does the letter '{c}' appear in '{w}'?",
            "Count the letter '{c}' in '{w}'.",
            "How many '{c}'s are in '{w}'?",
        ]
    )
    return template.format(c=letter, w=word), str(word.count(letter))


# Per-task number of unique (prompt, answer) pairs. The total covers single-turn examples plus two pairs per
# multi-turn example; table-driven tasks are capped below their number of distinct prompts.
TASKS: list[tuple[str, Callable[[random.Random], Pair], int]] = [
    ("arithmetic", gen_arithmetic, 150),
    ("unit_conversion", gen_units, 120),
    ("reverse_word", gen_reverse, 110),
    ("next_day_or_month", gen_calendar, 50),
    ("antonym", gen_antonym, 110),
    ("plural", gen_plural, 110),
    ("sort_numbers", gen_sort, 110),
    ("capital_city", gen_capital, 100),
    ("count_letters", gen_count_letters, 130),
]


def build_pairs(rng: random.Random) -> list[tuple[str, str, str]]:
    """Return unique (task, prompt, answer) triples; a prompt is never repeated across tasks either."""
    seen: set[str] = set()
    pairs: list[tuple[str, str, str]] = []
    for name, generate, quota in TASKS:
        count, attempts = 0, 0
        while count < quota:
            attempts += 1
            if attempts > quota * 200:
                raise RuntimeError(f"task {name!r}: only {count} unique prompts found, quota is {quota}")
            prompt, answer = generate(rng)
            if prompt in seen:
                continue
            seen.add(prompt)
            pairs.append((name, prompt, answer))
            count += 1
    return pairs


def build_examples(rng: random.Random) -> list[dict]:
    pairs = build_pairs(rng)
    rng.shuffle(pairs)
    n_total = N_TRAIN + N_VALIDATION
    n_multi = round(n_total * MULTI_TURN_FRACTION)
    if len(pairs) < n_total + n_multi:
        raise RuntimeError(f"need {n_total + n_multi} unique pairs, generated {len(pairs)}")

    examples: list[dict] = []
    cursor = 0
    for i in range(n_total):
        messages: list[dict] = [{"role": "system", "content": SYSTEM_PROMPT}]
        if i < n_multi:
            _, context_prompt, context_answer = pairs[cursor]
            cursor += 1
            messages.append({"role": "user", "content": context_prompt})
            # weight 0: the earlier answer is conversation context, only the final answer is a training target.
            messages.append({"role": "assistant", "content": context_answer, "weight": 0})
        _, prompt, answer = pairs[cursor]
        cursor += 1
        messages.append({"role": "user", "content": prompt})
        messages.append({"role": "assistant", "content": answer})
        examples.append({"messages": messages})
    rng.shuffle(examples)
    return examples


def user_prompts(example: dict) -> set[str]:
    return {m["content"] for m in example["messages"] if m["role"] == "user"}


def write_jsonl(path: Path, examples: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for example in examples:
            f.write(json.dumps(example, ensure_ascii=False) + "\n")


def main() -> None:
    rng = random.Random(0)
    examples = build_examples(rng)
    train, validation = examples[:N_TRAIN], examples[N_TRAIN:]

    train_prompts = set().union(*(user_prompts(e) for e in train))
    leaked = [p for e in validation for p in user_prompts(e) if p in train_prompts]
    if leaked:
        raise RuntimeError(f"validation prompts also in train: {leaked[:5]}")

    write_jsonl(OUT_DIR / "train.jsonl", train)
    write_jsonl(OUT_DIR / "validation.jsonl", validation)

    for split, rows in (("train", train), ("validation", validation)):
        n_multi = sum(len(e["messages"]) > 3 for e in rows)
        print(
            f"{split}: {len(rows)} examples ({len(rows) - n_multi} single-turn, {n_multi} multi-turn)"
            f" -> {(OUT_DIR / f'{split}.jsonl').relative_to(REPO_ROOT)}"
        )
    print("tasks: " + ", ".join(f"{name}={quota}" for name, _, quota in TASKS) + " unique prompt/answer pairs")


if __name__ == "__main__":
    main()
