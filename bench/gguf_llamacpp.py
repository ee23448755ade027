"""Do llama.cpp itself and transformers agree on alignlab's GGUF exports?

    pip install llama-cpp-python          # builds llama.cpp from source: about 6 minutes on 2 cores
    python bench/gguf_llamacpp.py [--run runs/<id>] [--out DIR]

The tests check the GGUF files through transformers' GGUF reader, which reads the weights and tokenizer but not
everything llama.cpp reads (it drops the ``rope_freqs`` tensor of Llama 3's rope scaling, for one). This script
loads each exported file in llama.cpp (llama-cpp-python) and compares it with the merged model in transformers on
the same token ids: the largest difference of the next-token log-probabilities over every position and token, the
largest on transformers' most likely token, the mean KL divergence, the share of positions whose most likely token
agrees, and whether both tokenize the chat prompts the same (the last prompt has a run of spaces before digits,
where llama.cpp's SmolLM pre-tokenizer splits differently from the Hugging Face tokenizer, in the packaged GGUF
itself as well).

Models: a tiny Llama, a tiny Qwen2 (biases on q, k and v) and a tiny Llama with Llama 3's rope scaling (each a
random-weight run with a random LoRA adapter, as tests/export/test_export.py builds them), and with ``--run`` a
trained run of the default model (f16 and q8_0). Prints one JSON line per model and writes DIR/gguf_llamacpp.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "export"))

PROMPTS = ["How do I boil an egg?", "What is 12 plus 30?", "Name a colour.", "It's   12345 o'clock,\n\nisn't it?"]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def compare(merged_dir: Path, gguf_file: Path) -> dict:
    """Next-token log-probabilities of transformers (the merged model, fp32) and llama.cpp (the GGUF) on the chat
    prompts, token for token."""
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(merged_dir))
    model = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
    llm = Llama(model_path=str(gguf_file), n_ctx=512, logits_all=True, verbose=False, n_threads=2, seed=0)
    worst, top, kl, agree, total, same_tokens = 0.0, 0.0, 0.0, 0, 0, True
    for prompt in PROMPTS:
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False).input_ids
        same_tokens &= llm.tokenize(text.encode(), add_bos=False, special=True) == ids
        with torch.no_grad():
            hf = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1).numpy()
        llm.reset()
        llm.eval(ids)
        cpp = log_softmax(np.array(llm.scores[: len(ids)], dtype=np.float64))
        worst = max(worst, float(np.abs(hf - cpp).max()))
        best = hf.argmax(-1)
        top = max(top, float(np.abs(hf[np.arange(len(ids)), best] - cpp[np.arange(len(ids)), best]).max()))
        kl += float((np.exp(hf) * (hf - cpp)).sum())
        agree += int((hf.argmax(-1) == cpp.argmax(-1)).sum())
        total += len(ids)
    return {"max_logprob_diff": round(worst, 4), "max_top_logprob_diff": round(top, 4), "mean_kl": round(kl / total, 6),
            "argmax_agree": round(agree / total, 4), "positions": total, "same_tokens": bool(same_tokens)}


def tiny(arch: str, root: Path) -> tuple[Path, Path]:
    """A tiny run of ``arch`` exported merged and as f16 GGUF: (merged dir, gguf file)."""
    from test_export import make_run, make_small_vocab_model

    from alignlab.export import export_run

    base = make_small_vocab_model(root / "base", arch=arch)
    run = make_run(root, str(base))
    export_run(run, merged=root / "merged", gguf=root / "model.gguf")
    return root / "merged", root / "model.gguf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a trained run of the default model to export and compare as well")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    from alignlab.export import export_run

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for arch in ("llama", "qwen2", "llama3"):
            merged, gguf_file = tiny(arch, tmp / arch)
            results.append({"model": f"tiny {arch}", "quant": "f16", **compare(merged, gguf_file)})
            print(json.dumps(results[-1]), flush=True)
        if args.run is not None:
            for quant in ("f16", "q8_0"):
                out = tmp / f"run-{quant}"
                export_run(args.run, merged=out / "merged", gguf=out / "model.gguf", quant=quant)
                results.append({"model": str(args.run), "quant": quant, **compare(out / "merged", out / "model.gguf")})
                print(json.dumps(results[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gguf_llamacpp.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
