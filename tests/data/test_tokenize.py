from __future__ import annotations

import copy
import itertools

import pytest
from tokenizers.processors import TemplateProcessing

from lmtune.data.formats import TextExample
from lmtune.data.tokenize import (
    encode,
    render,
    setup_chat_template,
    special_affixes,
    tokenize_examples,
    trained_segments,
)
from lmtune.data.types import IGNORE, Tokenized, TokenStats
from lmtune.errors import DataError, LmtuneError

IM_END = "<|im_end|>"


def trained_text(tok: Tokenized, tokenizer) -> str:
    return "".join(text for text, trained in trained_segments(tok, tokenizer) if trained)


def untrained_text(tok: Tokenized, tokenizer) -> str:
    return "".join(text for text, trained in trained_segments(tok, tokenizer) if not trained)


def runs(tok: Tokenized, tokenizer) -> list[tuple[str, bool]]:
    return trained_segments(tok, tokenizer)


def encode_one(example, tokenizer, template="auto") -> Tokenized:
    prefix, _ = special_affixes(tokenizer)
    return encode(render(example, tokenizer, template), tokenizer, prefix)


def without_chat_template(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    return tok


def bos_tokenizer(tokenizer):
    """The preset tokenizer made to wrap raw text in <|endoftext|> ... <|im_end|>, like Llama wraps it in BOS."""
    tok = copy.deepcopy(tokenizer)
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"<|endoftext|> $A {IM_END}", special_tokens=[("<|endoftext|>", 0), (IM_END, 2)]
    )
    return tok


# --- chat ----------------------------------------------------------------------------------------


def test_chat_trains_only_the_assistant_turn_including_its_end_marker(chat, tokenizer):
    ex = chat(("system", "be nice"), ("user", "hi there"), ("assistant", "hello you"))
    tok = encode_one(ex, tokenizer)
    text = tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in ex.messages], tokenize=False)
    # rendered once and tokenized once: the ids are exactly the tokenization of the rendered conversation
    assert tok.input_ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert runs(tok, tokenizer) == [
        ("<|im_start|>system\nbe nice<|im_end|>\n<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n", False),
        ("hello you<|im_end|>", True),
        ("\n", False),  # whitespace after the end-of-turn marker is context, not a target
    ]
    for i, label in zip(tok.input_ids, tok.labels, strict=True):
        assert label in (IGNORE, i)
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    end_labels = [label for i, label in zip(tok.input_ids, tok.labels, strict=True) if i == im_end]
    assert end_labels == [IGNORE, IGNORE, im_end]  # system's and user's end markers untrained, assistant's trained


def test_chat_turns_with_weight_zero_are_not_trained(chat, tokenizer):
    ex = chat(("user", "one"), ("assistant", "skip me", 0), ("user", "two"), ("assistant", "learn me"))
    tok = encode_one(ex, tokenizer)
    assert trained_text(tok, tokenizer) == "learn me<|im_end|>"
    assert "skip me<|im_end|>" in untrained_text(tok, tokenizer)


def test_chat_with_only_untrained_turns_is_dropped(chat, tokenizer):
    ex = chat(("user", "one"), ("assistant", "skip me", 0))
    toks, stats = tokenize_examples([ex], tokenizer, max_length=128)
    assert toks == []
    assert (stats.kept, stats.dropped) == (0, 1)


def test_multi_turn_chat_trains_every_assistant_span(chat, tokenizer):
    ex = chat(("user", "a"), ("assistant", "first answer"), ("user", "b"), ("assistant", "second answer"))
    tok = encode_one(ex, tokenizer)
    assert runs(tok, tokenizer) == [
        ("<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n", False),
        ("first answer<|im_end|>", True),
        ("\n<|im_start|>user\nb<|im_end|>\n<|im_start|>assistant\n", False),
        ("second answer<|im_end|>", True),
        ("\n", False),
    ]


def test_chat_ending_on_a_user_turn_appends_no_trained_eos(chat, tokenizer):
    ex = chat(("user", "a"), ("assistant", "answer"), ("user", "thanks"))
    tok = encode_one(ex, tokenizer)
    assert trained_text(tok, tokenizer) == "answer<|im_end|>"
    assert tok.labels[-1] == IGNORE


def test_chat_data_with_raw_template_is_an_error(chat, tokenizer):
    with pytest.raises(LmtuneError, match=r"data.template is 'raw'"):
        render(chat(("user", "a"), ("assistant", "b")), tokenizer, "raw")


def test_template_that_is_not_prefix_stable_is_reported(chat, tokenizer):
    tok = copy.deepcopy(tokenizer)
    # puts the number of messages up front: fewer turns do not render to a prefix
    tok.chat_template = "{{ messages|length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(DataError) as info:
        render(chat(("user", "a"), ("assistant", "b"), line=7), tok)
    assert "test.jsonl:7: field 'messages[1]'" in str(info.value)


# --- prompt / completion ---------------------------------------------------------------------------


def test_raw_prompt_completion_masks_the_prompt_and_trains_completion_and_eos(prompt_completion, tokenizer):
    ex = prompt_completion("Translate to French:\ncat\n", "chat")
    tok = encode_one(ex, tokenizer, "raw")
    assert runs(tok, tokenizer) == [("Translate to French:\ncat\n", False), ("chat<|im_end|>", True)]
    assert tok.input_ids[-1] == tokenizer.eos_token_id
    assert tok.labels[-1] == tokenizer.eos_token_id
    assert tok.input_ids[:-1] == tokenizer(ex.prompt + ex.completion, add_special_tokens=False)["input_ids"]


def test_auto_template_renders_prompt_completion_raw(prompt_completion, tokenizer):
    ex = prompt_completion("Q: 2+2\n", "4")
    assert render(ex, tokenizer, "auto") == render(ex, tokenizer, "raw")
    assert not render(ex, tokenizer).chat


def test_completion_merged_with_the_prompts_trailing_space_is_trained(prompt_completion, tokenizer):
    # 'Summary: ' + 'A cat sat.' tokenizes as '...Summary:', ' A', ' cat', ...: the ' A' token straddles the seam
    # and must be trained, or the model never learns the completion's first word.
    ex = prompt_completion("Summarize:\nthe cat sat on the mat\nSummary: ", "A cat sat.")
    tok = encode_one(ex, tokenizer, "raw")
    assert trained_text(tok, tokenizer) == " A cat sat.<|im_end|>"
    assert untrained_text(tok, tokenizer) == "Summarize:\nthe cat sat on the mat\nSummary:"


def test_chat_template_turns_prompt_completion_into_user_and_assistant(chat, prompt_completion, tokenizer):
    ex = prompt_completion("What is 2+2?", "4")
    rendered = render(ex, tokenizer, "chat")
    assert rendered == render(chat(("user", "What is 2+2?"), ("assistant", "4")), tokenizer)
    assert rendered.text == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
    assert trained_text(encode(rendered, tokenizer), tokenizer) == "4<|im_end|>"


def test_text_examples_are_trained_whole_with_eos(tokenizer):
    tok = encode_one(TextExample("once upon a time", "t.jsonl", 1), tokenizer)
    first = tokenizer.decode(tok.input_ids[:1])  # the first token has no context to be predicted from
    assert runs(tok, tokenizer) == [(first, False), ("once upon a time"[len(first) :] + IM_END, True)]
    assert tok.labels[1:] == tok.input_ids[1:]


# --- chat templates ------------------------------------------------------------------------------


def test_chat_data_without_a_chat_template_is_an_error(chat, prompt_completion, tokenizer):
    bare = without_chat_template(tokenizer)
    with pytest.raises(LmtuneError) as info:
        render(chat(("user", "hi"), ("assistant", "hello")), bare)
    assert "no chat template" in str(info.value)
    assert "data.chat_template" in info.value.hint
    with pytest.raises(LmtuneError, match="no chat template"):
        render(prompt_completion("hi", "hello"), bare, "chat")
    assert tokenizer.chat_template  # the fixture's own tokenizer is untouched


def test_plain_builtin_template(chat, tokenizer):
    bare = without_chat_template(tokenizer)
    setup_chat_template(bare, "plain")
    ex = chat(("system", "be nice"), ("user", "hi there"), ("assistant", "hello you"))
    tok = encode_one(ex, bare)
    assert runs(tok, bare) == [
        ("be nice\n\n### User:\nhi there\n\n### Assistant:\n", False),
        ("hello you<|im_end|>", True),
        ("\n\n", False),
    ]


def test_setup_chat_template_accepts_names_and_jinja(tokenizer):
    tok = copy.deepcopy(tokenizer)
    original = tok.chat_template
    setup_chat_template(tok, None)
    assert tok.chat_template == original
    setup_chat_template(tok, "{{ messages[0]['content'] }}")
    assert tok.chat_template == "{{ messages[0]['content'] }}"
    setup_chat_template(tok, "chatml")
    assert "<|im_start|>" in tok.chat_template and tok.chat_template != original


# --- special tokens around raw text --------------------------------------------------------------


def test_special_affixes(tokenizer):
    assert special_affixes(tokenizer) == ([], [])
    assert special_affixes(bos_tokenizer(tokenizer)) == ([0], [2])


def test_raw_text_gets_the_tokenizers_bos_untrained_but_chat_does_not(chat, prompt_completion, tokenizer):
    tok_bos = bos_tokenizer(tokenizer)
    raw = encode_one(prompt_completion("Q:\n", "yes"), tok_bos, "raw")
    plain = encode_one(prompt_completion("Q:\n", "yes"), tokenizer, "raw")
    assert raw.input_ids == [0, *plain.input_ids]
    assert raw.labels == [IGNORE, *plain.labels]
    conversation = chat(("user", "a"), ("assistant", "b"))
    assert encode_one(conversation, tok_bos) == encode_one(conversation, tokenizer)  # the template owns specials


# --- length limits and stats ---------------------------------------------------------------------


def test_truncate_keeps_and_counts_overlong_examples(chat, tokenizer):
    short = chat(("user", "hi"), ("assistant", "ok"))
    long = chat(("user", "hi"), ("assistant", "word " * 40))
    n_short = len(encode_one(short, tokenizer).input_ids)
    n_long = len(encode_one(long, tokenizer).input_ids)
    max_length = n_short + 5
    assert n_long > max_length
    toks, stats = tokenize_examples([short, long, long], tokenizer, max_length=max_length, overlong="truncate")
    assert [len(t.input_ids) for t in toks] == [n_short, max_length, max_length]
    assert (stats.examples, stats.kept, stats.truncated, stats.dropped) == (3, 3, 2, 0)
    assert stats.tokens == n_short + 2 * max_length
    assert stats.lengths == [n_short, n_long, n_long]
    assert stats.trained_tokens == sum(sum(x != IGNORE for x in t.labels[1:]) for t in toks)
    assert toks[1] == Tokenized(encode_one(long, tokenizer).input_ids[:max_length], toks[1].labels)


def test_drop_removes_and_counts_overlong_examples(chat, tokenizer):
    short = chat(("user", "hi"), ("assistant", "ok"))
    long = chat(("user", "hi"), ("assistant", "word " * 40))
    max_length = len(encode_one(short, tokenizer).input_ids)  # exactly max_length is kept
    toks, stats = tokenize_examples([long, short, long], tokenizer, max_length=max_length, overlong="drop")
    assert toks == [encode_one(short, tokenizer)]
    assert (stats.examples, stats.kept, stats.truncated, stats.dropped) == (3, 1, 0, 2)
    assert stats.as_dict()["max_length_seen"] == max(stats.lengths) > max_length


def test_example_whose_trained_part_is_cut_off_is_dropped(prompt_completion, tokenizer):
    ex = prompt_completion("a long prompt " * 20, "answer")
    toks, stats = tokenize_examples([ex], tokenizer, max_length=10, overlong="truncate", template="raw")
    assert toks == []
    assert (stats.kept, stats.truncated, stats.dropped) == (0, 0, 1)
    assert stats.kept + stats.dropped == stats.examples


def test_token_stats_as_dict():
    stats = TokenStats(examples=3, kept=3, tokens=30, trained_tokens=9, lengths=[12, 8, 10])
    out = stats.as_dict()
    assert out["max_length_seen"] == 12 and out["median_length"] == 10
    assert "lengths" not in out
    assert "max_length_seen" not in TokenStats().as_dict()


# --- preview -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["chat", "raw", "text"])
def test_trained_segments_reassemble_the_text(kind, chat, prompt_completion, tokenizer):
    if kind == "chat":
        ex = chat(("system", "sys"), ("user", "a b c"), ("assistant", "d e"), ("user", "f"), ("assistant", "g h"))
        template = "auto"
    elif kind == "raw":
        ex = prompt_completion("Question: why?\nAnswer: ", "because")
        template = "raw"
    else:
        ex = TextExample("just some text", "t.jsonl", 1)
        template = "auto"
    rendered = render(ex, tokenizer, template)
    tok = encode(rendered, tokenizer)
    segments = trained_segments(tok, tokenizer)
    whole = rendered.text if rendered.chat else rendered.text + tokenizer.eos_token
    assert "".join(text for text, _ in segments) == whole
    flags = [trained for _, trained in segments]
    assert all(a != b for a, b in itertools.pairwise(flags))  # runs alternate
    assert flags[0] is False and True in flags


def _words(count: int, seed: int) -> str:
    import random

    rng = random.Random(seed)
    return " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "x1", "é"]) for _ in range(count))


@pytest.mark.parametrize("kind", ["chat", "prompt_completion", "text"])
def test_a_long_example_is_labelled_in_pieces_exactly_as_when_encoded_whole(kind, chat, prompt_completion, tokenizer):
    """Long texts are tokenized in pieces (data.long_text), and a piece with no span edge is labelled wholesale:
    the ids and labels must be those of one whole encoding with the per-token rule."""
    from lmtune.data.labels import trained_labels
    from lmtune.data.long_text import LONG, encode_pieces

    long_a, long_b = _words(LONG // 3, 1), _words(LONG // 2, 2)
    example = {
        "chat": chat(("user", long_a), ("assistant", long_b), ("user", "and?"), ("assistant", long_a + " end")),
        "prompt_completion": prompt_completion(long_a + " ", long_b),
        "text": TextExample(long_a + "\n" + long_b, "test.jsonl", 1),
    }[kind]
    rendered = render(example, tokenizer)
    assert len(encode_pieces(tokenizer, rendered.text)) > 5
    whole = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    tok = encode(rendered, tokenizer)
    n = len(whole["input_ids"])
    assert tok.input_ids[:n] == whole["input_ids"]
    assert tok.labels[:n] == trained_labels(whole["input_ids"], whole["offset_mapping"], rendered.spans)


@pytest.mark.parametrize("side", ["right", "left"])
def test_classification_ids_are_the_tokenizers_own_truncated_encoding(side, tokenizer):
    """tokenize_classification builds [special] + body + [special] itself (the body in pieces when long): it must
    equal tokenizer(text, truncation=True, max_length=...), BERT's [CLS] ... [SEP] and the preset's BOS/EOS alike."""
    from support import minilm_dir

    from lmtune.config import ModelConfig
    from lmtune.data.formats import LabelExample
    from lmtune.data.long_text import LONG
    from lmtune.data.tokenize import tokenize_classification
    from lmtune.tokenizer import load_tokenizer

    tokenizers = [bos_tokenizer(tokenizer)]
    if minilm_dir() is not None:
        tokenizers.append(load_tokenizer(ModelConfig(name=str(minilm_dir())), light=True))
    texts = ["Short one.", "a " * 40 + "end", _words(LONG // 2, 3), ""]
    examples = [LabelExample(text, "pos", "t.jsonl", i + 1) for i, text in enumerate(texts)]
    for tok in tokenizers:
        tok.truncation_side = side
        for max_length in (8, 64, 100_000):
            rows, stats = tokenize_classification(examples, tok, ["pos"], max_length=max_length)
            expected = [tok(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
            assert [row.input_ids for row in rows] == expected
            assert stats.lengths == [len(tok(t)["input_ids"]) for t in texts]
