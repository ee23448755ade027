"""The persona classifier trained on variants of its labelled set, scored against every blind read (30th session).

Variants of bundled:persona-labelled: ``refit`` (as shipped: reproduces the shipped scores), ``woven`` (plus 125
answers written with the voice woven through, woven_labelled.jsonl, labelled in persona), ``woven_nobolt`` (that, with
the 125 bolted-on answers labelled not in persona), ``nobolt`` (the shipped set with the bolted-on answers labelled
not in persona) and ``woven_strong`` (the woven answers and 125 more in the strong sets' voice, strong_labelled.jsonl,
written for the same labelled prompts in the 31st session). Each variant's combined score (classifier and voice contrast, COMBINED refitted as calibrate.py does)
is compared with the shipped one: per read set, the AUC for "in persona" (the readers' mean snark 1.5 or more; the
first set's own yes/no "snarky" label, which counts any clear snark), pooled over all of them, and per model the share in persona by the readers, the shipped score
and the variant's. The voice contrasts are cached in --cache (about 30 minutes for the 5,491 answers on 2 cores).

    python bench/agreement/label_variants.py woven [--cache contrasts.json] [--sets voice_pairs,first]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def main() -> None:
    import calibrate
    import check
    from alignlab.data import bundled_path
    from alignlab.eval.contrast import contrast
    from alignlab.eval.persona import SentencePersonaClassifier, combine, labelled_rows, persona_classifier
    from alignlab.eval.scores import auc

    ap = argparse.ArgumentParser()
    ap.add_argument("variant", choices=["refit", "woven", "woven_nobolt", "nobolt", "woven_strong"])
    ap.add_argument("--cache", type=Path, default=HERE / ".label_variants_contrasts.json")  # git-ignored
    ap.add_argument("--sets", default=",".join(check.SETS + ("first",)))
    a = ap.parse_args()

    shipped = labelled_rows(bundled_path("persona-labelled"))
    woven = [json.loads(x) for x in (HERE / "woven_labelled.jsonl").read_text().splitlines() if x.strip()]
    strong = [json.loads(x) for x in (HERE / "strong_labelled.jsonl").read_text().splitlines() if x.strip()]
    relabel = lambda rows: [dict(r, persona=0) if r["kind"] == "bolted" else r for r in rows]  # noqa: E731
    rows_v = {"refit": shipped, "woven": shipped + woven, "woven_nobolt": relabel(shipped + woven),
              "nobolt": relabel(shipped), "woven_strong": shipped + woven + strong}[a.variant]

    sets = {}
    for name in a.sets.split(","):
        if name == "first":
            first = [json.loads(x) for x in (HERE / "reads.jsonl").read_text().splitlines() if x.strip()]
            sets[name] = [(r["source"], r["prompt"], r["answer"], 1.5 if r["read"]["snarky"] else 0.0) for r in first]
        else:
            sets[name] = [(r["source"], r["prompt"], r["answer"],
                           sum(x["snark"] for x in check._reads(r)) / len(check._reads(r))) for r in check._rows(name)]

    cache = json.loads(a.cache.read_text()) if a.cache.is_file() else {}
    need = {(r["prompt"], r["answer"]) for r in rows_v} | {(p, t) for rs in sets.values() for _, p, t, _ in rs}
    miss = sorted(k for k in need if json.dumps(k) not in cache)
    for i in range(0, len(miss), 256):
        chunk = miss[i:i + 256]
        for k, v in zip(chunk, contrast([p for p, _ in chunk], [t for _, t in chunk])):
            cache[json.dumps(k)] = v
        a.cache.write_text(json.dumps(cache))
        print(f"voice contrasts: {i + len(chunk)} / {len(miss)}", file=sys.stderr, flush=True)
    con = lambda p, t: cache[json.dumps((p, t))]  # noqa: E731

    # COMBINED refitted on the variant's labels, as calibrate.py fits it on the shipped set
    labels = [int(r["persona"]) for r in rows_v]
    fitted, _ = calibrate.fit(calibrate.out_of_fold(rows_v), [con(r["prompt"], r["answer"]) for r in rows_v], labels)
    new_clf = SentencePersonaClassifier()
    new_clf.train([r["answer"] for r in rows_v], labels)
    old_clf, _ = persona_classifier(None)
    print(json.dumps({"variant": a.variant, "labels": len(rows_v), "combined": {k: round(v, 3) for k, v in fitted.items()}}))

    pool: dict[str, list] = {"old": [], "new": [], "y": []}
    for name, rs in sets.items():
        answers, cs = [t for _, _, t, _ in rs], [con(p, t) for _, p, t, _ in rs]
        old, new = combine(old_clf.score(answers), cs), combine(new_clf.score(answers), cs, fitted)
        y = [int(v >= 1.5) for *_, v in rs]
        pool["old"] += old
        pool["new"] += new
        pool["y"] += y
        both = 0 < sum(y) < len(y)
        by = defaultdict(list)
        for (src, *_, v), o, n in zip(rs, old, new):
            by[src].append((v >= 1.5, o >= 0.9, n >= 0.9))
        print(json.dumps({"set": name, "answers": len(rs), "in_persona": sum(y),
                          "auc_shipped": round(auc(old, y), 3) if both else None,
                          "auc_variant": round(auc(new, y), 3) if both else None,
                          "share_readers_shipped_variant": {src: [round(sum(x[i] for x in v) / len(v), 2) for i in range(3)]
                                                            for src, v in by.items()}}))
    both = 0 < sum(pool["y"]) < len(pool["y"])
    print(json.dumps({"pooled_answers": len(pool["y"]), "auc_shipped": round(auc(pool["old"], pool["y"]), 3) if both else None,
                      "auc_variant": round(auc(pool["new"], pool["y"]), 3) if both else None}))


if __name__ == "__main__":
    main()
