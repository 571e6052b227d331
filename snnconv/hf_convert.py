"""The `snnconv convert --model hf:<path-or-id>` job: HF transformer -> spiking transformer, report.

Text models are evaluated on the built-in sentence set (:mod:`snnconv.data.sentences`; thresholds
from its disjoint calibration sentences): the metric is the cosine similarity between the ANN and
SNN sentence embeddings (mean pooling of ``last_hidden_state`` over the attention mask,
L2-normalised) at every T. Vision models use the dataset's test images (their size must match
the model's ``image_size``) and the mean token output. The report states per node whether it is
a spiking neuron or an operator node (:func:`snnconv.passes.spiking_transformer.spiking_census`).
"""
from __future__ import annotations

import json
import time

import torch
import torch.nn.functional as F

from snnconv.errors import SnnconvError

DEFAULT_PIPELINE = ["remove_identity", "spiking_transformer"]


def pooled(h: torch.Tensor, x: torch.Tensor, text: bool) -> torch.Tensor:
    """L2-normalised mean over tokens (over the attention mask ``x[:, 1]`` for text) of ``h [..., S, D]``."""
    if text:
        m = x[:, 1].unsqueeze(-1)
        e = (h * m).sum(-2) / m.sum(-2).clamp_min(1e-9)
    else:
        e = h.mean(-2)
    return F.normalize(e, dim=-1)


def run_convert_hf(cfg, run_dir=None, log_fn=print, coverage_fn=print) -> dict:
    """The transformer job; ``run_dir`` is the (temporary) run folder to write into, or None."""
    from snnconv.data.sentences import calibration_sentences, test_sentences
    from snnconv.frontends.hf import encode_texts, from_hf, load_hf
    from snnconv.passes import PassContext, Pipeline
    from snnconv.report import environment
    from snnconv.passes.spiking_transformer import census_counts, census_markdown, spiking_census
    from snnconv.runtime.interpreter import run_ann
    from snnconv.runtime.simulator import Simulator

    t_start = time.time()
    torch.manual_seed(cfg.seed)
    specs = list(cfg.passes) if cfg.passes else list(DEFAULT_PIPELINE)
    pipeline = Pipeline.from_config(specs)
    if cfg.encoding != "direct":
        raise SnnconvError("hf: models take direct input coding only (token ids cannot be rate coded)")
    path = cfg.model[3:]
    model, tok = load_hf(path)
    text = getattr(model, "main_input_name", "input_ids") == "input_ids"
    if text:
        if tok is None:
            raise SnnconvError(f"hf:{path} has no tokenizer files; text models need one to read the sentence set")
        if cfg.dataset != "sentences":
            log_fn(f"text model: evaluating on the built-in sentence set (dataset '{cfg.dataset}' does not apply)")
        sents, calib_s = test_sentences(), calibration_sentences()
        if cfg.eval_samples:
            sents = sents[:cfg.eval_samples]
        seq_len = max(len(tok(s)["input_ids"]) for s in sents + calib_s)
        x, xc = encode_texts(tok, sents, seq_len), encode_texts(tok, calib_s[:cfg.calib_samples], seq_len)
        dataset = "sentences"
    else:
        from snnconv.data.datasets import load_dataset

        size = model.config.image_size
        test = load_dataset(cfg.dataset, cfg.data_dir, train=False).subset(cfg.eval_samples or 256, cfg.seed)
        calib = load_dataset(cfg.dataset, cfg.data_dir, train=True).subset(cfg.calib_samples, cfg.seed + 1)
        x = torch.cat([b for b, _ in test.batches(256)])
        xc = torch.cat([b for b, _ in calib.batches(256)])
        if tuple(x.shape[1:]) != (model.config.num_channels, size, size):
            raise SnnconvError(f"hf:{path} takes {model.config.num_channels}x{size}x{size} images, "
                               f"{cfg.dataset} samples are {'x'.join(map(str, x.shape[1:]))}")
        seq_len, dataset = None, cfg.dataset
    log_fn(f"converting hf:{path} on {dataset} ({len(x)} samples, T = {','.join(map(str, cfg.timesteps))})")
    graph, coverage = from_hf(model, seq_len=seq_len or 0, tokenizer=tok,
                              example=x[:2] if len(x) >= 2 else None)
    graph.meta["hf"]["source"] = path
    coverage_fn(coverage)
    bs = cfg.batch_size
    ctx = PassContext(calibration=[xc[i:i + bs] for i in range(0, len(xc), bs)])
    snn = pipeline.run(graph, ctx)
    census = spiking_census(snn)
    T = max(cfg.timesteps)
    sim = Simulator(snn, T, chunk=cfg.chunk)
    cos = torch.zeros(T)
    for i in range(0, len(x), bs):
        xb = x[i:i + bs]
        ref = pooled(run_ann(graph, xb), xb, text)
        out = sim.run(xb)  # [T, B, S, D] running means of the readout
        emb = _pool_steps(out, xb) if text else F.normalize(out.mean(-2), dim=-1)
        cos += (emb * ref.unsqueeze(0)).sum(-1).sum(-1)
    cos = (cos / len(x)).tolist()
    synops, macs = sim.stats.synops_per_sample(), sim.stats.macs_per_sample()
    report = {
        "model": cfg.model, "dataset": dataset, "samples": len(x), "calib_samples": len(xc), "seq_len": seq_len,
        "timesteps": cfg.timesteps, "max_T": T, "pipeline": specs,
        "metric": "mean cosine(ANN, SNN) of mean-pooled, L2-normalised last_hidden_state",
        "cosine": {str(t): cos[t - 1] for t in cfg.timesteps}, "cosine_all_t": cos,
        "ops": {str(t): {"synops": synops[t - 1], "macs": macs[t - 1]} for t in cfg.timesteps},
        "spiking_census": census, "census_counts": census_counts(census),
        "firing_rates": sim.stats.firing_rates(), "passes": ctx.records, "coverage": coverage,
        "config": cfg.to_dict(), "environment": environment(), "seconds": None,
    }
    for t in cfg.timesteps:
        log_fn(f"T={t:>3}: cosine(ANN, SNN) {cos[t - 1]:.4f}")
    report["seconds"] = round(time.time() - t_start, 2)
    if run_dir is not None:
        snn.save(run_dir / "snn.pt")
        graph.save(run_dir / "ann.pt")
        (run_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
        (run_dir / "report.md").write_text(markdown(report, census_markdown(census)))
    return report


def _pool_steps(out: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
    """Text pooling of every step's readout ``[T, B, S, D]`` -> ``[T, B, D]``."""
    m = xb[:, 1].unsqueeze(0).unsqueeze(-1)
    return F.normalize((out * m).sum(-2) / m.sum(-2).clamp_min(1e-9), dim=-1)


def markdown(r: dict, census_md: str) -> str:
    lines = [f"# snnconv report: {r['model']} on {r['dataset']}", "",
             f"- samples: {r['samples']}; calibration samples: {r['calib_samples']}"
             + (f"; padded length {r['seq_len']} tokens" if r.get("seq_len") else ""),
             f"- pipeline: `{json.dumps(r['pipeline'])}`", f"- metric: {r['metric']}", "",
             "| T | cosine(ANN, SNN) | SynOps/sample | MACs/sample |", "|---:|---:|---:|---:|"]
    for t, c in r["cosine"].items():
        lines.append(f"| {t} | {c:.4f} | {r['ops'][t]['synops']:.3g} | {r['ops'][t]['macs']:.3g} |")
    lines += ["", "## Spiking census", "",
              "Which nodes are spiking neurons and which are operator nodes (real-valued functions of "
              "accumulated inputs, accumulate-and-difference coding):", "", census_md, "",
              "## Passes", ""] + [f"- **{p['pass']}**: {p['message']}" for p in r["passes"]]
    lines += ["", "## Op coverage", "", r.get("coverage", ""), "", "## Environment", "", "```",
              json.dumps(r["environment"], indent=2), "```", ""]
    return "\n".join(lines)


__all__ = ["run_convert_hf", "pooled"]
