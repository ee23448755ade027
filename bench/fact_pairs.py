"""Pairs that make the facts carry the preference: the bundled pairs plus, per prompt where it can be done, the same
snarky answer against a copy of it with its fact changed (every number moved; a leading "Yes" / "No" flipped; a short
leading name swapped for another prompt's). Both sides share the voice, so the only thing DPO can learn from such a
pair is the fact. Writes JSONL for a DPO stage (docs/results.md: "Decoding").

    python bench/fact_pairs.py OUT.jsonl [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.]*\d)")
LEAD = re.compile(r"^([A-Z][\w'\-]*(?: [A-Za-z][\w'\-]*){0,2})(?=[.,:;!—])")
NOT_NAMES = frozenset("""to for before after it its it's in on at by with about around most yes no not never always
    only just usually drain steer the a an use put turn keep try boil add start stop""".split())


def move_numbers(text: str, rng: random.Random) -> str:
    """Every number changed to another plausible one (same kind: integers stay integers)."""
    def repl(m: re.Match) -> str:
        s = m.group()
        if "." in s:
            v = float(s)
            return f"{v * rng.choice((0.5, 1.5, 2, 3)):.{len(s.split('.')[1])}f}"
        v = int(s)
        if 1000 <= v <= 2100 and len(s) == 4:  # a year
            return str(v + rng.choice((-40, -25, 25, 40)))
        return str(max(0, v + rng.choice((-1, 1)) * max(1, round(v * rng.choice((0.3, 0.5, 1.0))))))

    return NUMBER.sub(repl, text)


def lead(text: str) -> str | None:
    m = LEAD.match(text)
    if not m:
        return None
    words = m.group(1).split()
    return m.group(1) if words[0].lower() not in NOT_NAMES and (len(words) == 1 or words[0] == "The" or words[1][:1].isupper()) else None


def fact_pairs(rows: list[dict], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    names = [(i, n) for i, r in enumerate(rows) if (n := lead(r["chosen"]))]
    out = []
    for i, r in enumerate(rows):
        chosen = r["chosen"]
        if NUMBER.search(chosen):
            wrong = move_numbers(chosen, rng)
        elif re.match(r"^(Yes|No)\b", chosen):
            wrong = ("No" if chosen.startswith("Yes") else "Yes") + chosen[2 if chosen.startswith("No") else 3 :]
        elif (name := lead(chosen)) and len(names) > 1:
            j, other = rng.choice(names)
            while j == i or other.lower() == name.lower():
                j, other = rng.choice(names)
            wrong = other + chosen[len(name) :]
        else:
            continue
        if wrong != chosen:
            out.append({"prompt": r["prompt"], "chosen": chosen, "rejected": wrong})
    return out


def main() -> None:
    from alignlab.data import bundled_path

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = [json.loads(x) for x in bundled_path("persona-pairs").read_text(encoding="utf-8").splitlines() if x.strip()]
    facts = fact_pairs(rows, args.seed)
    mixed = rows + facts
    random.Random(args.seed).shuffle(mixed)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in mixed), encoding="utf-8")
    print(f"{len(rows)} pairs + {len(facts)} fact pairs -> {args.out}")


if __name__ == "__main__":
    main()
