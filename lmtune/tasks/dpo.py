"""Task dpo: a policy trained directly on preference pairs against a reference (DPO and its family)."""

from lmtune.tasks.base import MODEL_METHODS, Task

DPO = Task(
    name="dpo",
    summary="a causal LM trained on preference pairs against a reference model (DPO, IPO, hinge, robust, ...)",
    model="causal",
    methods=MODEL_METHODS | {"qlora"},
    objective=None,
    records="pairs",
    renders_text=False,
    forgetting_note="not measured for preference runs yet",
)
