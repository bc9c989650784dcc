"""Commands a person waits on: how long each takes, against its target and a plain baseline run beside it.

Times, as a user would see them (a fresh `lmtune` process each run, the median of `--repeat`):
- `lmtune --help`;
- a config error from `lmtune train` (`--set train.lr=-1`), target < 1 s;
- `lmtune data check` on a 10-line chat file, target < 3 s;
- `lmtune data check` on a chat file with one 5 MB line, target < 5 s, in two kinds: one word repeated, and
  random words of 2-9 letters (a million tokens more for the preset's small vocabulary);
- the same 5 MB of random words as raw text, a classification text, a seq2seq prompt and a DPO chosen answer;
- a chat answer of 5 MB of minified code (lines without a space: cut after newlines; 4.7M tokens).

The baseline beside each 5 MB check is what a tutorial does with the same line and the same tokenizer:
`AutoTokenizer.from_pretrained(...)` and one `tokenizer(text)` call, in a fresh process. The check reads,
validates, tokenizes, deduplicates and scans the whole file for PII; the ratio says what all that costs
against tokenizing the line once.

    python benchmarks/startup.py            # a table
    python benchmarks/startup.py --json     # ... and one JSON line of the figures

Time nothing while other heavy jobs run: on 2 cores they inflate every figure here.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LMTUNE = [sys.executable, "-m", "lmtune.cli"]
BASELINE = """
import json, sys
from transformers import AutoTokenizer
def strings(value):
    if isinstance(value, str):
        yield value
    for item in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
        yield from strings(item)
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
lines = open(sys.argv[2], encoding="utf-8").read().splitlines()
print(len(tokenizer(max(strings([json.loads(line) for line in lines]), key=len))["input_ids"]))
"""


def chat(user: str, answer: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]})


def write_files(folder: Path) -> dict[str, tuple[Path, list[str]]]:
    """name -> (file, the `data check` options for it)."""
    rng = random.Random(0)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(5000)]
    big = " ".join(rng.choices(words, k=900_000))[:5_000_000]
    code = "\n".join(f"for(i=0;i<n;i++){{x[i]=y[i]*{k};}}" for k in range(200_000))[:5_000_000]
    small = [chat(f"What is {i} plus {i}?", f"{i} plus {i} is {2 * i}.") for i in range(10)]
    files = {
        "10 lines": (small, []),
        "5 MB line, one word": ([*small[:3], chat("Summarise.", "long " * 1_000_000)], []),
        "5 MB line, random words": ([*small[:3], chat("Summarise.", big)], []),
        "5 MB raw text": ([json.dumps({"text": t}) for t in (big, "a b", "c d")], []),
        "5 MB classification text": (
            [json.dumps({"text": t, "label": y}) for t, y in ((big, "pos"), ("good", "pos"), ("bad", "neg"))],
            ["--task", "classification"],
        ),
        "5 MB seq2seq prompt": (
            [json.dumps({"prompt": p, "completion": c}) for p, c in ((big, "short"), ("q", "a"), ("r", "b"))],
            ["--task", "seq2seq"],
        ),
        "5 MB answer of code lines, no spaces": (
            [chat("Write it.", code) if i == 0 else chat("q", "a") for i in range(3)],
            [],
        ),
        "5 MB chosen answer (dpo)": (
            [json.dumps({"prompt": "q", "chosen": c, "rejected": "no"}) for c in (big, "yes", "sure")],
            ["--task", "dpo"],
        ),
    }
    paths = {}
    for i, (name, (lines, options)) in enumerate(files.items()):
        path = folder / f"case{i}.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths[name] = (path, options)
    return paths


def seconds(command: list[str], repeat: int, expect: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - started)
        if done.returncode != expect:
            sys.exit(f"{' '.join(command)} exited {done.returncode}, expected {expect}:\n{done.stderr[-2000:]}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    preset = str(ROOT / "lmtune" / "presets" / "tiny-chat")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp))
        rows.append(("lmtune --help", seconds([*LMTUNE, "--help"], args.repeat, 0), None, None))
        config_error = [*LMTUNE, "train", "configs/quickstart.yaml", "--set", "train.lr=-1"]
        rows.append(("config error (train.lr=-1)", seconds(config_error, args.repeat, 2), 1.0, None))
        for name, (path, options) in files.items():
            check = seconds([*LMTUNE, "data", "check", str(path), *options], args.repeat, 0)
            plain = None
            if "5 MB" in name:
                plain = seconds([sys.executable, "-c", BASELINE, preset, str(path)], args.repeat, 0)
            rows.append((f"data check, {name}", check, 3.0 if name == "10 lines" else 5.0, plain))
    print(f"{'command':<44} {'seconds':>8} {'target':>7} {'ok':>3} {'tokenize once':>14} {'× that':>7}")
    for name, took, target, plain in rows:
        ok = "" if target is None else ("yes" if took < target else "NO")
        ratio = f"{took / plain:.2f}" if plain else ""
        print(f"{name:<44} {took:>8.2f} {target or '':>7} {ok:>3} {f'{plain:.2f}' if plain else '':>14} {ratio:>7}")
    if args.json:
        print(
            json.dumps([{"command": n, "seconds": round(t, 3), "target": g, "tokenize_once": p} for n, t, g, p in rows])
        )


if __name__ == "__main__":
    main()
