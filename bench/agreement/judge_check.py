"""The scorecard's persona and correct scores with an LLM judge, against the blind readers of the read sets.

    python bench/agreement/judge_check.py --url URL --model NAME [--sets draft_rewrite,amplify_half,...]
    python bench/agreement/judge_check.py --dump OUT.jsonl [--sets ...]      # the judge's requests, to answer offline
    python bench/agreement/judge_check.py --replay REPLIES.jsonl [--sets ...]

The judge path is the one `alignlab eval --rater judge` takes: the Scorer's raters are an LLMJudge asked over HTTP,
for persona with rewards/judge.py's voice_rubric (the voice alone) and for correctness with its CORRECT_RUBRIC and
each answer's reference (only rows with a reference are judged for it).
With --url the judge is a live OpenAI-compatible endpoint. --dump writes each request the judge would get
({"id", "system", "user"}; id: sha256 of system and user, 16 hex digits) so that a judge can answer them offline;
--replay serves those answers ({"id", "reply"} lines) from a FastAPI endpoint on loopback, so the replies go
through the same HTTP client, parser and scorer. As in check.py, a reader label is "correct" when every reader of the
answer said so, and "in persona" when the readers' mean snark is 1.5 or more of 3. Prints, per set and pooled, for
each score: the judge's AUC, the shipped scorecard's AUC on the same answers, the agreement at the scorecard's
threshold (persona JudgeRater.in_persona_at, 0.5, and correct 0.5: 6 or more of 10), and how the judge's scores split by label.

`judge_replies.jsonl` beside this file holds one measured judge's replies (docs/results.md says which), and
`judge_replies_strong_voice.jsonl` another's, of the same kind, to the 252 requests of the strong_voice set
(`--replay bench/agreement/judge_replies_strong_voice.jsonl --sets strong_voice`).
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
SETS = ("draft_rewrite", "amplify_half", "best_of", "base_opening", "opening")


def key(system: str, user: str) -> str:
    return hashlib.sha256((system + "\x00" + user).encode()).hexdigest()[:16]


def _rows(sets) -> list[dict]:
    import check

    out = []
    for name in sets:
        for r in check._rows(name):
            reads = check._reads(r)
            out.append({"set": name, "prompt": r["prompt"], "answer": r["answer"], "source": r["source"],
                        "label": int(all(x["correct"] for x in reads)),
                        "persona_label": int(sum(x["snark"] for x in reads) / len(reads) >= 1.5)})
    return out


def _judge_scorer(judge):
    """The scorecard as `eval --rater judge` builds it: the judge rates the voice alone and the correctness."""
    from alignlab.config import DEFAULT_PERSONA
    from alignlab.eval.raters import JudgeRater
    from check import agreement_scorer
    from alignlab.rewards.judge import voice_rubric

    judge.rubric = voice_rubric(DEFAULT_PERSONA)
    return agreement_scorer(persona_rater=JudgeRater(judge))


def _scored(rows: list[dict], url: str, model: str) -> list[dict]:
    from alignlab.rewards.judge import LLMJudge

    scorer = _judge_scorer(LLMJudge(url, model, cache=False))
    return scorer.score([{k: r[k] for k in ("prompt", "answer", "source")} for r in rows])


def dump(rows: list[dict]) -> list[dict]:
    """Every request the judge would get for ``rows``, without asking anyone."""
    from alignlab.rewards.judge import LLMJudge

    seen: dict[str, dict] = {}

    class Recorder(LLMJudge):
        def chat(self, system: str, user: str) -> str:
            seen[key(system, user)] = {"id": key(system, user), "system": system, "user": user}
            return "5"

    scorer = _judge_scorer(Recorder("http://127.0.0.1:9/v1", "recorder", cache=False))
    scorer.score([{k: r[k] for k in ("prompt", "answer", "source")} for r in rows])
    return sorted(seen.values(), key=lambda x: x["id"])


def replayed(rows: list[dict], replies: dict[str, str]) -> list[dict]:
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


def report(rows: list[dict], judged: list[dict]) -> list[dict]:
    """Per set and pooled, for persona and correct: the judge's AUC against the readers and the shipped scorecard's."""
    from check import agreement_scorer

    from alignlab.eval.raters import JudgeRater
    from alignlab.eval.scores import THRESHOLD, auc

    shipped = agreement_scorer().score([{k: r[k] for k in ("prompt", "answer", "source")} for r in rows])
    out = []
    # the judge's own in-persona point (JudgeRater.in_persona_at), as the scorecard uses it with a judge
    for score, label, cut in (("persona", "persona_label", JudgeRater.in_persona_at), ("correct", "label", THRESHOLD)):
        for name in [*dict.fromkeys(r["set"] for r in rows), "pooled"]:
            idx = [i for i, r in enumerate(rows) if judged[i][score] is not None and name in (r["set"], "pooled")]
            y = [rows[i][label] for i in idx]
            j = [judged[i][score] for i in idx]
            if not idx or not 0 < sum(y) < len(y):
                continue
            split = Counter((round(1 + 9 * v), t) for v, t in zip(j, y))
            out.append({"score": score, "set": name, "answers": len(idx), "reader_yes": sum(y),
                        "judge_auc": round(auc(j, y), 3),
                        "scorecard_auc": round(auc([shipped[i][score] for i in idx], y), 3),
                        "agreement_at_threshold": round(sum((v >= cut) == bool(t) for v, t in zip(j, y)) / len(y), 3),
                        "judge_scores_when_readers_say_yes": {s: n for (s, t), n in sorted(split.items()) if t},
                        "judge_scores_when_readers_say_no": {s: n for (s, t), n in sorted(split.items()) if not t}})
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
