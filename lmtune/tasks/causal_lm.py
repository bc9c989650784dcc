"""Task causal_lm: domain adaptation, next-token prediction on every token of raw text."""

from dataclasses import replace

from lmtune.tasks.sft import SFT

CAUSAL_LM = replace(
    SFT, name="causal_lm", summary="a causal LM on raw text (domain adaptation): every token is trained"
)
