"""The scorecard's correct score with an LLM judge, against the blind readers of the read sets.

    python bench/agreement/judge_check.py --url URL --model NAME [--sets draft_rewrite,amplify_half]
    python bench/agreement/judge_check.py --dump OUT.jsonl [--sets ...]      # the judge's requests, to answer offline
    python bench/agreement/judge_check.py --replay REPLIES.jsonl [--sets ...]

The judge path is the one `alignlab eval --rater judge` takes: the Scorer's correct rater is an LLMJudge asked over
HTTP with rewards/judge.py's CORRECT_RUBRIC and each answer's reference (only rows with a reference are judged).
With --url the judge is a live OpenAI-compatible endpoint. --dump writes each request the judge would get
({"id", "system", "user"}; id: sha256 of system and user, 16 hex digits) so that a judge can answer them offline;
--replay serves those answers ({"id", "reply"} lines) from a FastAPI endpoint on loopback, so the replies go
through the same HTTP client, parser and scorer. A reader label is "correct" when every reader of the answer said
so, as in check.py. Prints, per set and pooled: the judge's AUC, the shipped checks' AUC on the same answers,
the agreement at the scorecard's threshold (0.5: a score of 6 or more), and how the judge's scores split by label.

`judge_replies.jsonl` beside this file holds one measured judge's replies (docs/results.md says which).
"""


import argparse
import hashlib
import json
import os
import sys
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))
SETS = ("draft_rewrite", "amplify_half")


def key(system: str, user: str) -> str:
    return hashlib.sha256((system + "\x00" + user).encode()).hexdigest()[:16]


def _rows(sets) -> list[dict]:
    import check

    out = []
    for name in sets:
        for r in check._rows(name):
            reads = check._reads(r)
            out.append({"set": name, "prompt": r["prompt"], "answer": r["answer"], "source": r["source"],
                        "label": int(all(x["correct"] for x in reads))})
    return out


def _scored(rows: list[dict], url: str, model: str) -> list[float | None]:
    from alignlab.eval.raters import JudgeRater
    from alignlab.eval.scores import scorer_for
    from alignlab.rewards.judge import LLMJudge

    scorer = scorer_for(None)
    scorer.correct_rater = JudgeRater(LLMJudge(url, model, cache=False))
    return [s["correct"] for s in scorer.score([{k: r[k] for k in ("prompt", "answer", "source")} for r in rows])]


def dump(rows: list[dict]) -> list[dict]:
    """Every correct-score request the judge would get for ``rows``, without asking anyone."""
    from alignlab.eval.raters import JudgeRater
    from alignlab.eval.scores import scorer_for
    from alignlab.rewards.judge import LLMJudge

    seen: dict[str, dict] = {}

    class Recorder(LLMJudge):
        def chat(self, system: str, user: str) -> str:
            seen[key(system, user)] = {"id": key(system, user), "system": system, "user": user}
            return "5"

    scorer = scorer_for(None)
    scorer.correct_rater = JudgeRater(Recorder("http://127.0.0.1:9/v1", "recorder", cache=False))
    scorer.score([{k: r[k] for k in ("prompt", "answer", "source")} for r in rows])
    return sorted(seen.values(), key=lambda x: x["id"])


def replayed(rows: list[dict], replies: dict[str, str]) -> list[float | None]:
    """The judge path with ``replies`` (id -> reply text) served over HTTP on loopback; a request without a reply
    is an error."""
    from fastapi import FastAPI, HTTPException, Request

    from alignlab.serve.server import background

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        k = key(body["messages"][0]["content"], body["messages"][1]["content"])
        if k not in replies:
            raise HTTPException(404, f"no reply for request {k}")
        return {"id": k, "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": replies[k]}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1}}

    with background(app) as url:
        return _scored(rows, f"{url}/v1", "replayed")


def report(rows: list[dict], judged: list[float | None]) -> list[dict]:
    from alignlab.eval.scores import THRESHOLD, auc, scorer_for

    checks = [s["correct"] for s in scorer_for(None).score([{k: r[k] for k in ("prompt", "answer", "source")}
                                                              for r in rows])]
    out = []
    for name in [*dict.fromkeys(r["set"] for r in rows), "pooled"]:
        idx = [i for i, r in enumerate(rows) if judged[i] is not None and name in (r["set"], "pooled")]
        y = [rows[i]["label"] for i in idx]
        j = [judged[i] for i in idx]
        split = Counter((round(1 + 9 * judged[i]), rows[i]["label"]) for i in idx)
        out.append({"set": name, "answers": len(idx), "reader_correct": sum(y), "judge_auc": round(auc(j, y), 3),
                    "checks_auc": round(auc([checks[i] for i in idx], y), 3),
                    "agreement_at_threshold": round(sum((v >= THRESHOLD) == bool(t) for v, t in zip(j, y)) / len(y), 3),
                    "scores_when_readers_say_correct": {s: n for (s, lab), n in sorted(split.items()) if lab},
                    "scores_when_readers_say_wrong": {s: n for (s, lab), n in sorted(split.items()) if not lab}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--url")
    ap.add_argument("--model")
    ap.add_argument("--dump")
    ap.add_argument("--replay")
    a = ap.parse_args()
    rows = _rows(a.sets.split(","))
    if a.dump:
        items = dump(rows)
        Path(a.dump).write_text("".join(json.dumps(x) + "\n" for x in items))
        print(f"{len(items)} judge requests -> {a.dump}")
        return
    if a.replay:
        replies = {x["id"]: str(x["reply"]) for x in map(json.loads, Path(a.replay).read_text().splitlines()) if x}
        judged = replayed(rows, replies)
    elif a.url and a.model:
        judged = _scored(rows, a.url, a.model)
    else:
        sys.exit("give --url and --model, --dump FILE or --replay FILE")
    for line in report(rows, judged):
        print(json.dumps(line))


if __name__ == "__main__":
    main()
