"""The tokenizer of a run, and where a model name points (preset, local directory, hub id).

Kept apart from lmtune.model, and free of torch: `lmtune data check` and `data preview` need a tokenizer but no
model, and importing torch (seconds) would dominate them. transformers' AutoTokenizer reads the model's config,
whose module imports torch; `load_tokenizer(light=True)` loads a local tokenizer through the class its
tokenizer_config.json names instead, and falls back to AutoTokenizer for anything less plain.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from lmtune.config import ModelConfig
from lmtune.data.load import looks_like_path
from lmtune.errors import LmtuneError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PRESET_PREFIX = "preset:"
PRESETS_DIR = Path(__file__).parent / "presets"


def is_preset(name: str) -> bool:
    return name.startswith(PRESET_PREFIX)


def preset_dir(name: str) -> Path:
    key = name.removeprefix(PRESET_PREFIX)
    path = PRESETS_DIR / key
    if not (path / "config.json").is_file():
        known = sorted(p.name for p in PRESETS_DIR.iterdir() if (p / "config.json").is_file())
        raise LmtuneError(f"model.name: unknown preset {name!r}", hint=f"built-in presets: {', '.join(known)}")
    return path


def source(name: str) -> str:
    return str(preset_dir(name)) if is_preset(name) else name


def load_error(what: str, name: str, err: Exception) -> LmtuneError:
    local = Path(name).exists()
    if not local and looks_like_path(name):
        # transformers would report a malformed hub repo id here, which misleads.
        return LmtuneError(
            f"could not load {what} {name!r}: no such directory",
            hint="give the path of a directory holding a transformers model (config.json and weights), "
            "or a hub id like org/model",
        )
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "trust_remote_code" in str(err) or (local and _has_custom_code(Path(name))):
        return LmtuneError(
            f"could not load {what} {name!r}: it ships its own Python code (auto_map in its config), which lmtune "
            "does not run unless told to",
            hint="if you trust the code in that model, set model.trust_remote_code: true "
            "(--set model.trust_remote_code=true)",
        )
    if local and what == "model" and _pickle_only(Path(name)):
        return LmtuneError(
            f"could not load model {name!r}: it holds only pickle weights (pytorch_model.bin), which lmtune refuses "
            "on purpose: unpickling a file can run any code in it",
            hint="convert them once to safetensors (torch's weights_only loader runs no code): python -c \"import "
            "torch; from safetensors.torch import save_file; d = 'DIR'; save_file({k: v.contiguous().clone() for "
            "k, v in torch.load(d + '/pytorch_model.bin', weights_only=True).items()}, d + '/model.safetensors', "
            "metadata={'format': 'pt'})\"",
        )
    hint = (
        "check the directory holds a transformers model (config.json and weights)"
        if local
        else "check the model id, your network and HF token; offline, use a local directory or 'preset:tiny-chat'"
    )
    return LmtuneError(f"could not load {what} {name!r}: {reason}", hint=hint)


def _has_custom_code(path: Path) -> bool:
    config = path / "config.json"
    try:
        return config.is_file() and "auto_map" in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def _pickle_only(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*.bin")) and not any(path.glob("*.safetensors"))


def _light_class(path: Path) -> type | None:
    """The tokenizer class a plain local tokenizer names (tokenizer_config.json's `tokenizer_class`), or None where
    AutoTokenizer's own resolution may choose differently: custom code, a class transformers lacks, or a Llama
    tokenizer over a byte-level tokenizer.json (AutoTokenizer then picks TokenizersBackend)."""
    try:
        tok_config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
        model_config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        byte_level = '"ByteLevel"' in (path / "tokenizer.json").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    name = tok_config.get("tokenizer_class")
    if not isinstance(name, str) or "auto_map" in tok_config or "auto_map" in model_config:
        return None
    name = name.removesuffix("Fast")
    if name == "LlamaTokenizer" and byte_level:
        return None
    import transformers

    cls = getattr(transformers, name, None) or getattr(transformers, name + "Fast", None)
    return cls if isinstance(cls, type) else None


def load_tokenizer(cfg: ModelConfig, *, light: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer, with a pad token (the EOS token when it has none: padding is masked out of the loss).

    `light`: load a plain local tokenizer without importing torch (see the module's docstring); the same class
    and files as AutoTokenizer (tests/test_tokenizer.py compares them), for commands that train nothing."""
    name = cfg.tokenizer or cfg.name
    path = Path(source(name))
    cls = _light_class(path) if light and path.is_dir() and cfg.revision is None else None
    try:
        if cls is not None:
            tok = cls.from_pretrained(str(path))
        else:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(
                str(path) if path.is_dir() else name, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
            )
    except (OSError, ValueError) as e:
        raise load_error("tokenizer", name, e) from None
    if not tok.is_fast:
        raise LmtuneError(
            f"tokenizer of {name!r} is a slow (Python) tokenizer",
            hint="lmtune needs a fast tokenizer for exact loss masks (offsets); install `tokenizers` or convert it",
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def stop_token_ids(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokens generation stops on: the tokenizer's EOS and the model's generation config, when it has one."""
    ids = {tokenizer.eos_token_id}
    from transformers import GenerationConfig

    try:
        gen = GenerationConfig.from_pretrained(source(cfg.name), revision=cfg.revision)
    except (OSError, ValueError):
        gen = None  # no generation_config.json (or offline): generation falls back to the tokenizer's EOS
    eos = getattr(gen, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos])
    return sorted(i for i in ids if i is not None)
