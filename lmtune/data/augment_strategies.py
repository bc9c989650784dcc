"""The augmentation strategies: what each one does to the chosen texts of a record's copy.

Strategies are plain functions over ``Job``s (the chosen texts of one record's copy and its random generator),
named in ``STRATEGIES``. Model-based strategies receive a ``generate(prompts) -> texts`` function, so this
package never imports the model or evaluation stages; ``lmtune.evaluate.generate.text_generator`` makes one.
Which records and fields they apply to, and the copies they make, are ``lmtune.data.augment``'s.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lmtune.data.pyrename import rename_code
from lmtune.data.textnoise import eda_text, noise_text, word_pool
from lmtune.errors import LmtuneError

# prompts -> generated texts; None where the model could not take the prompt (longer than its context).
Generate = Callable[[list[str]], list[str | None]]

PARAPHRASE_TEMPLATE = "Paraphrase the following text: say the same thing in other words.\n\n{text}"
# Flan-T5's translation prompt ("Translate English to German: ..."), which instruction-tuned causal LMs follow too.
TRANSLATE_TEMPLATE = "Translate {source} to {target}: {text}"
MODEL_STRATEGIES = ("paraphrase", "backtranslate")


@dataclass(frozen=True)
class AugmentOptions:
    """Settings of the strategies; ``rate`` None means the strategy's own default (noise 0.05, EDA 0.1)."""

    rate: float | None = None
    noise_level: str = "both"
    template: str | None = None
    pivot: str = "German"
    language: str = "English"


@dataclass(frozen=True)
class Job:
    """The texts one copy of one record changes (its chosen fields, in order), and the copy's own generator."""

    texts: tuple[str, ...]
    rng: random.Random


@dataclass(frozen=True)
class Outcome:
    """New texts for a job (None: no copy, for ``reason``); ``notes`` count what happened to its pieces."""

    texts: tuple[str, ...] | None
    reason: str | None = None
    notes: tuple[str, ...] = ()


Strategy = Callable[[Sequence[Job], AugmentOptions, Generate | None], list[Outcome]]


# ---- model-based ---------------------------------------------------------------------------------------------------


def _template_names(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise LmtuneError(
            f"--template is not a valid template: {error}", hint="write a literal brace as {{ or }}"
        ) from None


def check_template(template: str, allowed: Sequence[str]) -> None:
    """A prompt template must place the text, and may name only the placeholders its strategy fills."""
    names = _template_names(template)
    unknown = sorted(names - set(allowed))
    if "text" not in names or unknown:
        problem = f"uses unknown placeholders {unknown}" if unknown else "has no {text} placeholder"
        raise LmtuneError(
            f"--template {problem}: {template!r}",
            hint=f"write a prompt with {{text}} where the text goes; placeholders: {', '.join('{' + a + '}' for a in allowed)}",
        )


def _clean(output: str | None, original: str) -> tuple[str | None, str]:
    """The model's text, or None and why it is no use (empty, or the input handed back)."""
    if output is None:
        return None, "too long for the model"
    text = output.strip()
    if not text:
        return None, "empty output"
    if " ".join(text.casefold().split()) == " ".join(original.casefold().split()):
        return None, "same as the input"
    return text, "rewritten"


def paraphrase_texts(
    texts: Sequence[str], generate: Generate, template: str = PARAPHRASE_TEMPLATE
) -> list[tuple[str | None, str]]:
    """Each text reworded by the model, as (new text or None, what happened: "rewritten", "empty output", ...)."""
    outputs = generate([template.format(text=text) for text in texts])
    return [_clean(out, text) for out, text in zip(outputs, texts, strict=True)]


def backtranslate_texts(
    texts: Sequence[str],
    generate: Generate,
    *,
    pivot: str = "German",
    language: str = "English",
    template: str = TRANSLATE_TEMPLATE,
) -> list[tuple[str | None, str]]:
    """Each text translated to ``pivot`` and back to ``language``, as (new text or None, what happened)."""
    there = generate([template.format(source=language, target=pivot, text=text) for text in texts])
    results: list[tuple[str | None, str]] = [(None, "")] * len(texts)
    ok = []
    for k, out in enumerate(there):
        if out is None or not out.strip():
            results[k] = (None, "too long for the model" if out is None else f"empty {pivot} translation")
        else:
            ok.append((k, out.strip()))
    back = generate([template.format(source=pivot, target=language, text=mid) for _, mid in ok])
    for (k, _), out in zip(ok, back, strict=True):
        results[k] = _clean(out, texts[k])
    return results


def _model_strategy(name: str) -> Strategy:
    def run(jobs: Sequence[Job], options: AugmentOptions, generate: Generate | None) -> list[Outcome]:
        if generate is None:
            raise LmtuneError(
                f"strategy '{name}' needs a model",
                hint="name one with --model (hub id, directory, or preset:tiny-chat)",
            )
        flat = [text for job in jobs for text in job.texts]
        if name == "paraphrase":
            done = paraphrase_texts(flat, generate, options.template or PARAPHRASE_TEMPLATE)
        else:
            template = options.template or TRANSLATE_TEMPLATE
            done = backtranslate_texts(
                flat, generate, pivot=options.pivot, language=options.language, template=template
            )
        outcomes, k = [], 0
        for job in jobs:
            pieces = done[k : k + len(job.texts)]
            k += len(job.texts)
            notes = tuple(reason for _, reason in pieces)
            if all(text is None for text, _ in pieces):
                outcomes.append(Outcome(None, reason=notes[0], notes=notes))
            else:
                new = tuple(text if text is not None else old for (text, _), old in zip(pieces, job.texts, strict=True))
                outcomes.append(Outcome(new, notes=notes))
        return outcomes

    return run


# ---- code-rename ---------------------------------------------------------------------------------------------------


def _code_rename(jobs: Sequence[Job], options: AugmentOptions, generate: Generate | None) -> list[Outcome]:
    outcomes = []
    for job in jobs:
        # One mapping per copy: the question's code and the answer's code get the same new names.
        names: dict[str, str] = {}
        taken = sorted({w for text in job.texts for w in re.findall(r"\w+", text)})
        new, notes = [], []
        for text in job.texts:
            renamed, snippet_notes = rename_code(text, job.rng, names=names, taken=taken)
            new.append(renamed)
            notes += snippet_notes
        if tuple(new) == job.texts:
            reason = next((n for n in notes if n != "code: another language"), "no Python code")
            outcomes.append(Outcome(None, reason=reason.removeprefix("code: "), notes=tuple(notes)))
        else:
            outcomes.append(Outcome(tuple(new), notes=tuple(notes)))
    return outcomes


def _noise(jobs: Sequence[Job], options: AugmentOptions, generate: Generate | None) -> list[Outcome]:
    rate = 0.05 if options.rate is None else options.rate
    return [Outcome(tuple(noise_text(t, job.rng, rate, options.noise_level) for t in job.texts)) for job in jobs]


def _eda(jobs: Sequence[Job], options: AugmentOptions, generate: Generate | None) -> list[Outcome]:
    rate = 0.1 if options.rate is None else options.rate
    outcomes = []
    for job in jobs:
        pool = word_pool(job.texts)
        outcomes.append(Outcome(tuple(eda_text(t, job.rng, rate, pool=pool) for t in job.texts)))
    return outcomes


STRATEGIES: dict[str, Strategy] = {
    "noise": _noise,
    "eda": _eda,
    "paraphrase": _model_strategy("paraphrase"),
    "backtranslate": _model_strategy("backtranslate"),
    "code-rename": _code_rename,
}
