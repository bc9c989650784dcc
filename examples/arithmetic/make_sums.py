"""Write the prompts of configs/stories260k-grpo.yaml: small sums with their answers (seeded, standard library).

Run from the repository root:

    .venv/bin/python examples/arithmetic/make_sums.py

It writes examples/arithmetic/train.jsonl and validation.jsonl as {"prompt", "answer"} records: "3 + 4 = " with
answer "7", every sum of two digits whose result is below 10, the validation ones held out. The answer is
verifiable, so the rewards are checks (rlhf.rewards: numeric_match against the answer column, a format regex,
a length penalty), no reward model.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    rows = [{"prompt": f"{a} + {b} = ", "answer": str(a + b)} for a in range(10) for b in range(10) if a + b < 10]
    random.Random(7).shuffle(rows)
    validation, train = rows[:10], rows[10:]
    for name, part in (("train", train * 4), ("validation", validation)):
        with (HERE / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in part)


if __name__ == "__main__":
    main()
