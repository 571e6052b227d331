#!/usr/bin/env python
"""Decoder LM benchmark: a small GPT-2 trained here on offline English text, converted to a spiking
transformer, scored against its ANN (next-token agreement, perplexity, greedy generation).

Corpus: the Python documentation topics that ship with the interpreter (``pydoc_data.topics``, about 465k
characters of English prose and code), character level. Split by position: 90% train, 5% validation,
5% test. The model (GPT-2: 2 layers, 4 heads, width 64, context 32) is trained with AdamW; the checkpoint
kept is the one with the lowest validation loss. It is ingested with ``snnconv.frontends.hf.from_hf``
(Conv1D as Linear, causal mask) and converted with the spiking-transformer pipeline (calibration: training
windows). The LM head (tied to the token embedding) reads the SNN's hidden states. Test windows are
scored once per T.

Generation: greedy, 64 characters after a 32-character test prompt, a sliding 32-character window. The
SNN re-simulates the window for every new character: the graph has absolute positions, so sliding the
window changes every position's input and the spiking state of the previous window cannot be reused.

    python scripts/bench_decoder_lm.py

writes docs/benchmarks/decoder_lm.{json,md}.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, environment_block, save  # noqa: E402


def corpus() -> tuple[str, list[str]]:
    import pydoc_data.topics as topics

    text = "".join(topics.topics[k] for k in sorted(topics.topics))
    return text, sorted(set(text))


def windows(ids: torch.Tensor, S: int, n: int | None = None, stride: int | None = None) -> torch.Tensor:
    """Windows of ``S + 1`` ids (inputs and next-token targets)."""
    stride = stride or S
    starts = torch.arange(0, len(ids) - S - 1, stride)
    if n is not None:
        starts = starts[:n]
    return torch.stack([ids[s:s + S + 1] for s in starts])


def lm_loss(model, w: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(input_ids=w[:, :-1]).logits
        return float(F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten()))


def op_counts(graph, head: torch.Tensor, S: int) -> dict:
    """MACs per sequence of the ANN: linear layers (per token), attention matmuls (``A [.., M, K] B [.., K, N]``:
    ``M K N`` each), the LM head; elementwise operator nodes (softmax, layer norm, GELU) counted as elements."""
    lin = sum(n.weight.numel() * S for n in graph.nodes.values() if n.kind == "linear")
    mm = 0
    elem = 0
    for name, n in graph.nodes.items():
        if n.kind == "matmul":
            a = graph.nodes[graph.edges[name][0]].shape
            mm += int(torch.Size(n.shape).numel()) * int(a[-1])
        elif getattr(n, "operator", False):
            elem += int(torch.Size(n.shape).numel())
    return {"linear_macs": lin, "operator_macs": mm, "operator_elements": elem, "head_macs": head.numel() * S}


def tokens(ids: torch.Tensor) -> torch.Tensor:
    from snnconv.frontends.hf import pack_tokens

    return pack_tokens(ids, torch.ones_like(ids))


def main() -> None:
    import transformers

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--context", type=int, default=32)
    ap.add_argument("--test-windows", type=int, default=200)
    ap.add_argument("--timesteps", default="1,2,4,8,16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "decoder_lm"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    S = args.context
    text, chars = corpus()
    ids = torch.tensor([chars.index(c) for c in text])
    n = len(ids)
    train, val, test = ids[:int(0.9 * n)], ids[int(0.9 * n):int(0.95 * n)], ids[int(0.95 * n):]
    cfg = transformers.GPT2Config(vocab_size=len(chars), n_positions=S, n_embd=64, n_layer=2, n_head=4, n_inner=256,
                                  use_cache=False, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.steps)
    val_w = windows(val, S, 400)
    best, best_state, history = float("inf"), None, []
    t0 = time.time()
    g = torch.Generator().manual_seed(args.seed)
    for step in range(1, args.steps + 1):
        model.train()
        starts = torch.randint(0, len(train) - S - 1, (args.batch,), generator=g)
        w = torch.stack([train[s:s + S + 1] for s in starts])
        loss = F.cross_entropy(model(input_ids=w[:, :-1]).logits.flatten(0, 1), w[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps:
            model.eval()
            vl = lm_loss(model, val_w)
            history.append({"step": step, "train_loss": float(loss), "val_loss": vl})
            log(f"step {step}: train {float(loss):.3f} val {vl:.3f} ({time.time() - t0:.0f} s)")
            if vl < best:  # the checkpoint is chosen on the validation split
                best, best_state = vl, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    train_s = time.time() - t0

    from snnconv.frontends.hf import from_hf
    from snnconv.passes import PassContext, Pipeline
    from snnconv.passes.spiking_transformer import census_counts, spiking_census
    from snnconv.runtime.interpreter import run_ann
    from snnconv.runtime.simulator import Simulator

    graph, _ = from_hf(model.transformer, seq_len=S)
    head = model.lm_head.weight.detach()  # tied to the token embedding
    calib = tokens(windows(train, S, 64, stride=997)[:, :-1])
    snn = Pipeline.from_config(["remove_identity", "spiking_transformer"]).run(graph, PassContext(calibration=[calib]))
    census = census_counts(spiking_census(snn))
    test_w = windows(test, S, args.test_windows)
    x, y = tokens(test_w[:, :-1]), test_w[:, 1:]
    with torch.no_grad():
        ann_logits = model(input_ids=test_w[:, :-1]).logits
    assert float((run_ann(graph, x) @ head.T - ann_logits).abs().max()) < 1e-3  # the graph is the model
    ann_pred = ann_logits.argmax(-1)
    ops = op_counts(snn, head, S)
    ann_ppl = math.exp(float(F.cross_entropy(ann_logits.flatten(0, 1), y.flatten())))
    ts = [int(t) for t in args.timesteps.split(",")]
    sim = Simulator(snn, max(ts))
    out = torch.cat([sim.run(x[i:i + 50]) for i in range(0, len(x), 50)], 1)  # [T, B, S, D]
    synops, macs = sim.stats.synops_per_sample(), sim.stats.macs_per_sample()
    per_t = {}
    for t in ts:
        logits = out[t - 1] @ head.T
        # energy per sequence: SynOps at 0.9 pJ, MACs of analog-fed layers at 4.6 pJ, and every operator node
        # (attention matmuls) recomputed on its accumulated inputs at every step: its MACs x t at 4.6 pJ; the
        # LM head (a dense readout of the final states) once, as in the ANN
        e_snn = (synops[t - 1] * 0.9 + (macs[t - 1] + t * ops["operator_macs"] + ops["head_macs"]) * 4.6) * 1e-6
        per_t[str(t)] = {"next_token_agreement": float((logits.argmax(-1) == ann_pred).float().mean() * 100),
                         "perplexity": math.exp(float(F.cross_entropy(logits.flatten(0, 1), y.flatten()))),
                         "top1_accuracy": float((logits.argmax(-1) == y).float().mean() * 100),
                         "synops": synops[t - 1], "analog_macs": macs[t - 1], "energy_uj": e_snn}
        log(f"T={t}: {per_t[str(t)]}")

    def generate(step_fn, prompt: torch.Tensor, n: int = 64) -> str:
        ctx = prompt.clone()
        outs = []
        for _ in range(n):
            nxt = int(step_fn(ctx[-S:]))
            outs.append(nxt)
            ctx = torch.cat([ctx, torch.tensor([nxt])])
        return "".join(chars[i] for i in outs)

    prompts = [test[i * 1000:i * 1000 + S] for i in range(3)]

    def ann_step(w):
        with torch.no_grad():
            return model(input_ids=w[None]).logits[0, -1].argmax()

    gen = {"ann": [generate(ann_step, p) for p in prompts], "snn": {}}
    for t in ts:
        sim = Simulator(snn, t, collect_stats=False)

        def snn_step(w, sim=sim, t=t):
            return (sim.run(tokens(w[None]))[t - 1][0, -1] @ head.T).argmax()

        gen["snn"][str(t)] = [generate(snn_step, p) for p in prompts]
        log(f"T={t}: generation identical {sum(a == b for a, b in zip(gen['ann'], gen['snn'][str(t)]))}/3")
    row = {"model": "gpt2 (2 layers, 4 heads, width 64, context 32, character level)", "vocab": len(chars),
           "params": sum(p.numel() for p in model.parameters()), "steps": args.steps, "train_seconds": round(train_s),
           "val_loss": best, "history": history, "test_windows": len(test_w), "ann_perplexity": ann_ppl,
           "ann_top1_accuracy": float((ann_pred == y).float().mean() * 100), "per_t": per_t, "census": census,
           "ann_ops": ops, "ann_energy_uj": (ops["linear_macs"] + ops["operator_macs"] + ops["head_macs"]) * 4.6e-6,
           "prompts": ["".join(chars[i] for i in p) for p in prompts], "generation": gen,
           "generation_identical": {t: sum(a == b for a, b in zip(gen["ann"], v)) for t, v in gen["snn"].items()}}
    save(args.out, [row], key=lambda r: r["model"], markdown=markdown, script="bench_decoder_lm.py", data_dir=None,
         corpus="Python documentation topics (pydoc_data.topics), 90/5/5 split by position, character level")


def _cheaper(r: dict) -> str:
    cheap = [t for t, p in r["per_t"].items() if p.get("energy_uj", float("inf")) < r["ann_energy_uj"]]
    if not cheap:
        return "The SNN costs more than the ANN at every T measured."
    agree = ", ".join("%.1f%%" % r["per_t"][t]["next_token_agreement"] for t in cheap)
    return f"The SNN costs less than the ANN at T = {', '.join(cheap)} (next-token agreement {agree}) and more at larger T."


def markdown(data: dict) -> str:
    r = data["rows"][-1]
    lines = ["# Decoder LM: a GPT-2 trained here, as a spiking transformer", "", f"Command: `{data['command']}`", "",
             __doc__.split("\n\n")[1].replace("\n", " "), "",
             f"Model: {r['model']}, {r['params']:,} parameters, {r['steps']} steps ({r['train_seconds']} s on this CPU); "
             f"validation loss {r['val_loss']:.3f} (checkpoint chosen on it). Test: {r['test_windows']} windows of 32 "
             f"characters. ANN perplexity {r['ann_perplexity']:.3f}, next-character top-1 {r['ann_top1_accuracy']:.2f}%.",
             "", "| T | next-token agreement with the ANN (%) | SNN perplexity | ANN perplexity | SNN top-1 (%) | "
             "greedy 64 chars identical (of 3) | SNN energy (uJ / sequence) |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for t, p in r["per_t"].items():
        lines.append(f"| {t} | {p['next_token_agreement']:.2f} | {p['perplexity']:.3f} | {r['ann_perplexity']:.3f} | "
                     f"{p['top1_accuracy']:.2f} | {r['generation_identical'][t]} | {p.get('energy_uj', float('nan')):.3g} |")
    if "ann_ops" in r:
        o = r["ann_ops"]
        lines += ["", f"Energy per 32-character sequence: ANN {r['ann_energy_uj']:.3g} uJ ({o['linear_macs']:,} linear "
                  f"MACs + {o['operator_macs']:,} attention-matmul MACs + {o['head_macs']:,} LM-head MACs at 4.6 pJ). "
                  "SNN: SynOps at 0.9 pJ, MACs of the layers fed by the analog embedding at 4.6 pJ, the attention "
                  "matmuls (operator nodes, recomputed on accumulated inputs every step) at 4.6 pJ per MAC per step, "
                  f"and the LM head once; the {o['operator_elements']:,} elementwise operator outputs (softmax, layer "
                  "norm, GELU) per step are not priced on either side. "
                  + _cheaper(r)]
    lines += ["", f"Spiking census (node roles): {r['census']}. The operator nodes (softmax, layer norm, attention "
              "matmuls, GELU) are real-valued functions of accumulated inputs: their energy is not a spike count.",
              "", "Prompts and greedy continuations (ANN, then SNN at the largest T):", "",
              "Generation does not reuse SNN state across tokens: the context is a sliding 32-character window, so every new character shifts all positions and changes every position embedding, and the converted network codes each forward pass over its own T steps (membranes start at rest); each generated character therefore simulates its window for T steps, as the ANN recomputes it without a key/value cache here. Reusing state would need a spiking key/value cache (accumulated K and V per position, kept across passes) and a growing context instead of a sliding one; not built.", ""]
    big = max(r["generation"]["snn"], key=int)
    for p, a, s in zip(r["prompts"], r["generation"]["ann"], r["generation"]["snn"][big]):
        lines += [f"- prompt `{p!r}`", f"  - ANN: `{a!r}`", f"  - SNN T={big}: `{s!r}`"]
    return "\n".join(lines + environment_block(data["environment"]))


if __name__ == "__main__":
    main()
