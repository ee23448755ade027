"""Export: merged safetensors model, GGUF round trip through transformers, Ollama Modelfile, GGUF/Ollama import.

Fast tests use a 2-layer Llama with a 400-token byte-level BPE tokenizer built here (the real 49k vocabulary
alone takes ~17 s to parse from a GGUF on this machine); the real default model's round trip is marked slow.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from alignlab.errors import AlignlabError

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TEXT = [
    "How do I boil an egg? Put it in boiling water for nine minutes, then cool it.",
    "What is 12 plus 30? It is 42, obviously.",
    "Name a colour. Blue, the colour of the sky and of most corporate logos.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps.",
    "Water boils at one hundred degrees Celsius at sea level.",
] * 20
PROMPTS = ["How do I boil an egg?", "What is 12 plus 30?", "Name a colour."]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_small_vocab_model(path: Path, arch: str = "llama") -> Path:
    """A 2-layer Llama (width 64) with a 400-token byte-level BPE tokenizer and SmolLM2's ChatML template;
    ``arch="qwen2"``: Qwen2's layout (q/k/v biases) and its tokenizer's pre-tokenizer (its split, then bytes);
    ``arch="llama3"``: Llama 3's rope scaling and pre-tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from alignlab.export.gguf_file import LLAMA3_SPLIT, QWEN2_SPLIT

    tok = Tokenizer(models.BPE())
    split = {"qwen2": QWEN2_SPLIT, "llama3": LLAMA3_SPLIT}.get(arch)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False) if split is None else pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(split), behavior="isolated"),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    config_cls, model_cls = (Qwen2Config, Qwen2ForCausalLM) if arch == "qwen2" else (LlamaConfig, LlamaForCausalLM)
    rope = {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 64}} if arch == "llama3" else {}
    config = config_cls(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                        tie_word_embeddings=True, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                        pad_token_id=fast.pad_token_id, rope_theta=10000.0, **rope)
    torch.manual_seed(0)
    model = model_cls(config)
    if arch == "qwen2":  # non-zero biases, so a misplaced one shows in the round trip
        for name, p in model.named_parameters():
            if name.endswith("proj.bias"):
                p.data.normal_(0, 0.5)
    model.save_pretrained(str(path))
    fast.save_pretrained(str(path))
    return path


def make_run(root: Path, base: str, lora_std: float = 0.3, check: dict | None = None) -> Path:
    """A run directory whose adapter has random non-zero LoRA weights, saved the way training saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from alignlab.config import ProjectConfig, dump_config
    from alignlab.models.registry import resolve_model
    from alignlab.rundir import save_adapter

    run = root / "runs" / "20261202-120000-dpo"
    run.mkdir(parents=True)
    info = {"method": "dpo", "model": base, "data": "bundled:persona-pairs", "rows": 600, "status": "done",
            "lora": True, "steps": 60, "final": {"loss": 0.41, "rewards/margins": 2.06}}
    if check:
        info["check"] = check
    (run / "run.json").write_text(json.dumps(info))
    (run / "config.yaml").write_text(dump_config(ProjectConfig(model=base)))
    (run / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "loss": 0.69}) + "\n"
        + json.dumps({"step": 7, "warning": "chosen_logps_falling", "message": "chosen log-probs fell while the margin grew"}) + "\n"
        + json.dumps({"step": 9, "warning": "chosen_logps_falling", "message": "chosen log-probs fell while the margin grew"}) + "\n"
    )
    model = AutoModelForCausalLM.from_pretrained(resolve_model(base), dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    torch.manual_seed(1)
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, lora_std)
    save_adapter(peft, run / "adapter")
    return run


def greedy(model, tok, prompt: str, n: int = 12) -> list[int]:
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return out[0, ids["input_ids"].shape[1]:].tolist()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The small-vocab run, exported merged and as f16 and q8_0 GGUF files."""
    from alignlab.export import export_run

    root = tmp_path_factory.mktemp("export")
    base = make_small_vocab_model(root / "base")
    run = make_run(root, str(base))
    out = export_run(run, merged=root / "merged", gguf=root / "gguf" / "model.gguf", quant="f16")
    q8 = export_run(run, gguf=root / "q8" / "model-q8.gguf", quant="q8_0")
    return {"root": root, "run": run, "base": base, "merged": root / "merged", "gguf": root / "gguf" / "model.gguf",
            "q8": root / "q8" / "model-q8.gguf", "summary": out, "q8_summary": q8}


def test_merged_model_loads_in_plain_transformers_and_equals_base_plus_adapter(exported):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = AutoModelForCausalLM.from_pretrained(str(exported["merged"]), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(exported["merged"]))
    assert tok.chat_template == CHATML
    base = AutoModelForCausalLM.from_pretrained(str(exported["base"]), dtype=torch.float32)
    over = PeftModel.from_pretrained(base, str(exported["run"] / "adapter")).eval()
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]
    with torch.no_grad():
        a, b = merged(ids).logits, over(ids).logits
        plain = base.get_base_model()(ids).logits if hasattr(base, "get_base_model") else None
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    if plain is not None:
        assert not torch.allclose(a, plain, atol=1e-3)  # the adapter changed something
    assert not any(k.startswith("base_model") or "lora" in k for k in merged.state_dict())
    card = (exported["merged"] / "README.md").read_text()
    assert "library_name: transformers" in card and "AutoModelForCausalLM" in card


def test_gguf_round_trip_matches_the_merged_model(exported):
    """Exported GGUF -> transformers gguf_file=: same weights to f16 precision, same tokens, same greedy answers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = AutoModelForCausalLM.from_pretrained(str(exported["merged"]), dtype=torch.float32).eval()
    mtok = AutoTokenizer.from_pretrained(str(exported["merged"]))
    g = exported["gguf"]
    back = AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name, dtype=torch.float32).eval()
    gtok = AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name)
    a, b = merged.state_dict(), back.state_dict()
    assert set(a) == set(b)
    worst = max(((a[k] - b[k]).abs().max() / a[k].abs().max().clamp(min=1e-8)).item() for k in a)
    assert worst < 1e-3, worst  # f16 rounding; a wrong q/k permutation would be off by O(1)
    answers = []
    for prompt in PROMPTS:
        msgs = [{"role": "user", "content": prompt}]
        assert mtok.apply_chat_template(msgs, add_generation_prompt=True) == gtok.apply_chat_template(msgs, add_generation_prompt=True)
        want = greedy(merged, mtok, prompt)
        assert greedy(back, gtok, prompt) == want
        answers.append(want)
    assert len({t for ans in answers for t in ans}) > 3, answers  # the answers are not one repeated token
    assert gtok.eos_token == "<|im_end|>" and gtok.chat_template == mtok.chat_template


def test_gguf_metadata_and_tensor_types(exported):
    from gguf import GGUFReader

    f16, q8 = GGUFReader(str(exported["gguf"])), GGUFReader(str(exported["q8"]))
    fields = f16.fields
    assert fields["general.architecture"].contents() == "llama"
    assert fields["llama.block_count"].contents() == 2
    assert fields["llama.attention.head_count_kv"].contents() == 2
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert fields["tokenizer.ggml.eos_token_id"].contents() == 2
    assert "<|im_start|>" in fields["tokenizer.chat_template"].contents()
    names = {t.name: t.tensor_type.name for t in f16.tensors}
    assert "output.weight" not in names  # tied: llama.cpp reuses token_embd
    assert names["blk.0.attn_q.weight"] == "F16" and names["blk.0.attn_norm.weight"] == "F32"
    q8names = {t.name: t.tensor_type.name for t in q8.tensors}
    assert q8names["blk.1.ffn_down.weight"] == "Q8_0" and q8names["output_norm.weight"] == "F32"
    assert exported["q8"].stat().st_size < exported["gguf"].stat().st_size
    assert exported["q8_summary"]["gguf"]["tensors"]["Q8_0"] >= 14


def test_qwen2_gguf_round_trip_keeps_biases_rope_order_and_tokenizer(tmp_path):
    """A Qwen2-layout model (the family users most often bring) exports as llama.cpp's qwen2: q/k rows unpermuted,
    q/k/v biases in F32, pre-tokenizer 'qwen2'; read back by transformers it has the merged model's weights, tokens
    and greedy answers."""
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignlab.export import export_run

    base = make_small_vocab_model(tmp_path / "base", arch="qwen2")
    run = make_run(tmp_path, str(base))
    g = tmp_path / "gguf" / "model.gguf"
    export_run(run, merged=tmp_path / "merged", gguf=g, quant="f16")
    fields = GGUFReader(str(g)).fields
    assert fields["general.architecture"].contents() == "qwen2" and fields["tokenizer.ggml.pre"].contents() == "qwen2"
    names = {t.name: t.tensor_type.name for t in GGUFReader(str(g)).tensors}
    assert names["blk.0.attn_q.bias"] == names["blk.1.attn_v.bias"] == "F32" and "output.weight" not in names
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32).eval()
    back = AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name, dtype=torch.float32).eval()
    a, b = merged.state_dict(), back.state_dict()
    assert set(a) == set(b) and any(k.endswith("q_proj.bias") for k in a)
    worst = max(((a[k] - b[k]).abs().max() / a[k].abs().max().clamp(min=1e-8)).item() for k in a)
    assert worst < 1e-3, worst  # a llama-style permutation of qwen2's q/k rows would be off by O(1)
    mtok = AutoTokenizer.from_pretrained(str(tmp_path / "merged"))
    gtok = AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name)
    for prompt in [*PROMPTS, "It's   12345 o'clock,\n\nisn't it?"]:
        msgs = [{"role": "user", "content": prompt}]
        text = mtok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        assert gtok(text).input_ids == mtok(text).input_ids
        assert greedy(back, gtok, prompt) == greedy(merged, mtok, prompt)


def test_llama3_rope_scaling_goes_out_as_llama_cpps_rope_freqs(tmp_path):
    """Llama 3.1/3.2's rope scaling: llama.cpp divides each rotary pair's frequency by ``rope_freqs.weight``, so
    that tensor must equal the default frequencies over the ones transformers computes for the config."""
    import numpy as np
    from gguf import GGUFReader
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from alignlab.export import export_run

    base = make_small_vocab_model(tmp_path / "base", arch="llama3")
    g = tmp_path / "model.gguf"
    export_run(make_run(tmp_path, str(base)), gguf=g)
    reader = GGUFReader(str(g))
    assert reader.fields["tokenizer.ggml.pre"].contents() == "llama-bpe"
    freqs = next(np.array(t.data) for t in reader.tensors if t.name == "rope_freqs.weight")
    config = AutoConfig.from_pretrained(str(base))
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    plain = 1.0 / 10000.0 ** (np.arange(0, 16, 2) / 16)  # head_dim 16
    assert freqs.shape == (8,) and freqs.min() == 1.0 and freqs.max() == 8.0  # both ends of the ramp are in it
    np.testing.assert_allclose(freqs, plain / scaled.numpy(), rtol=1e-5)


def test_q8_0_gguf_loads_and_stays_close(exported):
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(exported["merged"]), dtype=torch.float32).eval()
    q8 = exported["q8"]
    back = AutoModelForCausalLM.from_pretrained(str(q8.parent), gguf_file=q8.name, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 20, 40, 60, 80, 100, 120, 2]])
    with torch.no_grad():
        a, b = merged(ids).logits.flatten(), back(ids).logits.flatten()
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.999


def test_modelfile_has_chatml_template_system_and_stops(exported):
    text = (exported["gguf"].parent / "Modelfile").read_text()
    assert "FROM ./model.gguf" in text
    assert 'TEMPLATE """' in text and "<|im_start|>{{ .Role }}" in text
    assert 'PARAMETER stop "<|im_end|>"' in text
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text
    assert "PARAMETER repeat_penalty 1.2" in text  # the project's sampling settings travel
    assert "PARAMETER top_p 1" in text and "PARAMETER top_k 0" in text  # "off" written, or Ollama's 0.9 and 40 apply


def test_a_modelfile_with_a_triple_quote_in_the_system_prompt_is_refused():
    from alignlab.export.modelfile import render_modelfile

    with pytest.raises(AlignlabError, match='holds """'):
        render_modelfile("m.gguf", None, system='He said """hi"""')


def test_ollama_template_renders_like_the_jinja_template():
    """Render the Go template by hand for one conversation and compare with transformers' Jinja rendering."""
    from alignlab.export.modelfile import CHATML as GO

    system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "?"}]
    # what Ollama's template produces for .System + .Messages (no system message among them)
    rendered = f"<|im_start|>system\n{system}<|im_end|>\n" + "".join(
        f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs) + "<|im_start|>assistant\n"
    from jinja2 import Template

    assert Template(CHATML).render(messages=msgs, add_generation_prompt=True) == rendered
    assert GO.startswith("{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n")
    assert GO.endswith("<|im_start|>assistant\n")


def build_ollama_store(root: Path, gguf: Path, name: str = "snarky", tag: str = "latest", adapter: bool = False) -> Path:
    """A store in Ollama's layout (manifests + content-addressed blobs) holding ``gguf`` as model ``name``."""
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    data = gguf.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    (blobs / f"sha256-{digest}").write_bytes(data)
    template = b"{{ .Prompt }}"
    tdigest = hashlib.sha256(template).hexdigest()
    (blobs / f"sha256-{tdigest}").write_bytes(template)
    layers = [{"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": len(data)},
              {"mediaType": "application/vnd.ollama.image.template", "digest": f"sha256:{tdigest}", "size": len(template)}]
    if adapter:
        layers.append({"mediaType": "application/vnd.ollama.image.adapter", "digest": f"sha256:{tdigest}", "size": 1})
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": f"sha256:{tdigest}", "size": 1},
                "layers": layers}
    path = root / "manifests" / "registry.ollama.ai" / "library" / name / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return root


def test_import_from_gguf_file_and_ollama_store(exported, tmp_path, monkeypatch):
    """--model path.gguf and --model ollama:NAME resolve to a converted model with the GGUF's weights."""
    from transformers import AutoModelForCausalLM

    from alignlab.models.loading import load_base, load_tokenizer
    from alignlab.models.registry import gguf_source, resolve_model

    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "home"))
    store = build_ollama_store(tmp_path / "ollama", exported["gguf"])
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    g = exported["gguf"]
    want = AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name, dtype=torch.float32).state_dict()

    model = load_base("ollama:snarky")
    got = model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert load_tokenizer("ollama:snarky:latest").apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) \
        .startswith("<|im_start|>system")
    assert gguf_source("ollama:snarky").name.startswith("sha256-")
    again = resolve_model("ollama:library/snarky")  # converted once, then reused
    assert again == resolve_model("ollama:snarky") and Path(again).parent == tmp_path / "home" / "models"

    direct = load_base(str(g)).state_dict()
    assert all(torch.equal(direct[k], want[k]) for k in want)


def test_import_errors_are_one_line(tmp_path, monkeypatch, exported):
    from alignlab.models.registry import resolve_model

    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "empty"))
    with pytest.raises(AlignlabError, match="Ollama model 'nope' not found"):
        resolve_model("ollama:nope")
    store = build_ollama_store(tmp_path / "o2", exported["gguf"], name="split", adapter=True)
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    with pytest.raises(AlignlabError, match="separate adapter"):
        resolve_model("ollama:split")
    with pytest.raises(AlignlabError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "missing.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises((AlignlabError, ValueError)):
        resolve_model(str(bad))


def test_a_split_gguf_is_refused_not_half_loaded(tmp_path, monkeypatch, exported):
    """transformers reads a split GGUF's first part alone and fills the rest with random weights."""
    import numpy as np
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    from alignlab.models.registry import resolve_model

    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "home"))
    reader = GGUFReader(str(exported["gguf"]))

    def rewrite(name: str, skip: str = "", **kw) -> None:
        writer = GGUFWriter(str(tmp_path / name), "llama", **kw)
        for key, field in reader.fields.items():
            if key.startswith("GGUF.") or key == "general.architecture":
                continue
            if field.types[0] == GGUFValueType.ARRAY:
                writer.add_key_value(key, list(field.contents()), field.types[0], sub_type=field.types[-1])
            else:
                writer.add_key_value(key, field.contents(), field.types[0])
        for t in reader.tensors:
            if t.name != skip:
                writer.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    rewrite("m.gguf", split_max_tensors=8)
    first = sorted(tmp_path.glob("m-*.gguf"))[0]
    with pytest.raises(AlignlabError, match="first of [0-9]+ parts of a split GGUF") as err:
        resolve_model(str(first))
    assert "llama-gguf-split --merge" in str(err.value)
    rewrite("short.gguf", skip="blk.0.ffn_up.weight")  # one tensor missing: refused, not drawn at random
    with pytest.raises(AlignlabError, match="lacks 1 of the model's tensors"):
        resolve_model(str(tmp_path / "short.gguf"))
    assert not (tmp_path / "home" / "models").exists() or not any((tmp_path / "home" / "models").iterdir())


def test_ollama_name_parsing():
    from alignlab.models.ollama import parse_name

    assert parse_name("snarky") == ("registry.ollama.ai", "library", "snarky", "latest")
    assert parse_name("me/snarky:v2") == ("registry.ollama.ai", "me", "snarky", "v2")
    assert parse_name("localhost:11434/me/snarky") == ("localhost:11434", "me", "snarky", "latest")


def run_cli(monkeypatch, capsys, *args):
    from alignlab.cli import main

    monkeypatch.setattr(sys, "argv", ["alignlab", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_export_and_its_errors(exported, tmp_path, monkeypatch, capsys):
    run = exported["run"]
    code, out, err = run_cli(monkeypatch, capsys, "export", str(run), "--gguf", str(tmp_path / "x.gguf"), "--quant", "q8_0")
    assert code == 0, err
    assert "GGUF:" in out and "Q8_0" in out and (tmp_path / "x.gguf").is_file() and (tmp_path / "Modelfile").is_file()
    assert "the exported model is the adapter alone" in out
    code, out, err = run_cli(monkeypatch, capsys, "export", str(run), "--gguf", str(tmp_path / "x.gguf"))
    assert code == 2 and "exists" in err and "--force" in err and "Traceback" not in err
    code, out, err = run_cli(monkeypatch, capsys, "export", str(run), "--gguf", str(tmp_path / "y.gguf"), "--quant", "q4_k")
    assert code == 2 and "unknown GGUF quantization 'q4_k'" in err
    code, out, err = run_cli(monkeypatch, capsys, "export", str(run))
    assert code == 2 and "nothing to export" in err
    # --card beside a refused --quant wrote the card and exited 0; --quant without --gguf was ignored
    card = run / "adapter" / "README.md"
    before = card.stat().st_ino if card.exists() else None
    code, out, err = run_cli(monkeypatch, capsys, "export", str(run), "--card", "--quant", "q4")
    assert code == 2 and "unknown GGUF quantization 'q4'" in err and "model card" not in out, out + err
    assert (card.stat().st_ino if card.exists() else None) == before
    code, out, err = run_cli(monkeypatch, capsys, "export", str(run), "--merged", str(tmp_path / "q"), "--quant", "q8_0")
    assert code == 2 and "--quant q8_0 sets the weight type of a GGUF, and no --gguf FILE was given" in err, err
    assert not (tmp_path / "q").exists()
    code, out, err = run_cli(monkeypatch, capsys, "export", str(tmp_path), "--merged", str(tmp_path / "m"))
    assert code == 2 and "neither an alignlab run nor a PEFT adapter" in err
    code, out, err = run_cli(monkeypatch, capsys, "export", str(run), "--merged", str(exported["merged"]))
    assert code == 2 and "not empty" in err


def test_bare_adapter_exports_without_its_run(exported, tmp_path):
    """An adapter directory copied elsewhere (no run.json) is exported from the base its config names."""
    from alignlab.export import export_run

    adapter = tmp_path / "shared-adapter"
    shutil.copytree(exported["run"] / "adapter", adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(exported["base"])  # a local base: the portable name is only its dir name
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    out = export_run(adapter, merged=tmp_path / "m2")
    assert out["base"] == str(exported["base"])
    a = (tmp_path / "m2" / "model.safetensors").read_bytes()
    assert a == (exported["merged"] / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_default_model_gguf_round_trip(tmp_path, default_model):
    """The real default model: an adapter over the Q4_1-dequantized base, exported to f16 GGUF with the
    tokenizer metadata copied from the packaged GGUF, answers greedily as the merged model does."""
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignlab.export import export_run
    from alignlab.models.registry import gguf_source

    torch.manual_seed(0)  # the adapter's lora_A is drawn from the global generator: not from what ran before
    run = make_run(tmp_path, "smollm2-135m", lora_std=0.02)
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    g = tmp_path / "out" / "snarky.gguf"
    export_run(run, merged=tmp_path / "merged", gguf=g)
    src, out = GGUFReader(str(gguf_source("smollm2-135m"))), GGUFReader(str(g))
    for key in ("tokenizer.ggml.pre", "tokenizer.ggml.eos_token_id", "tokenizer.chat_template"):
        assert out.fields[key].contents() == src.fields[key].contents()
    assert out.fields["tokenizer.ggml.merges"].contents() == src.fields["tokenizer.ggml.merges"].contents()
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32).eval()
    mtok = AutoTokenizer.from_pretrained(str(tmp_path / "merged"))
    back = AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name, dtype=torch.float32).eval()
    gtok = AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name)
    for prompt in PROMPTS:
        assert greedy(back, gtok, prompt, n=16) == greedy(merged, mtok, prompt, n=16), prompt


@pytest.mark.slow
def test_hf_tokenizer_metadata_matches_the_packaged_gguf(tmp_path, default_model):
    """Built from SmolLM2's Hugging Face tokenizer, our tokenizer metadata equals what llama.cpp's converter
    wrote into the packaged GGUF (tokens, types, merges, special ids, pre-tokenizer, chat template)."""
    import gguf
    from gguf import GGUFReader

    from alignlab.export.gguf_file import _hf_tokenizer_fields
    from alignlab.models.registry import gguf_source

    writer = gguf.GGUFWriter(str(tmp_path / "unused.gguf"), "llama")
    assert _hf_tokenizer_fields(writer, Path(default_model), 49152) is None  # SmolLM2's own tokenizer files
    ours = {k: v.value for k, v in writer.kv_data[0].items()}
    src = GGUFReader(str(gguf_source("smollm2-135m"))).fields
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id",
                "tokenizer.chat_template"):
        theirs = src[key].contents()
        mine = ours[key]
        if isinstance(theirs, list):
            mine = [m.decode() if isinstance(m, bytes) else m for m in mine]
        same = mine == theirs  # a bool first: pytest's diff of two 49,152-item lists runs for many minutes
        assert same, (key, next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), None))
    assert [int(t) for t in ours["tokenizer.ggml.token_type"]] == src["tokenizer.ggml.token_type"].contents()


def test_an_architecture_gguf_cannot_lay_out_is_refused_before_merging(tmp_path):
    from alignlab.export import export_run

    base = make_small_vocab_model(tmp_path / "base", arch="qwen2")
    run = make_run(tmp_path, str(base))
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "model_type": "gpt_neox"}))
    with pytest.raises(AlignlabError, match="GGUF export supports llama, mistral, qwen2 models; this one is 'gpt_neox'"):
        export_run(run, merged=tmp_path / "merged", gguf=tmp_path / "model.gguf")
    assert not (tmp_path / "merged").exists() and not (tmp_path / "model.gguf").exists()
    (base / "config.json").write_text(json.dumps(config))
    tok = json.loads((base / "tokenizer.json").read_text())  # a SentencePiece-style tokenizer (Llama 2, Mistral)
    (base / "tokenizer.json").write_text(json.dumps({**tok, "pre_tokenizer": {"type": "Metaspace"}}))
    with pytest.raises(AlignlabError, match="only for byte-level BPE tokenizers"):
        export_run(run, merged=tmp_path / "merged", gguf=tmp_path / "model.gguf")
    assert not (tmp_path / "merged").exists() and not (tmp_path / "model.gguf").exists()


def test_export_paths_of_the_wrong_kind_are_refused_before_merging(exported, tmp_path):
    from alignlab.export import export_run

    (tmp_path / "afile").write_text("x")
    with pytest.raises(AlignlabError, match="is a file, not a directory"):
        export_run(exported["run"], merged=tmp_path / "afile")
    (tmp_path / "x.gguf").mkdir()
    with pytest.raises(AlignlabError, match="is a directory"):
        export_run(exported["run"], gguf=tmp_path / "x.gguf", force=True)
    (tmp_path / "Modelfile").write_text("# mine\n")
    with pytest.raises(AlignlabError, match="Modelfile exists"):
        export_run(exported["run"], gguf=tmp_path / "other.gguf")
    assert (tmp_path / "Modelfile").read_text() == "# mine\n" and not (tmp_path / "other.gguf").exists()


QWEN25_TEMPLATE = (  # Qwen2.5's own template, abridged: the newline inside the string literals is an escape
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- for message in messages %}{%- if message.role != 'system' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def test_the_modelfile_carries_the_system_prompt_the_template_adds():
    """The Modelfile's SYSTEM is what the chat template inserts when a conversation has none (training and eval
    saw it): Qwen2.5's, written with escaped newlines, was missed; a ChatML template with no default has none (a
    Jinja fragment was taken for one)."""
    from alignlab.export.modelfile import default_system

    assert default_system(QWEN25_TEMPLATE) == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    no_default = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    assert default_system(no_default) is None
    assert default_system("{{ raise_exception('no') }}") is None and default_system("") is None


def test_llama_attention_biases_go_out_in_llama_cpps_rope_order(tmp_path):
    """llama.cpp adds q/k biases before its rope, so its converter permutes them as it permutes the weights: written in
    Hugging Face's order they gave a Llama with attention_bias the wrong attention."""
    import numpy as np
    import torch
    from gguf import GGUFReader
    from safetensors.torch import load_file, save_file

    from alignlab.export.gguf_file import _permute, write_gguf

    base = make_small_vocab_model(tmp_path / "base")
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "attention_bias": True}))
    weights = load_file(str(base / "model.safetensors"))
    torch.manual_seed(0)
    for i in range(config["num_hidden_layers"]):
        for proj, rows in (("q", config["hidden_size"]), ("k", config["hidden_size"] // config["num_attention_heads"]
                                                         * config.get("num_key_value_heads", config["num_attention_heads"])),
                           ("v", config["hidden_size"] // config["num_attention_heads"]
                            * config.get("num_key_value_heads", config["num_attention_heads"])), ("o", config["hidden_size"])):
            weights[f"model.layers.{i}.self_attn.{proj}_proj.bias"] = torch.randn(rows)
    save_file(weights, str(base / "model.safetensors"), metadata={"format": "pt"})
    write_gguf(base, tmp_path / "m.gguf", quant="f16")
    tensors = {t.name: t for t in GGUFReader(str(tmp_path / "m.gguf")).tensors}
    heads, kv = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    q = weights["model.layers.0.self_attn.q_proj.bias"].numpy()
    k = weights["model.layers.0.self_attn.k_proj.bias"].numpy()
    def interleaved(v, n):
        """llama.cpp's rotary order written out: within each head, the first half's i-th value, then the second's."""
        d = len(v) // n
        return np.array([v[h * d + (j // 2) + (d // 2) * (j % 2)] for h in range(n) for j in range(d)], dtype=v.dtype)

    assert interleaved(np.arange(8), 2).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    assert (tensors["blk.0.attn_q.bias"].data.astype("float32") == interleaved(q, heads)).all()
    assert (tensors["blk.0.attn_k.bias"].data.astype("float32") == interleaved(k, kv)).all()
    assert not (interleaved(q, heads) == q).all()  # the permutation moves them
    assert (_permute(q, heads, heads) == interleaved(q, heads)).all()


def _logits(model_dir: Path, ids, adapter: Path | None = None):
    """Logits of a saved model, or of PEFT's base + ``adapter`` over it (the reference a merge must equal)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        return model.eval()(ids).logits


def test_the_merged_model_carries_the_keys_transformers_4_reads(tmp_path):
    """transformers 5 writes rope settings only as rope_parameters and names its tokenizer class TokenizersBackend:
    transformers 4.x (vLLM pins it) then ran rope_theta 10000 and could not load the tokenizer. The merged config has
    4.x's rope_theta and rope_scaling beside 5's, the tokenizer a class 4.x knows, and 5 still loads it as base + adapter."""
    from transformers import AutoConfig

    from alignlab.export import export_run

    base = make_small_vocab_model(tmp_path / "base", arch="llama3")
    config = json.loads((base / "config.json").read_text())
    config["rope_parameters"]["rope_theta"] = 500000.0  # not 4.x's default, so a lost theta would matter
    (base / "config.json").write_text(json.dumps(config))
    run = make_run(tmp_path, str(base))
    export_run(run, merged=tmp_path / "merged")
    written = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert written["rope_theta"] == 500000.0
    assert written["rope_scaling"] == {k: v for k, v in config["rope_parameters"].items() if k != "rope_theta"}
    assert written["rope_scaling"]["rope_type"] == "llama3"
    tok = json.loads((tmp_path / "merged" / "tokenizer_config.json").read_text())
    assert tok["tokenizer_class"] == "PreTrainedTokenizerFast" and tok["chat_template"] == CHATML
    assert AutoConfig.from_pretrained(str(tmp_path / "merged")).rope_parameters == config["rope_parameters"]
    ids = torch.tensor([[1, 20, 40, 60, 80, 100, 120, 2] * 12])  # past original_max_position_embeddings (64)
    a, b = _logits(tmp_path / "merged", ids), _logits(base, ids, run / "adapter")
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_legacy_rope_keys_of_gemma3s_two_kinds_of_layers():
    from alignlab.export.merge import legacy_rope_keys

    params = {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
              "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}
    assert legacy_rope_keys({"rope_parameters": params}) == {
        "rope_theta": 1e6, "rope_local_base_freq": 1e4, "rope_scaling": {"rope_type": "linear", "factor": 8.0}}
    assert legacy_rope_keys({"rope_parameters": {"rope_theta": 1e5, "rope_type": "default"}, "rope_theta": 1e5}) == {}
    assert legacy_rope_keys({"rope_parameters": {"chunked": {"rope_theta": 1.0}}}) == {}  # a layout it does not know


def _bare_adapter(base: Path, out: Path, **lora) -> Path:
    """A PEFT adapter saved by PEFT alone (no alignlab run), random non-zero weights everywhere it trains."""
    import warnings

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(2)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft = get_peft_model(model, LoraConfig(r=4, init_lora_weights=False, **lora))
        for name, p in peft.named_parameters():
            if "modules_to_save" in name:
                p.data.normal_(0, 0.5)
        peft.save_pretrained(str(out))
    return out


@pytest.mark.parametrize("lora", [{"target_modules": ["q_proj", "embed_tokens"]}, {"target_modules": ["q_proj", "lm_head"]},
                                  {"target_modules": ["q_proj"], "modules_to_save": ["embed_tokens"]}],
                         ids=["lora-embed_tokens", "lora-lm_head", "modules_to_save"])
def test_lora_on_a_tied_embedding_merges_as_peft_applies_it(exported, tmp_path, lora):
    """Over a base whose lm_head shares the embedding matrix, LoRA on embed_tokens (or lm_head) changes only that
    layer in PEFT; folded into the shared matrix it changed both (logits off by hundreds). The merge unties them."""
    from gguf import GGUFReader
    from safetensors import safe_open

    from alignlab.export import export_run

    adapter = _bare_adapter(exported["base"], tmp_path / "adapter", **lora)
    export_run(adapter, merged=tmp_path / "merged", gguf=tmp_path / "g" / "m.gguf")
    ids = torch.tensor([[1, 20, 40, 60, 80, 100, 120, 2]])
    a, b = _logits(tmp_path / "merged", ids), _logits(exported["base"], ids, adapter)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-5), (a - b).abs().max()
    assert not torch.allclose(b, _logits(exported["base"], ids), atol=1e-2)  # the adapter changes the answer
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["tie_word_embeddings"] is False
    with safe_open(str(tmp_path / "merged" / "model.safetensors"), framework="pt") as st:
        assert "lm_head.weight" in st.keys()
    assert "output.weight" in {t.name for t in GGUFReader(str(tmp_path / "g" / "m.gguf")).tensors}


def test_lora_tied_by_peft_on_both_embeddings_is_refused_before_writing(exported, tmp_path):
    """PEFT's ensure_weight_tying adapts embed_tokens and lm_head as one; merge_and_unload folds it in twice."""
    from alignlab.export import export_run

    adapter = _bare_adapter(exported["base"], tmp_path / "adapter", target_modules=["q_proj", "embed_tokens"],
                            ensure_weight_tying=True)
    with pytest.raises(AlignlabError, match="LoRA on the tied embeddings .* cannot be merged") as err:
        export_run(adapter, merged=tmp_path / "merged")
    assert "\n" not in str(err.value) and "adapter_config.json" in str(err.value)
    assert not (tmp_path / "merged").exists()


def test_a_base_not_on_this_machine_is_named_before_the_hub_is_asked(exported, tmp_path):
    """A bare adapter naming a hub id this machine lacks: one line that names the base and the file, --model as the way
    out; online, no request reaches the hub (the process is pointed at a local server that records any)."""
    import http.server
    import os
    import subprocess
    import threading

    adapter = tmp_path / "shared"
    shutil.copytree(exported["run"] / "adapter", adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "someorg/not-here-135M"}))
    from alignlab.export import export_run

    for out in ({"merged": tmp_path / "m"}, {"gguf": tmp_path / "m.gguf"}):
        with pytest.raises(AlignlabError, match="base model 'someorg/not-here-135M' named by adapter_config.json is not "
                                                "on this machine") as err:
            export_run(adapter, **out)
        assert "--model" in str(err.value) and str(adapter / "adapter_config.json") in str(err.value)

    hits = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_error(404)

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}", HF_HOME=str(tmp_path / "hf"))
    try:
        for flag in ("--gguf", "--merged"):
            r = subprocess.run([sys.executable, "-c", "from alignlab.cli import main; main()", "export", str(adapter), flag,
                                str(tmp_path / ("o.gguf" if flag == "--gguf" else "o"))],
                               capture_output=True, text=True, timeout=300, env=env)
            assert r.returncode == 2, r.stderr
            assert r.stderr.strip().count("\n") == 0 and "is not on this machine" in r.stderr, r.stderr
            assert "--model someorg/not-here-135M to download it" in r.stderr
    finally:
        server.shutdown()
    assert hits == []


def test_another_base_is_named_by_the_adapter_and_model_picks_the_right_one(exported, tmp_path):
    """A base of another size: one line naming the adapter's base and the first shape that differs, not PEFT's
    multi-line state-dict error; --model merges it into the right base without editing adapter_config.json."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from alignlab.export import export_run

    wide = tmp_path / "wide"
    config = AutoConfig.from_pretrained(str(exported["base"]))
    config.hidden_size, config.intermediate_size = 128, 256
    AutoModelForCausalLM.from_config(config).save_pretrained(str(wide))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(exported["base"] / name, wide / name)
    adapter = tmp_path / "shared"
    shutil.copytree(exported["run"] / "adapter", adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": str(wide)}))
    with pytest.raises(AlignlabError, match=r"does not fit base '.*wide'") as err:
        export_run(adapter, merged=tmp_path / "m")
    text = str(err.value)
    assert "\n" not in text and "adapter_config.json" in text and "in the adapter but" in text, text
    assert "[4, 64] in the adapter but [4, 128] in the base" in text, text
    assert not (tmp_path / "m").exists()
    export_run(adapter, merged=tmp_path / "m", model=str(exported["base"]))
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == (exported["merged"] / "model.safetensors").read_bytes()


def test_a_triple_quote_in_the_runs_system_prompt_is_refused_before_anything_is_written(exported, tmp_path):
    """The Modelfile's SYSTEM block cannot hold \"\"\": refused before the merge and the GGUF (a GGUF left behind
    blocked the rerun), naming the file export reads, the run's own config.yaml, and its line."""
    from alignlab.config import ProjectConfig, dump_config
    from alignlab.export import export_run

    run = tmp_path / "run"
    shutil.copytree(exported["run"], run)
    (run / "config.yaml").write_text(dump_config(ProjectConfig(model=str(exported["base"]), system_prompt='Say """hi"""')))
    line = next(i for i, t in enumerate((run / "config.yaml").read_text().splitlines(), 1) if t.startswith("system_prompt:"))
    g = tmp_path / "out" / "m.gguf"
    with pytest.raises(AlignlabError, match='holds """') as err:
        export_run(run, merged=tmp_path / "merged", gguf=g)
    assert f"{run / 'config.yaml'}:{line}" in str(err.value) and "alignlab.yaml" not in str(err.value)
    assert not g.exists() and not (tmp_path / "merged").exists()
    (run / "config.yaml").write_text(dump_config(ProjectConfig(model=str(exported["base"]), system_prompt="Say hi")))
    export_run(run, gguf=g)  # the rerun needs no --force
    assert 'SYSTEM """Say hi"""' in (g.parent / "Modelfile").read_text()


def test_a_full_fine_tune_export_says_it_decodes_alone(exported, tmp_path, monkeypatch, capsys):
    run = tmp_path / "runs" / "full"
    shutil.copytree(exported["base"], run / "adapter")
    (run / "run.json").write_text(json.dumps({"method": "sft", "model": str(exported["base"]), "status": "done",
                                              "lora": False}))
    code, out, err = run_cli(monkeypatch, capsys, "export", str(run), "--merged", str(tmp_path / "merged"))
    assert code == 0, err
    assert "full fine-tune" in out and "decodes alone" in out
    assert "adapter alone" not in out and "base_opening" not in out


def test_the_gguf_merge_scratch_goes_beside_a_new_gguf_folder(exported, tmp_path, monkeypatch):
    """The fp32 merge of a --gguf-only export lands beside the GGUF, even in a folder that does not exist yet: not in
    the system temp dir (often in memory, never swept). A temp dir that does not exist makes any use of it fail."""
    import tempfile

    from alignlab.export import export_run

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-system-tmp"))
    g = tmp_path / "new" / "deeper" / "m.gguf"
    export_run(exported["run"], gguf=g)
    assert g.is_file() and not any(p.name.startswith(".alignlab-merge-") for p in g.parent.iterdir())


def test_a_damaged_run_config_is_one_line_naming_its_line(exported, tmp_path, monkeypatch, capsys):
    """Export and serve read the run's config.yaml for its system prompt; a damaged one (an unclosed quote) ended
    export in a YAML traceback, where serve quietly took the project's prompt instead."""
    run = tmp_path / "run"
    shutil.copytree(exported["run"], run)
    (run / "config.yaml").write_text('model: x\nsystem_prompt: "Be snarky.\nold: [\n')
    code, out, err = run_cli(monkeypatch, capsys, "export", str(run), "--merged", str(tmp_path / "merged"))
    assert code != 0 and "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, err
    line = lines[0]
    assert f"{run / 'config.yaml'}:" in line and "cannot be read" in line, line
    assert not (tmp_path / "merged").exists()
