"""Reading a config: YAML and `--set` overrides into a RunConfig, errors a person can act on, and the field docs."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lmtune.config.methods import METHOD_SECTIONS, LoraMethod
from lmtune.config.sections import RunConfig
from lmtune.errors import LmtuneError

_FRIENDLY = {
    "greater_than": "must be > {gt:g}",
    "greater_than_equal": "must be >= {ge:g}",
    "less_than": "must be < {lt:g}",
    "less_than_equal": "must be <= {le:g}",
    "missing": "is required",
}


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The pydantic model that owns the field at `loc`, skipping union tags (for the list of allowed keys)."""
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            continue
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return model
        model = nested[0]
    return model


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: `train.lr: must be > 0, got -1`, with the allowed keys for unknown ones."""
    lines = []
    method_tags = set(METHOD_SECTIONS)
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        if len(loc) > 1 and loc[0] == "method" and loc[1] in method_tags:
            loc = [loc[0], *loc[2:]]  # drop the discriminated-union tag
        path = ".".join(loc) or "(top level)"
        kind = e["type"]
        if kind == "extra_forbidden":
            owner = _model_at(e["loc"][:-1])
            if owner is RunConfig or len(loc) == 1:
                allowed = sorted(RunConfig.model_fields)
            elif loc[0] == "method":
                allowed = sorted(_method_fields(e["loc"]))
            else:
                allowed = sorted(owner.model_fields) if owner else []
            lines.append(f"{path}: unknown key; allowed here: {', '.join(allowed)}")
            continue
        if kind == "union_tag_invalid":
            lines.append(f"{path}: must be one of {', '.join(sorted(method_tags))}, got {e['ctx']['tag']!r}")
            continue
        if kind in _FRIENDLY:
            msg = _FRIENDLY[kind].format(**e.get("ctx", {}))
        elif kind == "value_error":
            msg = str(e["msg"]).removeprefix("Value error, ")
            lines.append(msg if ":" in msg.split(" ")[0] else f"{path}: {msg}")
            continue
        else:
            msg = str(e["msg"])
            msg = msg[0].lower() + msg[1:] if msg else msg
            msg = msg.replace("input should be", "must be")
        if kind != "missing":
            msg += f", got {e['input']!r}"
        lines.append(f"{path}: {msg}")
    return f"invalid config {source}:\n" + "\n".join(f"  {line}" for line in lines)


def _method_fields(loc: Sequence[Any]) -> set[str]:
    tag = str(loc[1]) if len(loc) > 1 else "lora"
    return set(METHOD_SECTIONS.get(tag, LoraMethod).model_fields)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`train.lr=1e-4` -> (['train', 'lr'], 1e-4); the value is read as YAML so numbers, bools and lists work."""
    if "=" not in item:
        raise LmtuneError(f"--set {item!r}: expected KEY=VALUE", hint="e.g. --set train.lr=1e-4")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    # YAML 1.1 reads '1e-4' as a string; users mean a number.
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value):
        value = float(value)
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    out = dict(raw)
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for k in keys[:-1]:
            child = node.get(k)
            if isinstance(child, str) and k == "method":
                child = {"name": child}
            node[k] = dict(child) if isinstance(child, dict) else {}
            node = node[k]
        node[keys[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise LmtuneError(
            f"config file not found: {p}", hint="pass the path of a YAML file, e.g. configs/quickstart.yaml"
        )
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        problem = str(getattr(e, "problem", e))
        hint = None
        if "'\\t'" in problem and mark is not None:
            hint = f"YAML indents with spaces only: replace the tab at line {mark.line + 1}, column {mark.column + 1}"
        raise LmtuneError(f"{where}: not valid YAML: {problem}", hint=hint) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise LmtuneError(f"{p}: the top level must be a mapping of sections (model, data, method, train)")
    return raw


def load_config(
    source: str | Path | dict[str, Any] | RunConfig, overrides: Sequence[str] = (), output_dir: str | None = None
) -> RunConfig:
    """Read a YAML path (or a dict), apply `--set` overrides, validate. Errors name the key path."""
    if isinstance(source, RunConfig) and not overrides and output_dir is None:
        return source  # as validated (re-validating a dump would mark every default as set by the user)
    if isinstance(source, RunConfig):
        raw = source.model_dump(mode="json")
        label = "(RunConfig)"
    elif isinstance(source, dict):
        raw, label = dict(source), "(dict)"
    else:
        raw, label = read_yaml(source), str(source)
        raw.setdefault("name", Path(source).stem)
    raw = apply_overrides(raw, overrides)
    if output_dir is not None:
        raw["output_dir"] = output_dir
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise LmtuneError(format_validation_error(e, label)) from None


def dump_config(cfg: RunConfig) -> str:
    data = cfg.model_dump(mode="json")
    if data.get("tune") is None:
        data.pop("tune", None)  # only `lmtune tune` reads it: a run's config.yaml stays as it was without one
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def iter_field_docs(model: type[BaseModel] = RunConfig, prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(key path, default, description) for every setting: the source of `lmtune config docs`."""
    for name, field in model.model_fields.items():
        ann = field.annotation
        nested = [c for c in (ann, *getattr(ann, "__args__", ())) if isinstance(c, type) and issubclass(c, BaseModel)]
        if name == "method":
            for sub in METHOD_SECTIONS.values():
                tag = sub.model_fields["name"].default
                yield f"method (name: {tag})", "", f"{tag} method settings"
                for sub_name, sub_field in sub.model_fields.items():
                    if sub_name != "name":
                        default = repr(sub_field.get_default(call_default_factory=True))
                        yield f"method.{sub_name}", default, sub_field.description or ""
            continue
        if nested:
            yield from iter_field_docs(nested[0], f"{prefix}{name}.")
            continue
        default = "(required)" if field.is_required() else repr(field.get_default(call_default_factory=True))
        yield f"{prefix}{name}", default, field.description or ""
