"""One plan across devices: the chosen device in detail, every listed GPU in a table, the cheapest, a verdict."""

from __future__ import annotations

from dataclasses import replace

from alignlab.plan.calibrate import calibrated_sizes, load_factors
from alignlab.plan.devices import all_gpus, cpu_device, gpu, price_table
from alignlab.plan.estimate import GIB, ONLINE, PREFERENCE, Device, Estimate, Workload, estimate
from alignlab.plan.shapes import ModelShape

EXTRAPOLATION = 10  # a plan for a model this many times the calibration runs' largest says its factors are a stretch


def shares_prompt(w: Workload, dev: Device, setting: str = "auto") -> bool:
    """Whether the run shares each prompt's forward between its answers, as training decides it
    (record._shares_prompt): never under gradient checkpointing; online methods on a CPU only; the DPO family by
    ``train.shared_prompt`` (auto: off CUDA)."""
    if w.grad_ckpt:
        return False
    if w.method in ONLINE:
        return dev.kind == "cpu"
    if w.method in PREFERENCE:
        return setting == "on" or (setting == "auto" and dev.kind != "cuda")
    return True


def _for(shape: ModelShape, w: Workload, dev: Device, shared: str = "auto") -> Estimate | None:
    if w.mode == "qlora" and dev.kind != "cuda":
        return None
    return estimate(shape, replace(w, shared_prompt=shares_prompt(w, dev, shared)), dev, load_factors(dev.kind))


def money(usd: float) -> str:
    """"about $1.03"; a cost that rounds to nothing is "under $0.01", not "$0.00"."""
    return "under $0.01" if usd < 0.005 else f"about ${usd:.2f}"


def notes(shape: ModelShape, w: Workload, dev: Device | None) -> list[str]:
    """What the plan assumes that the user may not have meant: past the model's context, a rank wider than the
    model, factors calibrated on much smaller runs."""
    out = []
    longest = (w.peak_prompt_len or w.prompt_len) + (w.peak_completion_len or w.completion_len)
    if shape.max_position and longest > shape.max_position:
        out.append(f"{longest:.0f} tokens per sequence are more than {shape.name} was trained for "
                   f"({shape.max_position}, max_position_embeddings); its answers past that are not to be trusted")
    if w.mode != "full" and w.lora_r > shape.hidden:
        out.append(f"LoRA rank {w.lora_r} is wider than the model ({shape.hidden}): the adapter has more parameters "
                   "than a full update of the layers it adapts; ranks of 8-64 are usual")
    cal = calibrated_sizes(dev.kind) if dev is not None else None
    if cal and shape.total_params > EXTRAPOLATION * cal["params"][1]:
        out.append(f"the {dev.kind} factors were calibrated on runs of at most {cal['params'][1] / 1e6:,.0f}M "
                   f"parameters; this plan for {shape.total_params / 1e9:.3g}B extrapolates from them "
                   "(recalibrate with a run nearer this size)")
    return out


def hours_text(hours: float) -> str:
    if hours < 1 / 60:
        return f"{hours * 3600:.0f} s"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    return f"{hours:.1f} h"


def build(shape: ModelShape, w: Workload, device: str | None = None, cpu: bool = False, extra_notes=(),
          shared: str = "auto") -> dict:
    """The JSON object ``alignlab plan --json`` prints (see README for the contract); ``shared``:
    ``train.shared_prompt``; ``extra_notes``: lines about the flags, shown with the plan's own."""
    rows = []
    for dev in all_gpus():
        est = _for(shape, w, dev, shared)
        if est is not None:
            rows.append((dev, est))
    priced = [(d, e) for d, e in rows if e.fits and e.cost_usd is not None]
    cheapest = min(priced, key=lambda de: (de[1].cost_usd, de[1].total_hours)) if priced else None
    # the smallest CUDA card that fits (alignlab trains on CUDA or the CPU; a Mac's unified memory is no "card")
    fitting = sorted((d for d, e in rows if e.fits and d.kind == "cuda"), key=lambda d: (d.memory_bytes, d.usd_per_hour or 0))
    if cpu or device:  # a plan for a device it cannot run on (QLoRA off CUDA) has no estimate: refused, not empty
        chosen_dev = cpu_device() if cpu else gpu(device)
        chosen = _for(shape, w, chosen_dev, shared)
        if chosen is None:
            from alignlab.errors import AlignlabError

            raise AlignlabError(f"QLoRA needs a CUDA GPU; {chosen_dev.name} is not one", fix="use --lora")
    elif cheapest is not None:
        chosen_dev, chosen = cheapest
    else:
        chosen_dev, chosen = max(rows, key=lambda de: de[0].memory_bytes) if rows else (None, None)  # nearest to fitting
    out = dict(chosen.to_json()) if chosen else {}
    out.update(
        {
            "workload": dict(w.__dict__),
            "device_detail": _device_json(chosen_dev) if chosen_dev else None,
            "devices": [
                {
                    "key": d.key, "name": d.name, "memory_gib": round(d.memory_bytes / GIB, 1), "fits": e.fits,
                    "peak_memory_gib": round(e.peak_gib, 2), "step_seconds": round(e.step["total"], 3),
                    "total_hours": round(e.total_hours, 3), "usd_per_hour": d.usd_per_hour,
                    "cost_usd": None if e.cost_usd is None or not e.fits else round(e.cost_usd, 4),
                    "price_source": d.price_source,
                }
                for d, e in rows
            ],
            "cheapest": None if cheapest is None else {"key": cheapest[0].key, "name": cheapest[0].name,
                                                       "cost_usd": round(cheapest[1].cost_usd, 4),
                                                       "total_hours": round(cheapest[1].total_hours, 3),
                                                       "cards": w.processes},
            "smallest_fitting": None if not fitting else {"key": fitting[0].key, "name": fitting[0].name},
            "price_date": price_table()["date"],
            "notes": [*extra_notes, *notes(shape, w, chosen_dev)],
        }
    )
    out["verdict"] = verdict(shape, w, chosen, chosen_dev, cheapest, fitting)
    return out


def _device_json(d: Device) -> dict:
    return {"key": d.key, "name": d.name, "kind": d.kind, "memory_gib": round(d.memory_bytes / GIB, 2),
            "peak_tflops": round(d.peak_flops / 1e12, 4), "bandwidth_gbs": round(d.bandwidth / 1e9, 1),
            "usd_per_hour": d.usd_per_hour, "price_source": d.price_source, "measured": d.measured or None}


def verdict(shape, w, chosen, dev, cheapest, fitting) -> str:
    how = {"lora": "LoRA", "qlora": "QLoRA", "full": "full fine-tuning"}[w.mode]
    if not fitting and (chosen is None or not chosen.fits):
        peak = chosen.peak_gib if chosen else 0
        tip = "try --qlora, --gradient-checkpointing or a smaller batch" if w.mode != "qlora" else "try a smaller batch or sequence"
        return f"{w.method} with {how} needs about {peak:.0f} GiB and fits on none of the listed GPUs; {tip}"
    n = w.processes  # N processes: N cards, each holding the peak, the cost N cards' for the run's time
    parts = []
    if fitting:
        small = fitting[0]
        size = f"{small.label_gb or small.memory_bytes / GIB:.0f} GB"
        cards = f"{'an' if size.startswith(('8', '11', '18')) else 'a'} {size} card" if n == 1 else \
            f"{size} cards, one per process"
        parts.append(f"fits on {cards} ({small.name}) with {how}")
    if chosen is not None and dev is not None:
        where = "here" if dev.kind == "cpu" else (f"on {dev.name}" if n == 1 else f"on {n} x {dev.name}")
        state = "" if chosen.fits else " (does not fit)"
        parts.append(f"about {hours_text(chosen.total_hours)} {where}{state}")
    if cheapest is not None:
        rented = f"a rented {cheapest[0].name}" if n == 1 else f"{n} rented {cheapest[0].name}"
        parts.append(f"{money(cheapest[1].cost_usd)} on {rented} ({hours_text(cheapest[1].total_hours)})")
    return "; ".join(parts)


def render(plan: dict) -> list[str]:
    """Plain-text lines for the terminal."""
    g = lambda b: f"{b:.2f}"  # noqa: E731
    lines = [
        f"{plan['model']}: {plan['params'] / 1e9:.3g}B parameters, {plan['trainable_params'] / 1e6:.3g}M trained "
        f"({plan['mode']}); {plan['method']}, {plan['steps']} steps; device: {plan['device']}",
        "",
        "memory (GiB)",
    ]
    for k, v in plan["memory_gib"].items():
        if v:
            lines.append(f"  {k:<14}{g(v):>8}")
    lines.append(f"  {'peak':<14}{g(plan['peak_memory_gib']):>8}   (generation and backward do not overlap: the larger counts)")
    br = plan["step_breakdown_seconds"]
    t = f"train {br['train']:.3g} s" + (f" + generate {br['generate']:.3g} s" if br.get("generate") else "")
    once = plan.get("before_training_seconds") or 0
    first = f" + {once:.3g} s before the first step (reference log-probs, once)" if once else ""
    lines += ["", f"time: {plan['step_seconds']:.3g} s per step ({t}); {plan['steps']} steps{first} = "
                  f"{hours_text(plan['total_hours'])}"]
    f = plan["factors"]
    cap = f", at most {f['train_fp32']:.3g} of the fp32 peak on CPUs" if f.get("train_fp32") else ""
    lines.append(f"  utilization factors: train {f['train']:.3g}{cap}, "
                 f"{f.get('pass_layer_overhead_s', 0) * 1e3:.3g} ms per layer per training pass, decode bandwidth "
                 f"{f['decode_bw']:.3g}, {f['layer_overhead_s'] * 1e3:.3g} ms per layer per decoding step")
    lines += ["", f"GPUs (prices as of {plan['price_date']}; check before renting)",
              f"  {'gpu':<20}{'fits':>5}{'peak GiB':>10}{'s/step':>9}{'hours':>8}{'$/h':>7}{'cost $':>9}"]
    for d in sorted(plan["devices"], key=lambda d: (not d["fits"], d["cost_usd"] if d["cost_usd"] is not None else 1e9)):
        cost = "-" if d["cost_usd"] is None else ("<0.01" if d["cost_usd"] < 0.005 else f"{d['cost_usd']:.2f}")
        price = "-" if d["usd_per_hour"] is None else f"{d['usd_per_hour']:.2f}"
        lines.append(f"  {d['name']:<20}{'yes' if d['fits'] else 'no':>5}{d['peak_memory_gib']:>10.1f}"
                     f"{d['step_seconds']:>9.3g}{d['total_hours']:>8.2f}{price:>7}{cost:>9}")
    if plan["cheapest"]:
        c = plan["cheapest"]
        src = next(d["price_source"] for d in plan["devices"] if d["key"] == c["key"])
        cards = f" x {c['cards']} (one per process)" if c.get("cards", 1) > 1 else ""
        lines.append(f"cheapest: {c['name']}{cards}, {money(c['cost_usd'])} ({src})")
    lines += [""] + [f"note: {n}" for n in plan.get("notes", [])] + [f"verdict: {plan['verdict']}"]
    return lines
