"""The run configuration: one YAML file validated once into a frozen, typed `RunConfig`.

Every setting lives in `sections` as a field with its doc string; the CLI's `--set`, `lmtune config docs`, the
README and the saved run all read it from there. `load` reads YAML and overrides into it. Nothing of lmtune but
the errors is imported here.
"""

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
from lmtune.config.sections import (
    ALIGNMENT_TASKS,
    LOWER_IS_BETTER,
    ConfigLike,
    DataConfig,
    EarlyStoppingConfig,
    EvalConfig,
    ForgettingConfig,
    ModelConfig,
    PreferenceConfig,
    ReplayConfig,
    RlhfConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "ALIGNMENT_TASKS",
    "LOWER_IS_BETTER",
    "METHOD_SECTIONS",
    "AdaptersMethod",
    "ConfigLike",
    "DataConfig",
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
    "RlhfConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "dump_config",
    "format_validation_error",
    "iter_field_docs",
    "load_config",
    "parse_override",
    "read_yaml",
]
