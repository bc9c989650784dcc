"""What the estimate formulas know of a model and a batch: plain shapes, read off a meta-device model
(`lmtune.estimate.model`) and the run's planned micro-batches (`lmtune.estimate.plan`). A leaf module: the
memory terms and the model reader both import it."""

from __future__ import annotations

from dataclasses import dataclass


def lora_parameters(in_features: int, out_features: int, r: int) -> int:
    """Parameters LoRA adds to one linear layer: A is r x in, B is out x r (Hu et al. 2021), so r·(in + out).

    A 512x512 layer at rank 8 gains 8·(512 + 512) = 8,192 parameters.
    """
    return r * (in_features + out_features)


@dataclass(frozen=True)
class LinearSpec:
    """One linear layer as the memory formulas see it."""

    block: int | None  # index of its transformer block; None for the output head
    name: str  # the module's own name (q_proj, down_proj, lm_head, ...)
    in_features: int
    out_features: int
    weight_trainable: bool
    lora_rank: int = 0  # 0: no LoRA adapter on this layer
    lora_dropout: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """What the formulas need to know about the model after the method is applied (read off a meta-device model)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    llama_like: bool  # blocks with q/k/v/o projections and a gated MLP: the op-by-op count applies
    eager_attention: bool  # attention probabilities are materialised (attn_implementation='eager')
    weight_itemsize: int  # bytes per element of the base weights as loaded (model.dtype)
    total_params: int
    trainable_params: int
    weight_bytes: int  # every parameter and buffer once (tied weights once), in its own dtype
    gradient_bytes: int  # trainable parameters in their own dtype: one gradient, and one AdamW state each
    largest_gradient_bytes: int
    block_gradient_bytes: tuple[int, ...]  # gradients of each transformer block
    block_norms_trainable: tuple[bool, ...]
    head_gradient_bytes: int  # final norm and output head
    embed_gradient_bytes: int
    first_active_block: int  # blocks from here on save activations (something at or before them trains)
    final_norm_trainable: bool
    linears: tuple[LinearSpec, ...]
    gradient_checkpointing: bool
    matmul_params: int  # weights of all linear layers: the 2·N of a forward pass (embeddings do no matmul)
    backward_matmul_params: int  # linear weights that backward passes a gradient through (active blocks + head)
    trainable_matmul_params: int  # trainable linear weights: their weight gradient is another 2·N
    chunked_loss: bool = False  # the loss runs the head only at trained positions, in chunks (lmtune.train.linear_ce)

    @property
    def lora_params(self) -> int:
        return sum(lora_parameters(x.in_features, x.out_features, x.lora_rank) for x in self.linears if x.lora_rank)


@dataclass(frozen=True)
class MicroBatch:
    """The shape of one micro-batch as collate() pads it."""

    rows: int
    width: int  # padded length: the longest row of the batch, rounded up (train.pad_to_multiple_of)
    trained: int  # target tokens the loss is computed on
    masked: bool  # an attention mask reaches attention (padding in the batch, or packed rows)
    packed: bool = False  # rows carry their own position ids

    @property
    def tokens(self) -> int:
        return self.rows * self.width
