"""Streaming (`data.streaming: true`): peak memory of a run does not grow with the size of the training file.

Writes two JSONL files of raw text in a temporary directory, a large one (`--size`, 3 GB by default) and a small one
(`--small`, 30 MB), then trains `--steps` optimizer steps on each with `lmtune.finetune` (task causal_lm, the tiny
preset model, packing on the fly, a shuffle buffer of `--buffer` examples), each run in its own process so each
has its own peak RSS. It prints both runs' peak RSS and trained tokens/s side by side, and the ratios large/small
(the claim: peak RSS within 10%).

    python benchmarks/streaming.py                    # 3 GB against 30 MB (writes ~3 GB to the temp dir)
    python benchmarks/streaming.py --size 300MB       # a quicker check
    python benchmarks/streaming.py --json             # ... and one JSON line of the figures

The records are varied sentences drawn (seeded) from lmtune's shipped English text, one to a few hundred words
each, so the shuffle buffer and the packer see realistic, uneven examples.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
UNITS = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "B": 1}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(GB|MB|KB|B)?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"a size such as 3GB, 300MB or 5000000, got {text!r}")
    return int(float(match.group(1)) * UNITS[(match.group(2) or "B").upper()])


def write_jsonl(path: Path, size: int, seed: int = 0) -> int:
    """Write records of raw text until the file holds `size` bytes; returns the number of records."""
    words = (ROOT / "lmtune" / "resources" / "general_en.txt").read_text(encoding="utf-8").split()
    rng = random.Random(seed)
    block_records = [
        json.dumps({"text": " ".join(rng.choices(words, k=rng.randint(20, 300)))}) + "\n" for _ in range(4000)
    ]
    written = records = 0
    with path.open("w", encoding="utf-8") as f:
        while written < size:
            rng.shuffle(block_records)  # every block of the file in another order: no two blocks alike
            for line in block_records:
                f.write(line)
                written += len(line.encode("utf-8"))
                records += 1
                if written >= size:
                    break
    return records


def child(config_path: str) -> None:
    """One training run in this process; prints its figures as one JSON line."""
    sys.path.insert(0, str(ROOT))
    from lmtune.api import finetune

    cfg = json.loads(Path(config_path).read_text())
    start = time.perf_counter()
    summary = finetune(cfg, overwrite=True).summary
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"peak_rss_mb": peak_mb, "tokens_per_s": summary["tokens_per_s"],
                      "trained_tokens": summary["trained_tokens"], "wall_s": wall}))  # fmt: skip


def run(data: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    cfg = {
        "name": "stream-bench",
        "seed": 0,
        "task": "causal_lm",
        "output_dir": str(out),
        "data": {"train": str(data), "format": "text", "streaming": True, "shuffle_buffer": args.buffer,
                 "packing": True, "max_length": args.max_length},
        "method": {"name": "full"},
        "forgetting": {"measure": False},
        "train": {"max_steps": args.steps, "batch_size": args.batch_size, "mixed_precision": "no",
                  "save_every": args.steps, "warmup_steps": 0},
    }  # fmt: skip
    path = out.with_suffix(".json")
    path.write_text(json.dumps(cfg))
    done = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the run on {data} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=parse_size("3GB"), help="the large file (default 3GB)")
    parser.add_argument("--small", type=parse_size, default=parse_size("30MB"), help="the small file (default 30MB)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--buffer", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="lmtune-stream-") as tmp:
        for name, size in (("small", args.small), ("large", args.size)):
            data = Path(tmp) / f"{name}.jsonl"
            t0 = time.perf_counter()
            records = write_jsonl(data, size)
            written = time.perf_counter() - t0
            results[name] = {"bytes": data.stat().st_size, "records": records, "write_s": written}
            results[name].update(run(data, Path(tmp) / f"run-{name}", args))
            data.unlink()  # free the disk before the next file
    small, large = results["small"], results["large"]
    print(f"{'file':<8}{'size':>12}{'records':>12}{'peak RSS MB':>14}{'tokens/s':>12}{'run s':>9}")
    for name, r in results.items():
        print(f"{name:<8}{r['bytes'] / 2**20:>10.0f}MB{r['records']:>12,}{r['peak_rss_mb']:>14.1f}"
              f"{r['tokens_per_s']:>12.0f}{r['wall_s']:>9.1f}")  # fmt: skip
    rss_ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    speed_ratio = large["tokens_per_s"] / small["tokens_per_s"]
    print(f"large/small: peak RSS x{rss_ratio:.3f} ({'within' if abs(rss_ratio - 1) <= 0.10 else 'NOT within'} 10%), "
          f"tokens/s x{speed_ratio:.3f}")  # fmt: skip
    if args.json:
        print(json.dumps({"results": results, "rss_ratio": rss_ratio, "tokens_per_s_ratio": speed_ratio}))


if __name__ == "__main__":
    main()
