"""Task rlhf: a policy samples answers to prompts and learns from a reward model's scores (GRPO/RLOO).

The one task outside lmtune's loop: sampling answers is an online algorithm, which trl's GRPO/RLOO trainers run
(`lmtune.align.rl`); it shares the run start, the data check and the run directory with the other tasks.
"""

from lmtune.tasks.base import CAUSAL_METHODS, Task

RLHF = Task(
    name="rlhf",
    summary="a policy trained on sampled answers scored by a reward model (GRPO or RLOO, by trl)",
    model="causal",
    methods=CAUSAL_METHODS & {"full", "freeze", "lora", "dora", "qlora"},
    objective_name=None,
    records="prompts",
    renders_text=False,
)
