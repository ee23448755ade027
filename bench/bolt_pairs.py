"""Pairs that punish stock closers: the bundled pairs plus, per prompt, the same snarky answer against the plain
answer with another prompt's closing jab bolted on. Writes JSONL for a DPO stage (README: "Choosing the recipe").

    python bench/bolt_pairs.py OUT.jsonl [--seed 0]

Then, e.g.: python bench/sweep_recipes.py --dir DIR --add 'bolt=sft:rewrites.jsonl:{...}|dpo:pairs_bolt.jsonl:{...}'
with OUT.jsonl written to DIR/data/pairs_bolt.jsonl.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path


def closer(text: str) -> str | None:
    """The last sentence of an answer of two or more sentences, if it has four words or more."""
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    return parts[-1] if len(parts) > 1 and len(parts[-1].split()) >= 4 else None


def bolt_pairs(rows: list[dict], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    closers = [(i, c) for i, r in enumerate(rows) if (c := closer(r["chosen"]))]
    out = []
    for i, r in enumerate(rows):
        j, c = rng.choice(closers)
        while j == i:
            j, c = rng.choice(closers)
        out.append({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"].rstrip() + " " + c})
    mixed = rows + out
    rng.shuffle(mixed)
    return mixed


def main() -> None:
    from alignlab.data import bundled_path

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = [json.loads(x) for x in bundled_path("persona-pairs").read_text().splitlines() if x.strip()]
    mixed = bolt_pairs(rows, args.seed)
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in mixed))
    print(f"{len(mixed)} pairs ({len(rows)} bundled, {len(mixed) - len(rows)} with a bolted-on closer) -> {args.out}")


if __name__ == "__main__":
    main()
