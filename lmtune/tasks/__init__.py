"""The task registry: what differs between training types (`task:` in the config) lives in one entry each.

A task says how its records are tokenized, which model class loads, which objective trains, which metrics
validation reports beyond the loss, where its labels come from, whether forgetting is measured, and which methods
apply. The recipes (`lmtune.api`) ask the entry instead of comparing task names. Adding a task is one file in
this package plus one line in `TASKS` below.
"""

from __future__ import annotations

from lmtune.tasks.base import Task, TokenizeOptions
from lmtune.tasks.causal_lm import CAUSAL_LM
from lmtune.tasks.classification import CLASSIFICATION
from lmtune.tasks.dpo import DPO
from lmtune.tasks.reward import REWARD
from lmtune.tasks.rlhf import RLHF
from lmtune.tasks.seq2seq import SEQ2SEQ
from lmtune.tasks.sft import SFT
from lmtune.tasks.token_classification import TOKEN_CLASSIFICATION

TASKS: dict[str, Task] = {
    "sft": SFT,
    "causal_lm": CAUSAL_LM,
    "seq2seq": SEQ2SEQ,
    "classification": CLASSIFICATION,
    "token_classification": TOKEN_CLASSIFICATION,
    "reward": REWARD,
    "dpo": DPO,
    "rlhf": RLHF,
}

__all__ = ["TASKS", "Task", "TokenizeOptions"]
