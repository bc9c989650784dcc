"""The run configuration: one YAML file validated once into a frozen, typed `RunConfig`.

Every setting is a field with its doc string in one section module (`model`, `data`, `train`, `evaluation`,
`alignment`, `methods`), gathered with the cross-field checks into `RunConfig` (`sections`); the CLI's `--set`,
`lmtune config docs`, the README and the saved run all read them from there. `load` reads YAML and overrides into
it. Nothing of lmtune but the errors is imported here.
"""

from lmtune.config.alignment import PreferenceConfig, RewardConfig, RlhfConfig
from lmtune.config.data import DataConfig, DataSource, ReplayConfig
from lmtune.config.evaluation import EvalConfig, ForgettingConfig
from lmtune.config.load import (
    apply_overrides,
    dump_config,
    format_validation_error,
    iter_field_docs,
    load_config,
    parse_override,
    read_yaml,
)
from lmtune.config.methods import (
    METHOD_SECTIONS,
    AdaptersMethod,
    DoraMethod,
    FreezeMethod,
    FullMethod,
    Ia3Method,
    LoraMethod,
    MethodConfig,
    PrefixTuningMethod,
    PromptTuningMethod,
    QloraMethod,
)
from lmtune.config.model import ModelConfig, RopeScaling
from lmtune.config.sections import ConfigLike, RunConfig
from lmtune.config.tasks import ALIGNMENT_TASKS, TASK_RULES, TaskRules
from lmtune.config.train import LOWER_IS_BETTER, EarlyStoppingConfig, TrainConfig
from lmtune.config.tune import Distribution, TuneConfig

__all__ = [
    "ALIGNMENT_TASKS",
    "LOWER_IS_BETTER",
    "METHOD_SECTIONS",
    "TASK_RULES",
    "AdaptersMethod",
    "ConfigLike",
    "DataConfig",
    "DataSource",
    "Distribution",
    "DoraMethod",
    "EarlyStoppingConfig",
    "EvalConfig",
    "ForgettingConfig",
    "FreezeMethod",
    "FullMethod",
    "Ia3Method",
    "LoraMethod",
    "MethodConfig",
    "ModelConfig",
    "PreferenceConfig",
    "PrefixTuningMethod",
    "PromptTuningMethod",
    "QloraMethod",
    "ReplayConfig",
    "RewardConfig",
    "RlhfConfig",
    "RopeScaling",
    "RunConfig",
    "TaskRules",
    "TrainConfig",
    "TuneConfig",
    "apply_overrides",
    "dump_config",
    "format_validation_error",
    "iter_field_docs",
    "load_config",
    "parse_override",
    "read_yaml",
]
