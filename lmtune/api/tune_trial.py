"""One trial of `lmtune tune` (lmtune.api.search): its config from the sampled values, the memory check against
`lmtune estimate`, the run through `finetune` with its validation metric reported to the pruner at every
evaluation, and what the trial's run directory says about how it ended (trial.json)."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmtune.api.setup import Say
from lmtune.config import LOWER_IS_BETTER, METHOD_SECTIONS, ConfigLike, RunConfig, TuneConfig, load_config
from lmtune.errors import LmtuneError
from lmtune.fileio import atomic_write_json
from lmtune.rundir import release_run_dir

TRIALS = "trials"
TRIAL_FILE = "trial.json"  # in each trial's run directory: its study, number, state and reason
# Keys that leave a run's peak memory as it is: trials differing only in these share one estimate.
MEMORY_NEUTRAL = {"train.lr", "train.weight_decay", "train.warmup_fraction", "train.warmup_steps", "train.scheduler",
                  "train.betas", "train.label_smoothing", "train.epochs", "train.max_steps", "method.dropout",
                  "method.alpha", "method.lora_dropout", "seed"}  # fmt: skip


class TrialFailed(Exception):
    """A trial that could not finish (a bad combination, NaN, out of memory): Optuna records it FAIL and goes on."""


def direction_of(spec: TuneConfig) -> str:
    if spec.direction != "auto":
        return spec.direction
    return "minimize" if LOWER_IS_BETTER.get(spec.metric, False) else "maximize"


def suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """The trial's value of every searched key; method.name first, and method.* keys its method lacks left out."""
    params: dict[str, Any] = {}
    for path in sorted(space, key=lambda p: p != "method.name"):
        dist, method = space[path], params.get("method.name")
        lacks = method is not None and path.split(".", 2)[1] not in METHOD_SECTIONS[method].model_fields
        if path.startswith("method.") and path != "method.name" and lacks:
            continue
        kind = dist.kind
        if kind == "choice":
            params[path] = trial.suggest_categorical(path, dist.choice)
        elif kind in ("int", "log_int"):
            low, high = dist.range_of(kind)
            params[path] = trial.suggest_int(path, low, high, log=kind == "log_int")
        else:
            low, high = dist.range_of(kind)
            params[path] = trial.suggest_float(path, low, high, log=kind == "log_uniform")
    return params


class Objective:
    """One trial: its config, the memory check, the run, the value (see the module doc)."""

    def __init__(self, config: ConfigLike, overrides: Sequence[str], cfg: RunConfig, spec: TuneConfig, out: Path,
                 say: Say) -> None:  # fmt: skip
        self.config, self.overrides, self.cfg, self.spec, self.out, self.say = config, overrides, cfg, spec, out, say
        t = cfg.train
        # The pruner compares trials at the same amount of training data: evaluations every `grid` rows.
        self.grid = (t.eval_every or 1) * t.batch_size * t.grad_accum
        self.memory: dict[str, str | None] = {}
        self.warned: set[str] = set()

    def _warnings(self, text: str, warning: bool = False) -> None:
        """A trial's warnings, each said once for the study (every trial reads the same data); the rest is quiet."""
        if warning and text not in self.warned:
            self.warned.add(text)
            self.say(text, warning=True)

    def __call__(self, trial: Any) -> float:
        import optuna

        params = suggest(trial, self.spec.space)
        run_dir = self.out / TRIALS / f"trial-{trial.number:03d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        shown = ", ".join(f"{k}={short(v)}" for k, v in params.items())
        self.say(f"trial {trial.number}: {shown}")
        try:
            value, steps = self._run(trial, params, run_dir)
        except optuna.TrialPruned as e:
            self._end(trial, run_dir, "pruned", str(e))
            raise
        except StudyError:
            release_run_dir(run_dir)
            raise  # a setting of the study itself is wrong: every trial would fail alike
        except Exception as e:  # a trial's failure is recorded and the study goes on
            reason = one_line(e)
            self._end(trial, run_dir, "failed", reason)
            raise TrialFailed(reason) from e
        trial.set_user_attr("steps", steps)
        self._end(trial, run_dir, "complete", None)
        self.say(f"trial {trial.number}: {self.spec.metric} {value:.4g} after {steps} steps")
        return value

    def _run(self, trial: Any, params: dict[str, Any], run_dir: Path) -> tuple[float, int]:
        import optuna

        from lmtune.api.train import finetune

        sets = [f"{k}={json.dumps(v)}" for k, v in params.items()]
        cfg = load_config(self.config, [*self.overrides, *sets, f"name={self.cfg.name}-trial-{trial.number}"],
                          str(run_dir))  # fmt: skip
        t = cfg.train
        every = max(1, round(self.grid / (t.batch_size * t.grad_accum))) if t.eval_every else None
        group = t.report_group or trial.study.study_name  # a study's trials log as one group
        cfg = cfg.model_copy(
            update={"tune": None, "train": t.model_copy(update={"eval_every": every, "report_group": group})}
        )
        refused = self._memory_refusal(cfg, params)
        if refused:
            raise optuna.TrialPruned(refused)
        values: dict[int, float] = {}  # by step

        def on_eval(state: Any, result: dict[str, float]) -> None:
            trial.set_user_attr("steps", state.step)
            if state.step == 0:
                return  # before training: nothing to compare yet
            if self.spec.metric not in result:
                raise StudyError(self.spec.metric, result)
            value = float(result[self.spec.metric])
            if not math.isfinite(value):
                raise LmtuneError(f"validation {self.spec.metric} is {value} at step {state.step}")
            values[state.step] = value
            index = max(1, round(state.step * t.batch_size * t.grad_accum / self.grid))
            trial.report(value, index)
            if trial.should_prune():
                raise optuna.TrialPruned(
                    f"pruned at step {state.step}: {self.spec.metric} {value:.4g} behind the other trials"
                )

        result = finetune(cfg, after_eval=[on_eval], report=self._warnings)
        if not values:
            raise LmtuneError("the trial made no validation (no validation data, or no evaluation after training)")
        # The trial is worth what its final model is: the evaluation whose weights final/ holds (the best one by
        # the task's metric, train.keep: best), else the last.
        kept = (result.summary.get("final_weights") or {}).get("step")
        value = values.get(kept, values[max(values)]) if isinstance(kept, int) else values[max(values)]
        return value, int(result.summary.get("steps") or 0)

    def _memory_refusal(self, cfg: RunConfig, params: dict[str, Any]) -> str | None:
        """Why `lmtune estimate` says the trial cannot fit (None when it fits); one estimate per memory-relevant
        combination of the searched values."""
        key = json.dumps({k: v for k, v in params.items() if k not in MEMORY_NEUTRAL}, sort_keys=True)
        if key not in self.memory:
            from lmtune.api.preflight import estimate

            peak = estimate(cfg).memory.peak
            limit, where = _memory_limit(self.spec)
            self.memory[key] = (
                f"not started: lmtune estimate puts its peak memory at {peak / 2**20:.0f} MiB, over the "
                f"{limit / 2**20:.0f} MiB of {where}"
                if peak > limit
                else None
            )
        return self.memory[key]

    def _end(self, trial: Any, run_dir: Path, state: str, reason: str | None) -> None:
        release_run_dir(run_dir)  # a pruned or failed run leaves its directory locked by this process
        if reason:
            trial.set_user_attr("reason", reason)
            self.say(f"trial {trial.number} {state}: {reason}", warning=state == "failed")
        if run_dir.is_dir():
            mark(run_dir, trial.study.study_name, trial.number, state, reason)
            if not self.spec.keep_checkpoints:
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            if state != "complete" and (run_dir / "metrics.jsonl").is_file():
                from lmtune.report import write_report

                write_report(run_dir)  # the curves up to where it stopped


class StudyError(LmtuneError):
    def __init__(self, metric: str, result: dict[str, float]) -> None:
        super().__init__(
            f"tune.metric {metric}: this task's validation does not log it",
            hint=f"pick one it logs: {', '.join(sorted(k for k in result if k != 'tokens'))}",
        )


def _memory_limit(spec: TuneConfig) -> tuple[float, str]:
    if spec.memory_limit_mb is not None:
        return spec.memory_limit_mb * 2**20, "tune.memory_limit_mb"
    import torch

    if torch.cuda.is_available():
        return float(torch.cuda.get_device_properties(0).total_memory), "the GPU"
    import psutil

    return float(psutil.virtual_memory().total), "this machine's RAM"


def mark(run_dir: Path, study: str, number: int, state: str, reason: str | None) -> None:
    atomic_write_json(run_dir / TRIAL_FILE, {"study": study, "trial": number, "state": state, "reason": reason})


def one_line(e: BaseException) -> str:
    """An error as one line: a config error's problems joined, without its "invalid config (source):" head."""
    message = e.message if isinstance(e, LmtuneError) else str(e)
    lines = [x.strip() for x in message.splitlines() if x.strip()]
    if len(lines) > 1 and lines[0].startswith("invalid config"):
        lines = lines[1:]
    return "; ".join(lines) or type(e).__name__


def short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
