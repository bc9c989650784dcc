"""Training data read as a stream (`data.streaming: true`): for sources larger than memory.

`datasets`' IterableDataset reads the file (JSONL/JSON, CSV/TSV, Parquet; a hub dataset with network) in chunks
and shuffles it through a seeded buffer (`data.shuffle_buffer` examples); each example is normalised, tokenized
and packed here as it arrives, so memory holds the buffer and one step's rows, whatever the file's size.

Resume is exact: the stream's order is a function of the seed and the epoch, so a position is a count of
examples (and of the pieces of the next example already trained, for overlong: chunk). `RowStream.rows` yields
each row with the position after it; the loop keeps the position after its last step's rows, and a resumed
run skips that many examples (read and parsed, not tokenized) and packs on from there: the same rows, in the same
order, as the uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.data.batching import Row, unpacked
from lmtune.data.formats import Example, detect_format, normalize
from lmtune.data.types import IGNORE, Record, Tokenized
from lmtune.errors import LmtuneError

Position = tuple[int, int]  # (stream examples before the row's first piece, pieces of that example before it)

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
_ROW = "__lmtune_row__"  # the example's 1-based row in the file, added before shuffling (for error messages)


def open_examples(
    source: str, *, seed: int, epoch: int, buffer: int, skip: int = 0, split: str = "train", subset: str | None = None
) -> Iterator[Record]:
    """The records of `source` in a seeded shuffled order (a new order each epoch), the first `skip` left out."""
    import datasets  # deferred: importing datasets costs about half a second

    path = Path(source).expanduser()
    if path.is_file():
        builder = _BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise LmtuneError(
                f"data.streaming reads .jsonl, .json, .csv, .tsv and .parquet files, not {path.suffix}: {source}",
                hint="convert the file, or set data.streaming: false",
            )
        extra = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        stream = datasets.load_dataset(builder, data_files=str(path), split="train", streaming=True, **extra)
    else:
        stream = datasets.load_dataset(source, subset, split=split, streaming=True)
    stream = stream.map(lambda _, i: {_ROW: i + 1}, with_indices=True)
    stream = stream.shuffle(seed=seed, buffer_size=buffer)
    stream.set_epoch(epoch)
    if skip:
        stream = stream.skip(skip)
    for data in stream:
        row = data.pop(_ROW)
        yield Record(data, source, row)


@dataclass
class RowStream:
    """The training rows of a stream, made on the fly: what `lmtune.train.loop.train_loop` takes instead of a list.

    `tokenize` is the task's tokenization of a list of examples with the run's options (set up by
    `lmtune.api.setup.prepare_data`); `fmt` the record shape (None: detected from the first record)."""

    source: str
    seed: int
    buffer: int
    max_length: int
    packing: bool
    tokenize: Callable[[list[Example]], list[Tokenized]]
    columns: dict[str, str]
    prompt_template: str | None
    fmt: str | None = None
    split: str = "train"
    subset: str | None = None

    def pieces(self, epoch: int, start: Position) -> Iterator[tuple[Tokenized, Position, Position]]:
        """Each tokenized piece with its position and the position after it, from `start` on."""
        records = open_examples(self.source, seed=self.seed, epoch=epoch, buffer=self.buffer, skip=start[0],
                                split=self.split, subset=self.subset)  # fmt: skip
        for index, record in enumerate(records, start=start[0]):
            if self.fmt is None:
                self.fmt = detect_format(record, self.columns)
            example = normalize([record], format=self.fmt, columns=self.columns, prompt_template=self.prompt_template)
            pieces = self.tokenize(example)
            first = start[1] if index == start[0] else 0
            for k in range(first, len(pieces)):
                after = (index, k + 1) if k + 1 < len(pieces) else (index + 1, 0)
                yield pieces[k], (index, k), after

    def rows(self, epoch: int, start: Position = (0, 0)) -> Iterator[tuple[Row, Position]]:
        """The rows of an epoch from `start`, each with the stream position after it. Packed rows are made as
        `lmtune.data.batching.pack` makes them from a list (greedy, in order), a row at a time."""
        if not self.packing:
            for piece, _, after in self.pieces(epoch, start):
                yield unpacked([piece])[0], after
            return
        ids: list[int] = []
        labels: list[int] = []
        pos: list[int] = []
        last: Position = start
        for piece, here, after in self.pieces(epoch, start):
            if ids and len(ids) + len(piece.input_ids) > self.max_length:
                yield Row(ids, labels, pos), here
                ids, labels, pos = [], [], []
            ids.extend(piece.input_ids)
            labels.extend([IGNORE, *piece.labels[1:]])  # as `pack`: no target across the example boundary
            pos.extend(range(len(piece.input_ids)))
            last = after
        if ids:
            yield Row(ids, labels, pos), last


def describe(source: str) -> dict[str, Any]:
    """What data.json records of a stream: the source and (a local file) its size and modification time; no
    content hash, which would read the whole file."""
    path = Path(source).expanduser()
    info: dict[str, Any] = {"source": source, "streaming": True}
    if path.is_file():
        stat = path.stat()
        info.update(bytes=stat.st_size, mtime=stat.st_mtime)
    return info
