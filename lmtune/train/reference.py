"""Where DPO's reference log-probs come from (`reference` of `lmtune.train.preference_step`): the policy itself with
its peft adapter switched off, or log-probs computed once before training and carried in the batch
(`ref_chosen_logps`, `ref_rejected_logps`); else a frozen module. A leaf module, free of torch, so the task registry
can name them without loading the training code."""

ADAPTER_DISABLED = "adapter_disabled"
PRECOMPUTED = "precomputed"
