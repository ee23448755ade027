"""Candidate mimicry signals against the blind readers' "bolted on" (majority of two or more readers), over the
snarky answers (mean reader snark at least 1) of every model-answer set in check.py: per-sentence persona scores
from the scorecard's classifier, and answer length. Prints each signal's AUC, then where the coherent labels come
from. The scorecard's mimicry score reaches 0.41 on these answers; one reader used as a scorer for another, 0.78.

    python bench/agreement/mimicry_signals.py
"""
import json, re, sys, os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check
from alignlab.eval.scores import auc
rows = []
for name in check.SETS:
    if name == "graded": continue
    for r in check._rows(name):
        reads = check._reads(r)
        if len(reads) < 2 or sum(x["snark"] for x in reads) / len(reads) < 1: continue
        b = sum(bool(x.get("bolted")) for x in reads) / len(reads)
        rows.append({"set": name, "prompt": r["prompt"], "answer": r["answer"], "bolted": b, "source": r.get("source")})
print(len(rows), "snarky answers", sum(r["bolted"] > 0.5 for r in rows), "bolted by majority")
def sents(a):
    s = [x.strip() for x in re.split(r'(?<=[.!?;:])\s+', a.strip()) if x.strip()]
    return s or [a]
texts = []
for r in rows:
    ss = sents(r["answer"]); r["ss"] = ss
    texts += [{"prompt": r["prompt"], "answer": r["answer"]}] + [{"prompt": r["prompt"], "answer": s} for s in ss] \
             + [{"prompt": r["prompt"], "answer": " ".join(ss[:-1]) or ss[0]}]
from alignlab.eval.persona import persona_classifier
clf, _ = persona_classifier(None)
ps = clf.score([t["answer"] for t in texts])
k = 0
for r in rows:
    n = len(r["ss"]); r["p_all"] = ps[k]; r["p_s"] = ps[k+1:k+1+n]; r["p_head"] = ps[k+1+n]; k += n + 2
y = [int(r["bolted"] > 0.5) for r in rows]
feats = {
 "last_minus_first": lambda r: r["p_s"][-1] - r["p_s"][0],
 "max_minus_first": lambda r: max(r["p_s"]) - r["p_s"][0],
 "drop_without_last": lambda r: r["p_all"] - r["p_head"],
 "plain_share": lambda r: sum(p < 0.5 for p in r["p_s"]) / len(r["p_s"]),
 "min_sentence": lambda r: -min(r["p_s"]),
 "n_sent_neg": lambda r: -len(r["p_s"]),
 "fewer_words": lambda r: -len(r["answer"].split()),
 "max_minus_mean": lambda r: max(r["p_s"]) - sum(r["p_s"]) / len(r["p_s"]),
}
for name, f in feats.items():
    print(name, round(auc([f(r) for r in rows], y), 3))
# Length separates best, but the coherent labels are few and sit in a handful of sources (mostly two early sets),
# so what it measures is which adapters readers read early, not a property a scorer should flag: the bundled
# written chosen answers, which readers found coherent, are shorter than most model answers.
from collections import Counter
coherent = Counter(r["source"] for r, t in zip(rows, y) if not t)
print(len(rows) - sum(y), "coherent by majority, from", len(coherent), "sources; the top three:", coherent.most_common(3))
