"""Task reward: a reward model (a sequence classifier with one output) trained on preference pairs."""

from lmtune.tasks.base import MODEL_METHODS, Task
from lmtune.tasks.preference import reward_objective, reward_summary, tokenize_for

REWARD = Task(
    name="reward",
    summary="a reward model scoring answers, from preference pairs (Bradley-Terry loss); pairwise accuracy",
    model="reward",
    methods=MODEL_METHODS,
    objective_name=None,
    objective_for_run=reward_objective,
    tokenize=tokenize_for(for_reward=True),
    summary_extra=reward_summary,
    records="pairs",
    unit="pairs",
    renders_text=False,
    predicts_with_head=True,
    forgetting_note="not measured: task reward trains a scoring head, not next-token prediction",
    summary_metrics=("accuracy", "margin"),
    best_metric="accuracy",
)
