"""Task dpo: a policy trained directly on preference pairs against a reference (DPO and its family, ORPO,
SimPO), by lmtune's loop."""

from lmtune.tasks.base import MODEL_METHODS, Task
from lmtune.tasks.preference import dpo_objective, dpo_summary, tokenize_for

DPO = Task(
    name="dpo",
    summary="a causal LM trained on preference pairs against a reference model (DPO, IPO, hinge, robust, ...)",
    model="causal",
    methods=MODEL_METHODS | {"qlora"},
    objective_name=None,
    objective_for_run=dpo_objective,
    tokenize=tokenize_for(for_reward=False),
    summary_extra=dpo_summary,
    records="pairs",
    unit="pairs",
    renders_text=False,
    summary_metrics=("accuracy", "margin", "reward_chosen", "reward_rejected"),
)
