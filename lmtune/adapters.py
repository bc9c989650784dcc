"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020's placement): after each transformer block's
MLP, a small residual MLP hidden -> r -> hidden whose up-projection starts at zero, so training starts from the
base model exactly.

Written here because peft (0.21) ships no bottleneck-adapter tuner, and the `adapters` library (AdapterHub)
pins its own transformers range. It keeps peft's save/load contract: `save_adapters` writes only the adapter
weights (safetensors) and a JSON config to a directory; `load_adapters` puts them back on a freshly loaded base.
The adapter is attached as a child module of the block's MLP, and a forward hook (torch's public API) adds its
output, so the base model's code is not touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmtune.errors import LmtuneError

CONFIG_FILE = "bottleneck_adapters.json"
WEIGHTS_FILE = "bottleneck_adapters.safetensors"
_CHILD = "bottleneck_adapter"
_ACTIVATIONS = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "silu": torch.nn.SiLU}


class BottleneckAdapter(torch.nn.Module):
    def __init__(self, hidden: int, bottleneck: int, activation: str, dropout: float) -> None:
        super().__init__()
        self.settings = {"bottleneck": bottleneck, "activation": activation, "dropout": dropout}
        self.dropout = torch.nn.Dropout(dropout)
        self.down = torch.nn.Linear(hidden, bottleneck)
        self.act = _ACTIVATIONS[activation]()
        self.up = torch.nn.Linear(bottleneck, hidden)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(self.dropout(x))))


def _add_adapter_output(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
    return output + getattr(module, _CHILD)(output)


def _mlp_of(block: torch.nn.Module) -> torch.nn.Module:
    for name in ("mlp", "feed_forward", "ffn"):
        if isinstance(getattr(block, name, None), torch.nn.Module):
            return getattr(block, name)
    raise ValueError(f"no MLP (mlp, feed_forward, ffn) in block {type(block).__name__}")


def add_adapters(model: torch.nn.Module, cfg: Any, blocks: torch.nn.ModuleList) -> torch.nn.Module:
    """Attach one adapter per block (cfg: bottleneck, activation, dropout); only the adapters are trainable."""
    config = getattr(model, "config", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    if hidden is None:
        raise LmtuneError("method adapters: the model's config has no hidden_size")
    for block in blocks:
        try:
            mlp = _mlp_of(block)
        except ValueError as e:
            raise LmtuneError(f"method adapters: {e}") from None
        ref = next(block.parameters())
        adapter = BottleneckAdapter(hidden, cfg.bottleneck, cfg.activation, cfg.dropout)
        mlp.add_module(_CHILD, adapter.to(device=ref.device, dtype=ref.dtype))
        mlp.register_forward_hook(_add_adapter_output)
    return model


def adapter_modules(model: torch.nn.Module) -> dict[str, BottleneckAdapter]:
    return {n: m for n, m in model.named_modules() if isinstance(m, BottleneckAdapter)}


def has_adapters(model: torch.nn.Module) -> bool:
    return bool(adapter_modules(model))


def save_adapters(
    model: torch.nn.Module, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None
) -> None:
    """Write the adapters' weights and settings (not the base model) to `directory`; the weights are read from
    `state_dict` (the model's, gathered whole from FSDP shards) when given."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    modules = adapter_modules(model)
    own = {f"{n}.{k}": v for n, m in modules.items() for k, v in m.state_dict().items()}
    source = own if state_dict is None else state_dict
    weights = {name: source[name].detach().contiguous().cpu() for name in own}
    save_file(weights, str(directory / WEIGHTS_FILE))
    settings = next(iter(modules.values())).settings
    (directory / CONFIG_FILE).write_text(json.dumps({**settings, "modules": list(modules)}, indent=2) + "\n")


def is_adapter_dir(directory: str | Path) -> bool:
    return (Path(directory) / CONFIG_FILE).is_file()


def load_adapters(model: torch.nn.Module, directory: str | Path, blocks: torch.nn.ModuleList) -> torch.nn.Module:
    """Attach adapters to a base model as saved in `directory` and load their weights (strictly)."""
    from types import SimpleNamespace

    directory = Path(directory)
    saved = json.loads((directory / CONFIG_FILE).read_text())
    add_adapters(model, SimpleNamespace(**saved), blocks)
    modules = adapter_modules(model)
    if sorted(modules) != sorted(saved["modules"]):
        raise ValueError(f"{directory}: adapters saved for {saved['modules'][:2]}..., model has {list(modules)[:2]}...")
    weights = load_file(str(directory / WEIGHTS_FILE))
    for name, module in modules.items():
        module.load_state_dict({k.removeprefix(f"{name}."): v for k, v in weights.items() if k.startswith(f"{name}.")})
    return model
