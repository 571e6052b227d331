"""The embedding task: HuggingFace transformers (``--model hf:<path-or-id>``) -> spiking transformer.

Text models are evaluated on the built-in sentence set (:mod:`snnconv.data.sentences`; thresholds
from its disjoint calibration sentences): the metric is the cosine similarity between the ANN and
SNN sentence embeddings (mean pooling of ``last_hidden_state`` over the attention mask,
L2-normalised) at every T. Vision models use the dataset's test images (their size must match
the model's ``image_size``) and the mean token output. The report states per node whether it is
a spiking neuron or an operator node (:func:`snnconv.passes.spiking_transformer.spiking_census`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from snnconv.errors import SnnconvError
from snnconv.tasks import Job, Task, energy_fields, register_task


def pooled(h: torch.Tensor, x: torch.Tensor, text: bool) -> torch.Tensor:
    """L2-normalised mean over tokens (over the attention mask ``x[:, 1]`` for text) of ``h [..., S, D]``."""
    if text:
        m = x[:, 1].unsqueeze(-1)
        e = (h * m).sum(-2) / m.sum(-2).clamp_min(1e-9)
    else:
        e = h.mean(-2)
    return F.normalize(e, dim=-1)


def _pool_steps(out: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
    """Text pooling of every step's readout ``[T, B, S, D]`` -> ``[T, B, D]``."""
    m = xb[:, 1].unsqueeze(0).unsqueeze(-1)
    return F.normalize((out * m).sum(-2) / m.sum(-2).clamp_min(1e-9), dim=-1)


@register_task
class EmbeddingTask(Task):
    name = "embedding"
    exportable = False
    metric = "mean cosine(ANN, SNN) of mean-pooled, L2-normalised last_hidden_state"

    def handles(self, cfg) -> bool:
        return cfg.model.startswith("hf:")

    def recipe(self, cfg) -> str:
        return "spiking_transformer"

    def prepare(self, cfg, log_fn) -> Job:
        from snnconv.frontends.hf import encode_texts, from_hf, load_hf

        if cfg.encoding != "direct":
            raise SnnconvError("hf: models take direct input coding only (token ids cannot be rate coded)")
        path = cfg.model[3:]
        model, tok = load_hf(path)
        text = getattr(model, "main_input_name", "input_ids") == "input_ids"
        if text:
            from snnconv.data.sentences import calibration_sentences, test_sentences

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
            from snnconv.data.datasets import load_dataset, load_part

            size = model.config.image_size
            test = load_dataset(cfg.dataset, cfg.data_dir, train=False).subset(cfg.eval_samples or 256, cfg.seed)
            calib = load_part(cfg.dataset, cfg.data_dir, "train").subset(cfg.calib_samples, cfg.seed + 1)
            x = torch.cat([b for b, _ in test.batches(256)])
            xc = torch.cat([b for b, _ in calib.batches(256)])
            if tuple(x.shape[1:]) != (model.config.num_channels, size, size):
                raise SnnconvError(f"hf:{path} takes {model.config.num_channels}x{size}x{size} images, "
                                   f"{cfg.dataset} samples are {'x'.join(map(str, x.shape[1:]))}")
            seq_len, dataset = None, cfg.dataset
        log_fn(f"converting hf:{path} on {dataset} ({len(x)} samples, T = {','.join(map(str, cfg.timesteps))})")
        graph, coverage = from_hf(model, seq_len=seq_len or 0, tokenizer=tok, example=x[:2] if len(x) >= 2 else None)
        graph.meta["hf"]["source"] = path
        bs = cfg.batch_size
        return Job(graph=graph, coverage=coverage, calibration=[xc[i:i + bs] for i in range(0, len(xc), bs)],
                   dataset=dataset, samples=len(x), data={"x": x, "text": text, "seq_len": seq_len})

    def score(self, job: Job, snn, cfg, log_fn) -> dict:
        from snnconv.runtime.interpreter import run_ann
        from snnconv.runtime.simulator import Simulator

        from snnconv.runtime.device import resolve_device

        x, text, bs = job.data["x"], job.data["text"], cfg.batch_size
        T = max(cfg.timesteps)
        dev = resolve_device(cfg.device)
        sim = Simulator(snn, T, chunk=cfg.chunk, device=dev)
        ann = job.graph.to(dev)
        cos = torch.zeros(T)
        for i in range(0, len(x), bs):
            xb = x[i:i + bs]
            ref = pooled(run_ann(ann, xb.to(dev)).cpu(), xb, text)
            out = sim.run(xb)  # [T, B, S, D] running means of the readout
            emb = _pool_steps(out, xb) if text else F.normalize(out.mean(-2), dim=-1)
            cos += (emb * ref.unsqueeze(0)).sum(-1).sum(-1)
        cos = (cos / len(x)).tolist()
        for t in cfg.timesteps:
            log_fn(f"T={t:>3}: cosine(ANN, SNN) {cos[t - 1]:.4f}")
        return {"metric": self.metric, "seq_len": job.data["seq_len"],
                "cosine": {str(t): cos[t - 1] for t in cfg.timesteps}, "cosine_all_t": cos,
                **energy_fields(sim.stats, cfg.timesteps)}


__all__ = ["EmbeddingTask", "pooled"]
