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
from lmtune.config.sections import (
    LOWER_IS_BETTER,
    METHOD_SECTIONS,
    AdaptersMethod,
    ConfigLike,
    DataConfig,
    DoraMethod,
    EarlyStoppingConfig,
    EvalConfig,
    ForgettingConfig,
    FreezeMethod,
    FullMethod,
    Ia3Method,
    LoraMethod,
    MethodConfig,
    ModelConfig,
    PrefixTuningMethod,
    PromptTuningMethod,
    QloraMethod,
    ReplayConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
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
    "PrefixTuningMethod",
    "PromptTuningMethod",
    "QloraMethod",
    "ReplayConfig",
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
