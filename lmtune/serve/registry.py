"""The models a server answers for: runs, exported model directories, and LoRA runs that share a base.

LoRA/DoRA/IA3 runs trained on the same base weights are served from ONE copy of the base: the first one loads
base + adapter (`load_tuned`), the others only add their adapter to it (peft's `load_adapter`), and a request
picks its adapter by the `model` field (`set_adapter` before its batch runs). Two runs share a base when they name
the same base model, or, for a preset base that each run keeps a copy of, when those copies' bytes are equal.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune.errors import LmtuneError
from lmtune.rope import context_length

Reporter = Callable[..., None]
ADAPTER_METHODS = ("lora", "dora", "ia3")


@dataclass
class Backend:
    """One model in memory (a base with its adapters, or a plain model) and the lock its generation holds."""

    model: Any
    tokenizer: Any
    chat: bool  # prompts go through the tokenizer's chat template
    kind: str = "causal"  # or "classifier", "token_classifier": answered on /v1/classify
    max_length: int | None = None  # a classifier's inputs are cut to the length it trained on
    adapters: list[str] = field(default_factory=list)
    # Every adapter is plain LoRA: requests for different adapters can share a batch (peft's mixed-adapter batches
    # take `adapter_names`; peft refuses them for DoRA and has none for IA3).
    mixes_adapters: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    @property
    def context(self) -> int | None:
        return context_length(self.model.config)  # a dynamic RoPE scaling stretches it (lmtune.rope)


@dataclass(frozen=True)
class Served:
    """What one public model name maps to: a backend and the adapter to switch to (None: the model as it is)."""

    name: str
    backend: Backend
    adapter: str | None
    source: str


@dataclass
class Registry:
    models: dict[str, Served] = field(default_factory=dict)
    backends: list[Backend] = field(default_factory=list)
    bases: dict[str, Backend] = field(default_factory=dict)  # base key -> the backend holding that base
    device: str = "cpu"

    def get(self, name: str) -> Served | None:
        return self.models.get(name)

    def memory(self) -> list[dict[str, Any]]:
        """Per backend: bytes of the base weights and of each adapter's weights (what N adapters cost)."""
        rows = []
        for b in self.backends:
            adapter_bytes = {a: 0 for a in b.adapters}
            base = 0
            for name, p in b.model.named_parameters():
                owner = next((a for a in b.adapters if f".{a}." in name or name.endswith(f".{a}")), None)
                if owner is None:
                    base += p.numel() * p.element_size()
                else:
                    adapter_bytes[owner] += p.numel() * p.element_size()
            rows.append({"base_bytes": base, "adapter_bytes": adapter_bytes, "models": self._names(b)})
        return rows

    def _names(self, backend: Backend) -> list[str]:
        return [s.name for s in self.models.values() if s.backend is backend]


def load_registry(sources: list[str | Path], report: Reporter, device: str = "auto") -> Registry:
    """Load each source (a run directory or a Hugging Face model directory) under its directory name, onto
    `device` (auto: cuda when there is one; cpu, cuda, cuda:1, ...)."""
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    registry = Registry(device=device)
    for source in sources:
        path = Path(source)
        registry.models[path.name] = _load_source(path, path.name, registry, report)
    for backend in registry.backends:
        backend.model.to(device)
    return registry


def add_source(registry: Registry, source: str | Path, name: str, report: Reporter) -> Served:
    """Serve one more run under `name` while the server runs (`lmtune server` adds each fine-tuned job's model).
    Generation is held off meanwhile: an adapter may join a base that is answering requests."""
    locks = [b.lock for b in registry.backends]
    for lock in locks:
        lock.acquire()
    try:
        served = _load_source(Path(source), name, registry, report)
        served.backend.model.to(registry.device)
    finally:
        for lock in locks:
            lock.release()
    registry.models[name] = served
    return served


def _load_source(path: Path, name: str, registry: Registry, report: Reporter) -> Served:
    if name in registry.models:
        raise LmtuneError(f"two models are both named {name!r}", hint="serve directories with different names")
    if (path / "config.yaml").is_file():
        return _load_run(path, name, registry.bases, registry, report)
    if (path / "config.json").is_file():
        return _load_model_dir(path, name, registry)
    raise LmtuneError(f"{path} is neither a run directory nor a model directory", hint="pass runs/<name>")


def _load_run(path: Path, name: str, shared: dict[str, Backend], registry: Registry, report: Reporter) -> Served:
    from lmtune.export import FINAL, load_tuned, read_run_config
    from lmtune.rundir import read_json
    from lmtune.tasks import TASKS

    cfg = read_run_config(path)
    kind = TASKS[cfg.task].model
    if kind in ("classifier", "token_classifier"):  # a reward model is its own kind (one score), not served
        model, tokenizer, _ = load_tuned(path)
        backend = Backend(model, tokenizer, chat=False, kind=kind, max_length=cfg.data.max_length)
        registry.backends.append(backend)
        return Served(name, backend, None, str(path))
    if kind != "causal":
        raise LmtuneError(
            f"{path} is a {cfg.task} run: the server answers for text generators and classifiers",
            hint="serve a run of task sft, causal_lm, classification or token_classification",
        )
    adapter = cfg.method.name in ADAPTER_METHODS and (path / FINAL / "adapter_config.json").is_file()
    # One PeftModel holds adapters of one peft type: LoRA and DoRA runs share a base, IA3 runs share another copy.
    key = f"{_base_key(path, cfg)}|{'ia3' if cfg.method.name == 'ia3' else 'lora'}" if adapter else None
    # torch module names cannot hold dots, and peft makes the adapter name one.
    adapter_name = name.replace(".", "_")
    if key is not None and key in shared:
        backend = shared[key]
        if adapter_name in backend.adapters:
            raise LmtuneError(f"two runs would share the adapter name {adapter_name!r}", hint="rename one run")
        backend.model.load_adapter(str(path / FINAL), adapter_name=adapter_name)
        backend.adapters.append(adapter_name)
        backend.mixes_adapters &= cfg.method.name == "lora"
        report(f"{name}: adapter on the base already loaded (no second copy)")
        return Served(name, backend, adapter_name, str(path))
    model, tokenizer, _ = load_tuned(path)
    chat = bool(read_json(path, "data.json").get("chat"))
    backend = Backend(model, tokenizer, chat)
    registry.backends.append(backend)
    if key is None:
        return Served(name, backend, None, str(path))
    # load_tuned names the first adapter "default"; renaming keeps one name per served model.
    model.load_adapter(str(path / FINAL), adapter_name=adapter_name)
    model.set_adapter(adapter_name)
    model.delete_adapter("default")
    backend.adapters.append(adapter_name)
    backend.mixes_adapters = cfg.method.name == "lora"
    shared[key] = backend
    return Served(name, backend, adapter_name, str(path))


def _load_model_dir(path: Path, name: str, registry: Registry) -> Served:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path).eval()
    except ValueError as e:
        raise LmtuneError(f"{path}: not a text-generating model: {e}") from None
    tokenizer = AutoTokenizer.from_pretrained(path)
    backend = Backend(model, tokenizer, chat=bool(getattr(tokenizer, "chat_template", None)))
    registry.backends.append(backend)
    return Served(name, backend, None, str(path))


def _base_key(run: Path, cfg: Any) -> str:
    base = run / "base_model"
    if not base.is_dir():
        return f"{cfg.model.name}@{cfg.model.revision}"
    digest = hashlib.sha256()
    for f in sorted(base.glob("*.safetensors")):
        with f.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()
