"""`tune`: hyperparameter search of a config on Optuna, each trial an ordinary run directory of the study.

The recipe: the config's `tune:` section → every searched key path checked against the config schema (as `--set`
checks it) → the study in an Optuna RDB storage (an SQLite file in the study directory, or any URL that several
workers share) → trials: the config's own values first, then the sampler's; each trial is refused when `lmtune
estimate` puts it over the machine's memory, trains through `finetune` into study_dir/trials/trial-NNN, reports
its validation metric at every evaluation so the pruner can stop it, and is recorded with its reason when it fails
→ trials.csv, best.yaml and study.html (lmtune.api.study_page).

Optuna does the sampling, pruning and storage; what lmtune adds is the mapping of its config onto Optuna's trials,
the pruner's comparable resource (training rows seen) and the worker bookkeeping that makes `--resume` after a
kill -9 rerun the trial that died.
"""

from __future__ import annotations

import json
import shutil
import socket
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune.api.setup import Say, silent
from lmtune.api.study_page import write_outputs
from lmtune.api.tune_trial import Objective, TrialFailed, direction_of, mark, one_line
from lmtune.config import ConfigLike, RunConfig, TuneConfig, load_config
from lmtune.errors import LmtuneError

STUDY_DB = "study.db"


@dataclass
class TuneResult:
    study_dir: Path
    study_name: str
    storage: str
    metric: str
    direction: str
    trials: list[dict[str, Any]] = field(default_factory=list)  # number, state, value, params, run_dir, steps, reason
    best: dict[str, Any] | None = None
    start: dict[str, Any] | None = None  # the trial of the config's own values
    files: dict[str, str] = field(default_factory=dict)  # best.yaml, trials.csv, study.html


def tune(
    config: ConfigLike,
    *,
    overrides: Sequence[str] = (),
    study_dir: str | Path | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    report: Say | None = None,
) -> TuneResult:
    """Search the config's `tune.space` with Optuna and write the study directory; returns every trial and the best.

    `storage` is an Optuna RDB URL (postgresql://…, mysql://…, sqlite:///…) that several workers, on one machine or
    many, share: each runs `tune` with the same URL and study name and takes the next trials. Without it the study
    lives in study_dir/study.db, and a study directory that already holds one needs `resume` (finished trials are
    kept, a trial its dead worker left running is run again) or `overwrite`.
    """
    import optuna

    say = report or silent
    cfg = load_config(config, overrides)
    spec = _spec(cfg)
    check_space(config, overrides, spec)
    metric, direction = spec.metric, direction_of(spec)
    if spec.pruner != "none" and cfg.train.eval_every is None:
        raise LmtuneError(
            f"tune.pruner {spec.pruner}: the pruner compares trials at their evaluations; set train.eval_every",
            hint="e.g. --set train.eval_every=50, or tune.pruner: none",
        )
    out = Path(study_dir) if study_dir is not None else Path("runs") / f"{cfg.name}-tune"
    url = storage or _local_storage(out, resume=resume, overwrite=overwrite)
    name = study_name or cfg.name
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = _storage(url)
    study = optuna.create_study(storage=db, study_name=name, direction=direction, load_if_exists=True,
                                sampler=_sampler(spec, cfg.seed, len(_existing(db, name))),
                                pruner=_pruner(spec))  # fmt: skip
    study.set_user_attr("metric", metric)
    _requeue_dead(study, db, say)
    if spec.start_trial and not study.trials:
        study.enqueue_trial(_start_params(cfg, spec, say), user_attrs={"start": True}, skip_if_exists=True)
    objective = Objective(config, overrides, cfg, spec, out, say)
    enough = _Enough(spec.n_trials)
    if enough.reached(study):
        say(f"study {name!r} already has {spec.n_trials} trials; writing its outputs")
    else:
        say(f"study {name!r} in {url}: {spec.n_trials} trials, {metric} ({direction}), sampler {spec.sampler}, "
            f"pruner {spec.pruner}")  # fmt: skip
        study.optimize(objective, timeout=spec.timeout, catch=(TrialFailed,), callbacks=[enough], gc_after_trial=True)
    trials = [_trial_row(t) for t in study.trials]
    result = TuneResult(out, name, url, metric, direction, trials)
    result.start = next((t for t in trials if t["start"]), None)
    done = [t for t in trials if t["state"] == "complete" and t["value"] is not None]
    if done:
        pick = min if direction == "minimize" else max
        result.best = pick(done, key=lambda t: t["value"])
    result.files = write_outputs(study, result, cfg, config, overrides, say)
    return result


def _spec(cfg: RunConfig) -> TuneConfig:
    if cfg.tune is None or not cfg.tune.space:
        raise LmtuneError(
            "the config has no tune.space: nothing to search",
            hint="add a `tune:` section, e.g. tune: {metric: loss, space: {train.lr: {log_uniform: [1.0e-5, 1.0e-3]}}}",
        )
    return cfg.tune


def check_space(config: ConfigLike, overrides: Sequence[str], spec: TuneConfig) -> None:
    """Every searched path and the ends (or each choice) of its range validated as `--set PATH=VALUE` would be, so a
    typo fails now with the schema's message and not after hours of trials. A method.* key passes when some
    searched method.name accepts it."""
    methods = spec.space["method.name"].choice if "method.name" in spec.space else [None]
    for path, dist in spec.space.items():
        if path.split(".")[0] in ("tune", "name", "output_dir"):
            raise LmtuneError(f"tune.space.{path}: {path.split('.')[0]} cannot be searched")
        for value in dist.values():
            first: LmtuneError | None = None
            for method in methods if path != "method.name" else [None]:
                extra = [f"method.name={method}"] if method is not None and path.startswith("method.") else []
                try:
                    load_config(config, [*overrides, *extra, f"{path}={json.dumps(value)}"])
                    break
                except LmtuneError as e:
                    first = first or e
            else:
                assert first is not None
                raise LmtuneError(f"tune.space.{path} = {value!r}: {one_line(first)}", hint=first.hint)


def _local_storage(out: Path, *, resume: bool, overwrite: bool) -> str:
    db = out / STUDY_DB
    if db.exists() and not resume:
        if not overwrite:
            raise LmtuneError(
                f"study directory {out} already holds a study",
                hint="continue it with --resume, start again with --overwrite, or pick another --study-dir",
            )
        shutil.rmtree(out)
    if resume and not db.exists():
        raise LmtuneError(f"--resume: {out} holds no study yet ({STUDY_DB})", hint="start it without --resume")
    out.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db.resolve()}"


def _storage(url: str) -> Any:
    """Optuna's RDB storage; heartbeats let a worker on another machine fail (and rerun) a trial whose worker died."""
    from optuna.storages import RDBStorage, RetryFailedTrialCallback

    # SQLite serialises writers: wait for the lock instead of failing when two local workers write at once.
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning: heartbeats
            return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=60, grace_period=180,
                              heartbeat_stale_trial_callback=RetryFailedTrialCallback(max_retry=1))  # fmt: skip
    except Exception as e:  # sqlalchemy: bad URL, missing driver, refused connection
        raise LmtuneError(f"--storage {url}: cannot open it: {str(e).splitlines()[0]}") from None


def _existing(db: Any, name: str) -> list[Any]:
    try:
        return db.get_all_trials(db.get_study_id_from_name(name), deepcopy=False)
    except KeyError:
        return []


def _sampler(spec: TuneConfig, seed: int, existing: int) -> Any:
    """Seeded by the run's seed, moved on by the trials already there (a resumed or second worker draws anew)."""
    import optuna

    if spec.sampler == "grid":
        return optuna.samplers.GridSampler({k: d.choice for k, d in spec.space.items()}, seed=seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed + existing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning
        return optuna.samplers.TPESampler(n_startup_trials=spec.startup_trials, seed=seed + existing)


def _pruner(spec: TuneConfig) -> Any:
    import optuna

    if spec.pruner == "median":
        # Evaluations are reported from 1: the pruner may stop a trial at evaluation warmup_evals + 1 on.
        return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_evals + 1)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=spec.warmup_evals + 1)
    return optuna.pruners.NopPruner()


def _start_params(cfg: RunConfig, spec: TuneConfig, say: Say) -> dict[str, Any]:
    """The config's own value of every searched key (those its method lacks left to the sampler)."""
    values: dict[str, Any] = {}
    dumped = cfg.model_dump(mode="json")
    for path, dist in spec.space.items():
        node: Any = dumped
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            continue
        inside = node in dist.choice if dist.choice is not None else dist.values()[0] <= node <= dist.values()[1]
        if not inside:
            say(f"the config's {path} ({node!r}) lies outside tune.space; the first trial uses it anyway", warning=True)
        values[path] = node
    return values


class _Enough:
    """Stop once the study holds n_trials (every worker's, finished or running; a trial rerun after its worker
    died counts once)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def reached(self, study: Any) -> bool:
        from optuna.trial import TrialState

        counted = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
        return sum(1 for t in counted if not t.user_attrs.get("requeued")) >= self.n

    def __call__(self, study: Any, trial: Any) -> None:
        if self.reached(study):
            study.stop()


def _requeue_dead(study: Any, db: Any, say: Say) -> None:
    """Trials left RUNNING by a worker of this machine that is gone (kill -9): failed, and their values queued to
    run again (workers on other machines are failed by the storage's heartbeat instead)."""
    import psutil
    from optuna.trial import TrialState

    host = socket.gethostname()
    study_id = db.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        where, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if where != host or not pid.isdigit() or psutil.pid_exists(int(pid)):
            continue
        trial_id = db.get_trial_id_from_study_id_trial_number(study_id, t.number)
        db.set_trial_user_attr(trial_id, "requeued", True)
        db.set_trial_user_attr(trial_id, "reason", f"its worker (PID {pid}) stopped; the trial runs again")
        db.set_trial_state_values(trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, "start": t.user_attrs.get("start", False)})
        if t.user_attrs.get("run_dir"):
            mark(Path(t.user_attrs["run_dir"]), study.study_name, t.number, "failed", "its worker stopped")
        say(f"trial {t.number} was left running by a stopped worker: it runs again", warning=True)


def _trial_row(t: Any) -> dict[str, Any]:
    dur = t.duration.total_seconds() if t.duration is not None else None
    return {
        "number": t.number,
        "state": t.state.name.lower(),
        "value": t.value,
        "params": dict(t.params),
        "run_dir": t.user_attrs.get("run_dir"),
        "steps": t.user_attrs.get("steps"),
        "seconds": dur,
        "reason": t.user_attrs.get("reason"),
        "start": bool(t.user_attrs.get("start")),
    }
