"""Word- and character-level noise and EDA operations on one text: the text-only augmentation strategies.

Plain functions of (text, random generator); `lmtune.data.augment_strategies` applies them to the chosen fields of
records.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence

from lmtune.errors import LmtuneError

NOISE_LEVELS = ("both", "char", "word")
EDA_OPERATIONS = ("swap", "delete", "insert")
_KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


# ---- noise -------------------------------------------------------------------------------------------------------


def _keyboard_neighbours() -> dict[str, str]:
    """Keys next to each letter on a QWERTY keyboard (rows are staggered: 'a' sits below 'q' and 'w')."""
    out: dict[str, str] = {}
    for r, row in enumerate(_KEYBOARD):
        for i, key in enumerate(row):
            near = [row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)]
            if r > 0:
                near += [_KEYBOARD[r - 1][j] for j in (i, i + 1) if j < len(_KEYBOARD[r - 1])]
            if r + 1 < len(_KEYBOARD):
                near += [_KEYBOARD[r + 1][j] for j in (i - 1, i) if 0 <= j < len(_KEYBOARD[r + 1])]
            out[key] = "".join(near)
    return out


KEYBOARD_NEIGHBOURS = _keyboard_neighbours()


def noise_text(text: str, rng: random.Random, rate: float = 0.05, level: str = "both") -> str:
    """Typo-like noise: words dropped or doubled, letters swapped, dropped, doubled or hit on a neighbouring key.

    About ``rate`` of the words and of the letters are touched (at least one letter, or one word for
    ``level="word"``). Only letters and words of letters change: a digit or a sign changed in "3 + 4" would
    make the record's answer wrong, not noisy. The text never becomes empty.
    """
    if level not in NOISE_LEVELS:
        raise LmtuneError(f"unknown noise level {level!r}", hint=f"use one of {', '.join(NOISE_LEVELS)}")
    out = text
    if level in ("word", "both"):
        out = _word_noise(out, rng, rate, at_least_one=level == "word")
    if level in ("char", "both"):
        out = _char_noise(out, rng, rate)
    return out if out.strip() else text


def _word_noise(text: str, rng: random.Random, rate: float, *, at_least_one: bool) -> str:
    lead, words, gaps, trail = _split_words(text)
    eligible = [k for k, w in enumerate(words) if any(c.isalpha() for c in w) and not any(c.isdigit() for c in w)]
    count = min(len(eligible), round(rate * len(words)) or (1 if at_least_one else 0))
    keep = [True] * len(words)
    for k in rng.sample(eligible, count):
        if rng.random() < 0.5 and sum(keep) > 1:
            keep[k] = False
        else:
            words[k] = f"{words[k]} {words[k]}"
    return _join_words(lead, words, gaps, trail, keep)


def _split_words(text: str) -> tuple[str, list[str], list[str], str]:
    """``text`` as leading space, words, the gaps between them and trailing space, so word edits keep layout."""
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    if not spans:
        return text, [], [], ""
    words = [text[a:b] for a, b in spans]
    gaps = [text[spans[k][1] : spans[k + 1][0]] for k in range(len(spans) - 1)]
    return text[: spans[0][0]], words, gaps, text[spans[-1][1] :]


def _join_words(lead: str, words: Sequence[str], gaps: Sequence[str], trail: str, keep: Sequence[bool]) -> str:
    """The text again without the words not kept; a dropped word's gaps merge into the widest (a line break
    outlives a space), so deleting words never joins two lines."""
    kept = [k for k in range(len(words)) if keep[k]]
    parts = [lead]
    for n, k in enumerate(kept):
        if n:
            parts.append(max(gaps[kept[n - 1] : k], key=lambda gap: gap.count("\n")))
        parts.append(words[k])
    parts.append(trail)
    return "".join(parts)


def _char_noise(text: str, rng: random.Random, rate: float) -> str:
    letters = [i for i, c in enumerate(text) if c.isalpha()]
    if not letters:
        return text
    chars = list(text)
    # Right to left, so an edit never shifts a position still to be edited.
    for i in sorted(rng.sample(letters, max(1, min(len(letters), round(rate * len(letters))))), reverse=True):
        c = chars[i]
        near = KEYBOARD_NEIGHBOURS.get(c.lower(), "")
        op = rng.choice(("swap", "delete", "insert", "substitute"))
        if op == "swap" and i + 1 < len(chars) and chars[i + 1].isalpha() and chars[i + 1] != c:
            chars[i], chars[i + 1] = chars[i + 1], c
        elif op == "delete" and len(letters) > 1:
            chars[i] = ""
        elif op == "insert" or not near:
            extra = rng.choice(near) if near else c.lower()
            chars[i] = c + (extra.upper() if c.isupper() else extra)
        else:
            sub = rng.choice(near)
            chars[i] = sub.upper() if c.isupper() else sub
    return "".join(chars)


# ---- EDA ---------------------------------------------------------------------------------------------------------


def eda_text(
    text: str, rng: random.Random, rate: float = 0.1, *, operation: str | None = None, pool: Sequence[str] = ()
) -> str:
    """One EDA operation (Wei & Zou 2019, "Easy Data Augmentation"): random swap, deletion or insertion.

    ``operation`` None picks one at random, as EDA makes each augmented sentence with one operation; about
    ``rate`` of the words (at least one) are swapped or inserted, each word is deleted with probability
    ``rate`` (at least one, never all). EDA inserts WordNet synonyms, but WordNet needs an NLTK data download
    that an offline machine cannot make, so inserted words are drawn from ``pool`` (the record's own words;
    the text's words when empty), which keeps the vocabulary on topic. Unlike EDA we keep case and
    punctuation (the copy should read like the data it joins), line breaks stay where they were, and words
    with digits are never moved, deleted or inserted: "What is 3 plus 4?" must keep its answer.
    """
    lead, words, gaps, trail = _split_words(text)
    movable = [k for k, w in enumerate(words) if not any(c.isdigit() for c in w)]
    choices = [w for w in (pool or word_pool([text])) if w and not any(c.isdigit() for c in w)]
    op = operation or rng.choice(EDA_OPERATIONS)
    if op not in EDA_OPERATIONS:
        raise LmtuneError(f"unknown EDA operation {op!r}", hint=f"use one of {', '.join(EDA_OPERATIONS)}")
    if len(movable) < 2 or (op == "delete" and len(words) < 2):
        op = "insert"  # too few words to swap, or deleting would empty the text
    if not words or (op == "insert" and not choices):
        return text
    n = max(1, round(rate * len(words)))
    keep = [True] * len(words)
    if op == "swap":
        for _ in range(n):
            i, j = rng.sample(movable, 2)
            words[i], words[j] = words[j], words[i]
    elif op == "delete":
        gone = [k for k in movable if rng.random() < rate] or [rng.choice(movable)]
        if len(gone) == len(words):
            gone.remove(rng.choice(gone))
        for k in gone:
            keep[k] = False
    else:
        for _ in range(n):
            k = rng.randrange(len(words))
            new = rng.choice(choices)
            words[k] = f"{new} {words[k]}" if rng.random() < 0.5 else f"{words[k]} {new}"
    return _join_words(lead, words, gaps, trail, keep)


def word_pool(texts: Sequence[str]) -> list[str]:
    words = (w.strip(string.punctuation) for text in texts for w in text.split())
    return [w for w in words if w]
