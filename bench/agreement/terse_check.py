"""Does the persona classifier read terseness as snark, and does teaching it otherwise agree better with the reads?

The bundled labelled set (bundled:persona-labelled) has no answer under 16 words, so the classifier has never seen a
bare "Paris." and reads it as snark (0.99). terse_labelled.jsonl holds 250 short answers written for this check: for
each of the labelled set's 125 prompts a terse plain answer (1-8 words) and a terse snarky one (3-15 words), both
correct. This script trains the classifier on the labelled set with and without them and prints, for each, its
reading of a few short answers and its persona AUC (classifier alone, no voice contrast) against every blind-read set
that check.py scores, and pooled over them. Minutes on 2 cores (MiniLM over about 5,000 answers, twice).

    python bench/agreement/terse_check.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).parent
PROBES = ["Paris.", "The capital of France is Paris.", "56.", "No.", "Two.", "Paris. Obviously. Did you skip every "
          "geography class?", "No. Shocking, I know."]


def main() -> None:
    sys.path.insert(0, str(HERE))
    import check
    from calibrate import out_of_fold

    from alignlab.data import bundled_path
    from alignlab.eval.persona import SentencePersonaClassifier, labelled_rows
    from alignlab.eval.scores import auc

    labelled = labelled_rows(bundled_path("persona-labelled"))
    terse = [json.loads(x) for x in (HERE / "terse_labelled.jsonl").read_text().splitlines() if x.strip()]
    lo = out_of_fold(labelled + terse)
    print(json.dumps({"out_of_fold_auc_labelled": round(auc(lo[: len(labelled)], [r["persona"] for r in labelled]), 3),
                      "out_of_fold_auc_terse": round(auc(lo[len(labelled):], [r["persona"] for r in terse]), 3)}))
    variants = {}
    for name, rows in (("labelled", labelled), ("labelled+terse", labelled + terse)):
        clf = SentencePersonaClassifier()
        clf.train([r["answer"] for r in rows], [r["persona"] for r in rows])
        variants[name] = clf
        on_terse = clf.score([r["answer"] for r in terse])
        print(json.dumps({"classifier": name, "probes": dict(zip(PROBES, (round(v, 2) for v in clf.score(PROBES)))),
                          "terse_plain_read_as_snark": sum(v >= 0.5 for v, r in zip(on_terse, terse) if not r["persona"])}))
    pooled = {name: ([], []) for name in variants}
    for name in ("reads",) + check.SETS:
        rows = check._rows(name)
        yes = [int(r["read"]["snarky"]) if name == "reads" else
               int(sum(x["snark"] for x in check._reads(r)) / len(check._reads(r)) >= 1.5) for r in rows]
        if not 0 < sum(yes) < len(yes):
            continue
        line = {"set": name, "answers": len(rows)}
        for v, clf in variants.items():
            s = clf.score([r["answer"] for r in rows])
            line[v] = round(auc(s, yes), 3)
            pooled[v][0].extend(s)
            pooled[v][1].extend(yes)
        print(json.dumps(line), flush=True)
    print(json.dumps({"pooled_answers": len(pooled["labelled"][0]),
                      **{f"pooled_auc_{v}": round(auc(*p), 4) for v, p in pooled.items()}}))


if __name__ == "__main__":
    main()
