"""Task sft: supervised fine-tuning of a causal LM on prompts and answers, the loss on the answer tokens."""

from lmtune.data.tokenize import tokenize_examples
from lmtune.tasks.base import CAUSAL_METHODS, Task, TokenizeOptions


def tokenize_causal(examples, tokenizer, opts: TokenizeOptions):
    """Chat or prompt/answer records rendered and tokenized, the loss mask on what the model should write."""
    return tokenize_examples(
        examples, tokenizer, max_length=opts.max_length, overlong=opts.overlong, template=opts.template
    )


SFT = Task(
    name="sft",
    summary="a causal LM on prompts and answers (chat, instruction, prompt/completion); loss on the answers",
    model="causal",
    methods=CAUSAL_METHODS,
    objective_name="sft",
    tokenize=tokenize_causal,
)
