"""An experiment kept for the record: the model's own answers, framed with written snark (README: "Choosing the recipe").

The idea: correctness drops when training puts facts into the model that it did not know, so keep the content
the model's own and add only the voice. For each prompt of the bundled pairs:

  content   the model's greedy answer (the project's decoding), cut at a sentence end under 45 words
  chosen    content with an opener, a closer, both, or a word woven into its first sentence, drawn from
            bench/frames/snark.json (by category; "How do I X?" and "What is X?" get openers naming X)
  rejected  the uncut answer

and writes ``voice_sft.jsonl`` (prompt, completion) and ``voice_pairs.jsonl`` (prompt, chosen, rejected) for
`bench/sweep_recipes.py --add 'voice=sft:voice_sft.jsonl:{...}'`. Measured: see the README table.

    python bench/frame_own_answers.py --out sweep-project/data [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

FRAMES = Path(__file__).with_name("frames") / "snark.json"
SWAP = {"my": "your", "i": "you", "me": "you", "mine": "yours", "myself": "yourself", "am": "are", "i'm": "you're"}


def cut(answer: str, max_words: int = 45) -> str:
    """Whole sentences from the start, at most ``max_words`` words (at least one sentence); no dangling list."""
    sents = re.findall(r"[^.!?]*[.!?]+(?:\s|$)", re.sub(r"\n+", " ", answer).strip())
    out: list[str] = []
    for s in sents:
        if out and len(" ".join([*out, s]).split()) > max_words:
            break
        out.append(s.strip())
    while out:  # a list's opening ("... include: 1.") is not an answer
        last = re.sub(r"\s*\d+[.)]$", "", out[-1]).strip()
        if last and not last.endswith(":"):
            out[-1] = last
            break
        out.pop()
    return " ".join(out).strip()


def topical_opener(prompt: str, frames: dict, rng: random.Random) -> str | None:
    you = lambda t: " ".join(SWAP.get(w.lower(), w) for w in t.split())  # noqa: E731
    m = re.match(r"^How (?:do|can|should|would) (?:I|you|we) (.+?)[?.!]*$", prompt.strip(), re.I)
    if m and len(m.group(1).split()) <= 8:
        return rng.choice(frames["action"]).format(a=you(m.group(1)))
    m = re.match(r"^What(?: is|'s| are) ((?:a |an |the )?.+?)[?.!]*$", prompt.strip(), re.I)
    if m and len(m.group(1).split()) <= 6 and not re.search(r"\d", m.group(1)):
        t = you(m.group(1))
        return rng.choice(frames["thing"]).format(t=t, T=t[:1].upper() + t[1:])
    return None


def frame(prompt: str, content: str, category: str, frames: dict, rng: random.Random) -> str:
    openers = frames["openers"]["any"] + frames["openers"].get(category, []) * 3
    closers = frames["closers"]["any"] + frames["closers"].get(category, []) * 3
    topical = topical_opener(prompt, frames, rng)

    def opener() -> str:
        return topical if topical and rng.random() < 0.6 else rng.choice(openers)

    u = rng.random()
    if u < 0.35:
        return f"{opener()} {content}"
    if u < 0.65:
        return f"{content} {rng.choice(closers)}"
    if u < 0.85:
        return f"{opener()} {content} {rng.choice(closers)}"
    m = re.search(r"\b(is|are|was|were)\b ", content)
    if m and m.start() < 120:
        content = f"{content[:m.end() - 1]}, {rng.choice(frames['woven'])}, {content[m.end():]}"
    return f"{content} {rng.choice(closers)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for voice_sft.jsonl and voice_pairs.jsonl")
    ap.add_argument("--model", default=None, help="model (default: the bundled default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from alignlab.config import DEFAULT_MODEL, MAX_NEW_TOKENS, REPETITION_PENALTY
    from alignlab.data import bundled_path
    from alignlab.generate import generate
    from alignlab.models.loading import load_for_inference
    from alignlab.progress import progress_bar

    frames = json.loads(FRAMES.read_text())
    prompts = [json.loads(x)["prompt"] for x in bundled_path("persona-pairs").read_text().splitlines() if x.strip()]
    category = {}
    for name in ("prompts-train", "persona-labelled", "prompts-heldout"):
        for x in bundled_path(name).read_text().splitlines():
            row = json.loads(x) if x.strip() else {}
            if row.get("category"):
                category[row["prompt"]] = row["category"]
    model, tok, _ = load_for_inference(args.model or DEFAULT_MODEL, None)
    answers: list[str] = []
    with progress_bar() as bar:
        task = bar.add_task("own answers", total=len(prompts))
        for i in range(0, len(prompts), 32):
            answers += generate(model, tok, prompts[i : i + 32], max_new_tokens=MAX_NEW_TOKENS,
                                repetition_penalty=REPETITION_PENALTY, batch_size=32)
            bar.advance(task, len(prompts[i : i + 32]))
    rng = random.Random(args.seed)
    sft, pairs = [], []
    for p, a in zip(prompts, answers):
        content = cut(a)
        if len(content.split()) < 3:
            continue
        text = frame(p, content, category.get(p, "any"), frames, rng)
        sft.append({"prompt": p, "completion": text})
        pairs.append({"prompt": p, "chosen": text, "rejected": a})
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("voice_sft.jsonl", sft), ("voice_pairs.jsonl", pairs)):
        (args.out / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(sft)} of {len(prompts)} prompts framed -> {args.out}/voice_sft.jsonl, voice_pairs.jsonl")


if __name__ == "__main__":
    main()
