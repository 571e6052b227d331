"""HuggingFace frontend: ``hf:<path-or-id>`` -> IR, through ``transformers`` and ``torch.export``.

The model is loaded with ``AutoModel.from_pretrained(..., attn_implementation="eager")`` (local
folders work offline), so attention is explicit matmul + softmax, wrapped so it has one tensor
input and one output, captured with ``torch.export`` and mapped by the ATen rules of
:mod:`snnconv.frontends.torch`:

* text models (``main_input_name == "input_ids"``, e.g. BERT / all-MiniLM-L6-v2): the input is one
  float tensor ``tokens`` ``[B, 2, S]`` holding the token ids (row 0) and the attention mask
  (row 1) for a fixed padded length ``S``. The wrapper turns the mask into the additive mask
  ``(1 - m) * -1e4`` that eager attention adds to the scores (``exp(-1e4)`` is 0 in float32, so
  the output equals the model's own masking). Embedding lookups, position embeddings and the mask
  only depend on the input: with direct coding the simulator computes them once per sample.
* vision models (``pixel_values``, e.g. ViT): the input is the image ``[B, C, H, W]``.

The output is ``last_hidden_state`` ``[B, S, D]``. Ops the output does not depend on (a pooler)
are skipped. The ingest is checked against the wrapped model (relative error 1e-4).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from snnconv.frontends import Frontend, register_frontend
from snnconv.errors import SnnconvError
from snnconv.ir import Graph

MASK_VALUE = -1e4
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


#: decoder (causal) language models: a token attends to itself and the tokens before it
CAUSAL_TYPES = {"gpt2", "gpt_neo", "gptj", "gpt_neox", "opt", "bloom", "llama", "mistral", "qwen2", "phi", "phi3",
                "gemma", "falcon", "codegen"}


def is_causal(model: nn.Module) -> bool:
    cfg = getattr(model, "config", None)
    return bool(getattr(cfg, "is_decoder", False)) or getattr(cfg, "model_type", None) in CAUSAL_TYPES


class TextEncoder(nn.Module):
    """``tokens [B, 2, S]`` (ids, attention mask) -> ``last_hidden_state [B, S, D]``.

    The model gets a 4-D additive mask (HF uses a 4-D mask as given): padding for encoders, padding plus
    the causal triangle for decoder LMs (:func:`is_causal`), so the traced graph holds the mask as data
    instead of HF's mask-building code."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.causal = is_causal(model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        ids = tokens[:, 0].long()
        mask = (1.0 - tokens[:, 1]).unsqueeze(1).unsqueeze(1) * MASK_VALUE  # [B, 1, 1, S], added to the scores
        if self.causal:
            s = ids.shape[1]
            future = torch.triu(torch.ones(s, s, dtype=mask.dtype), diagonal=1) * MASK_VALUE  # [S, S] constant
            mask = mask + future  # [B, 1, S, S]
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state


class VisionEncoder(nn.Module):
    """``pixel_values [B, C, H, W]`` -> ``last_hidden_state``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).last_hidden_state


def _transformers():
    try:
        import transformers
    except ImportError:
        raise SnnconvError("hf: models need the `transformers` package (pip install -e '.[hf]')") from None
    transformers.logging.set_verbosity_error()
    return transformers


def load_hf(path_or_id: str, tokenizer: bool = True):
    """``(model, tokenizer or None)`` from a local folder or a hub id (eager attention, eval mode)."""
    tf = _transformers()
    p = Path(path_or_id).expanduser()
    if p.exists():
        if not p.is_dir():
            raise SnnconvError(f"hf:{path_or_id} is not a folder")
        if not (p / "config.json").is_file():
            raise SnnconvError(f"hf:{path_or_id} has no config.json (not a HuggingFace model folder)")
        if not any((p / f).is_file() for f in WEIGHT_FILES):
            raise SnnconvError(f"hf:{path_or_id} has no weights (expected one of {', '.join(WEIGHT_FILES[:2])})")
        path_or_id = str(p)
    try:
        model = tf.AutoModel.from_pretrained(path_or_id, attn_implementation="eager").eval()
    except Exception as e:  # noqa: BLE001 - transformers raises OSError/ValueError/... for bad folders and ids
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SnnconvError(f"cannot load HuggingFace model '{path_or_id}': {msg[:300]}") from None
    tok = None
    if tokenizer and getattr(model, "main_input_name", "input_ids") == "input_ids":
        try:
            tok = tf.AutoTokenizer.from_pretrained(path_or_id)
        except Exception:  # noqa: BLE001 - a model saved without its tokenizer: token ids must be given
            tok = None
    return model, tok


def encode_texts(tokenizer, texts: list[str], seq_len: int) -> torch.Tensor:
    """Tokenise ``texts`` to the frontend's input ``[N, 2, seq_len]`` (ids, attention mask)."""
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    return pack_tokens(enc["input_ids"], enc["attention_mask"])


def pack_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return torch.stack([input_ids.float(), attention_mask.float()], dim=1)


def example_input(model: nn.Module, tokenizer, seq_len: int, image_size: int | None = None) -> torch.Tensor:
    """A fixed capture/check input: two sentences (the second padded) or two random images."""
    cfg = model.config
    if getattr(model, "main_input_name", "input_ids") == "pixel_values":
        size = image_size or cfg.image_size
        return torch.randn(2, cfg.num_channels, size, size, generator=torch.Generator().manual_seed(0))
    if tokenizer is not None:
        return encode_texts(tokenizer, ["a spiking network reads this sentence.", "short one"], seq_len)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, cfg.vocab_size, (2, seq_len), generator=g)
    mask = torch.ones(2, seq_len, dtype=torch.long)
    mask[1, seq_len // 2:] = 0
    return pack_tokens(ids, mask)


def hf_input_shape(model: nn.Module, seq_len: int = 128) -> tuple[int, ...]:
    """Per-sample input shape of the wrapped model: ``(2, seq_len)`` for text, ``(C, H, W)`` for vision."""
    cfg = model.config
    if getattr(model, "main_input_name", "input_ids") == "pixel_values":
        return (cfg.num_channels, cfg.image_size, cfg.image_size)
    return (2, seq_len)


def normalize_modules(model: nn.Module) -> nn.Module:
    """Rewrite HF layer classes the exporter cannot trace into the IR as their exact torch equivalents, in
    place: GPT-2's ``Conv1D`` (``x @ W + b`` through a batch-folding view and ``addmm``) becomes ``nn.Linear``
    with ``W^T``; ``NewGELUActivation`` (the tanh approximation of GELU) becomes ``nn.GELU("tanh")``. The KV
    cache is switched off (``use_cache=False``): one forward pass over the whole sequence, no concatenation."""
    try:
        from transformers.activations import NewGELUActivation
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers without these classes: nothing to rewrite
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                lin = nn.Linear(child.weight.shape[0], child.weight.shape[1], bias=child.bias is not None)
                with torch.no_grad():
                    lin.weight.copy_(child.weight.T)
                    if child.bias is not None:
                        lin.bias.copy_(child.bias)
                setattr(parent, name, lin.eval())
            elif isinstance(child, NewGELUActivation):
                setattr(parent, name, nn.GELU(approximate="tanh"))
    if hasattr(getattr(model, "config", None), "use_cache"):
        model.config.use_cache = False
    return model


def wrap(model: nn.Module) -> nn.Module:
    kind = getattr(model, "main_input_name", "input_ids")
    if kind == "input_ids":
        return TextEncoder(model).eval()
    if kind == "pixel_values":
        return VisionEncoder(model).eval()
    raise SnnconvError(f"hf: models with input '{kind}' are not supported (text: input_ids, vision: pixel_values)")


def from_hf(path_or_id: str | nn.Module, seq_len: int = 128, check: bool = True,
            example: torch.Tensor | None = None, tokenizer=None) -> tuple[Graph, str]:
    """Ingest a HuggingFace model (folder, hub id or an already built ``PreTrainedModel``).

    Returns ``(graph, coverage_table)``; ``graph.meta['hf']`` records the source, the input kind
    and (text) the padded length ``seq_len``. Raises :class:`SnnconvError` (one line) for a folder
    without weights, an unloadable model or unsupported ops (named with their location).
    """
    from snnconv.frontends.torch import from_torch

    if isinstance(path_or_id, nn.Module):
        model, source = path_or_id.eval(), type(path_or_id).__name__
    else:
        model, tok = load_hf(path_or_id)
        tokenizer, source = tokenizer or tok, str(path_or_id)
        if hasattr(model.config, "_attn_implementation"):
            model.config._attn_implementation = "eager"
    wrapped = wrap(normalize_modules(model))
    x = example if example is not None else example_input(model, tokenizer, seq_len)
    graph, table = from_torch(wrapped, tuple(x.shape[1:]), check=check, example=x)
    kind = getattr(model, "main_input_name", "input_ids")
    graph.meta["hf"] = {"source": source, "input": kind, "model_type": getattr(model.config, "model_type", None),
                        **({"seq_len": int(x.shape[-1])} if kind == "input_ids" else {})}
    return graph, table


@register_frontend
class HfFrontend(Frontend):
    """``hf:<folder or hub id>``: a HuggingFace transformer (the model fixes its input shape)."""

    name = "hf"
    shape_from_dataset = False

    def matches(self, ref: str) -> bool:
        return ref.startswith("hf:")

    def load(self, cfg, shape, log_fn):
        model, _ = load_hf(cfg.model[3:], tokenizer=False)
        return model, hf_input_shape(model), {"weights": cfg.model[3:], "checkpoint_accuracy": None, "format": "hf"}

    def accepts(self, model) -> bool:
        return isinstance(model, nn.Module) and hasattr(model, "main_input_name") and hasattr(model, "config")

    def ingest(self, model, shape):
        return from_hf(model, seq_len=shape[-1])
