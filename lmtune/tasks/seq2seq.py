"""Task seq2seq: an encoder-decoder (T5, BART, ...) reads the prompt and writes the answer."""

from lmtune.data.tokenize import tokenize_seq2seq
from lmtune.tasks.base import Task, TokenizeOptions, not_measured


def _tokenize(examples, tokenizer, opts: TokenizeOptions):
    return tokenize_seq2seq(examples, tokenizer, max_length=opts.max_length, overlong=opts.overlong)


SEQ2SEQ = Task(
    name="seq2seq",
    summary="an encoder-decoder: encoder input = prompt, decoder target = answer",
    model="seq2seq",
    methods=frozenset({"full", "freeze", "lora", "dora"}),
    objective_name="seq2seq",
    tokenize=_tokenize,
    forgetting_note=not_measured("seq2seq", "an encoder-decoder"),
)
