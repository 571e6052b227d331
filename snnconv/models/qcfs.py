r"""QCFS: the quantization-clip-floor-shift activation for conversion-aware ANN training.

Bu et al., ICLR 2022, "Optimal ANN-SNN Conversion for High-accuracy and Ultra-low-latency Spiking
Neural Networks", Eq. 9: every ReLU is replaced by

.. math::  \hat a = \lambda \, \mathrm{clip}\!\left(\frac{1}{L}\left\lfloor \frac{z L}{\lambda} + \varphi \right\rfloor, 0, 1\right)

with ``L`` quantization levels, a learnable per-layer threshold :math:`\lambda` and shift
:math:`\varphi = 1/2`. The floor is trained with a straight-through estimator. After training,
an IF neuron with threshold :math:`\theta = \lambda`, reset by subtraction and initial membrane
:math:`\varphi\theta` has an expected conversion error of zero at every T (their Theorem 2), and
equals the quantized ANN exactly at T = L for a layer with constant input.

The activation is a ``torch.library`` custom op (``snnconv::qcfs``) so that ``torch.export`` keeps
it as one node, which the torch frontend maps to a quantized :class:`~snnconv.ir.Clip`.
"""
from __future__ import annotations

import torch
from torch import nn


@torch.library.custom_op("snnconv::qcfs", mutates_args=())
def qcfs(x: torch.Tensor, lam: torch.Tensor, levels: int, shift: float) -> torch.Tensor:
    # floor(clamp(x / lam, 0, 1) * L + shift) / L * lam, in place on one buffer: the same operations in the
    # same order (bit-identical to the out-of-place form) without a fresh activation-sized tensor per step
    out = torch.div(x, lam)
    return out.clamp_(0.0, 1.0).mul_(levels).add_(shift).floor_().div_(levels).mul_(lam)


@qcfs.register_fake
def _qcfs_fake(x, lam, levels, shift):
    return torch.empty_like(x)


def _qcfs_setup(ctx, inputs, output):
    x, lam, _, _ = inputs
    ctx.save_for_backward(x, lam, output)


def _flat(t: torch.Tensor) -> torch.Tensor | None:
    """A 1-D view of ``t`` in its memory order (contiguous or channels-last), or None."""
    if t.is_contiguous():
        return t.view(-1)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).reshape(-1)
    return None


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum(a * b) without the product tensor when both share a memory layout."""
    fa, fb = _flat(a), _flat(b)
    if fa is not None and fb is not None and a.stride() == b.stride():
        return torch.dot(fa, fb)
    return (a * b).sum()


def _backward_terms(x: torch.Tensor, lam: torch.Tensor, out: torch.Tensor, grad: torch.Tensor):
    """``(grad_x, sum(grad * out) - sum(grad_x * x))`` for lambda > 0, written for ``torch.compile`` (one pass)."""
    inside = (x >= 0) & (x <= lam)
    gx = torch.where(inside, grad, 0.0)
    return gx, (grad.float() * out.float() - gx.float() * x.float()).sum()


def _eager_backward_terms(x: torch.Tensor, lam: torch.Tensor, out: torch.Tensor, grad: torch.Tensor):
    """The same terms eagerly: in-place mask and product-free dot products (no activation-sized temporaries)."""
    inside = (x >= 0).logical_and_(x <= lam)
    gx = torch.where(inside, grad, 0.0)
    return gx, _dot(grad, out) - _dot(gx, x)


_FUSED: dict = {}  # "fn": the compiled _backward_terms, or None once compiling failed or was switched off


def _fused_backward_terms():
    """:func:`_backward_terms` compiled by ``torch.compile`` (TorchInductor fuses the mask, the select and both
    reductions into one pass over the activations; eagerly they are six passes, about a quarter of a ResNet-18
    training step on a 2-core CPU). ``SNNCONV_COMPILE=0`` switches it off; if compiling fails the eager form
    is used from then on."""
    if "fn" not in _FUSED:
        import os
        _FUSED["fn"] = (torch.compile(_backward_terms, dynamic=True)
                        if os.environ.get("SNNCONV_COMPILE", "1") != "0" and hasattr(torch, "compile") else None)
    return _FUSED["fn"]


def _qcfs_backward(ctx, grad):
    # Straight-through floor: d/dz = 1 inside the clip range; d/dlambda = q - z/lambda inside, q = 1 above,
    # i.e. dL/dlambda = (sum(grad * q * lambda) - sum(grad_z * z)) / lambda with q * lambda the output.
    x, lam, out = ctx.saved_tensors
    if bool((lam <= 0).any()):  # the range test below assumes lambda > 0
        u = x / lam
        inside = ((u >= 0) & (u <= 1)).to(grad.dtype)
        return grad * inside, (grad * (out / lam - u * inside)).sum().reshape(lam.shape), None, None
    fused = _fused_backward_terms() if grad.device.type == "cpu" and grad.numel() >= 2 ** 16 else None
    terms = None
    if fused is not None:
        try:
            terms = fused(x, lam, out, grad)
        except Exception as e:  # noqa: BLE001 - no compiler, unsupported build: the eager form is exact
            import logging
            logging.getLogger("snnconv").warning(f"QCFS backward: torch.compile failed ({type(e).__name__}); "
                                                 f"using the eager form")
            _FUSED["fn"] = None
    gx, s = terms if terms is not None else _eager_backward_terms(x, lam, out, grad)
    return gx, (s / lam).to(lam.dtype).reshape(lam.shape), None, None


qcfs.register_autograd(_qcfs_backward, setup_context=_qcfs_setup)


class QCFS(nn.Module):
    """QCFS activation with ``levels`` steps and a learnable threshold (one per layer)."""

    def __init__(self, levels: int = 4, threshold: float = 8.0, shift: float = 0.5):
        super().__init__()
        if levels < 1:
            raise ValueError("levels must be >= 1")
        self.levels, self.shift = int(levels), float(shift)
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))

    def forward(self, x):
        return qcfs(x, self.threshold, self.levels, self.shift)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, threshold={float(self.threshold.detach()):.4g}, shift={self.shift}"


def to_qcfs(model: nn.Module, levels: int = 4, avgpool: bool = True, threshold: float = 8.0) -> nn.Module:
    """Replace every ``nn.ReLU`` by :class:`QCFS` (in place) and, if ``avgpool``, every
    ``nn.MaxPool2d`` by an ``nn.AvgPool2d`` of the same geometry (max-pooling has no exact
    rate equivalent, average pooling is linear)."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.ReLU):
            setattr(model, name, QCFS(levels, threshold))
        elif avgpool and isinstance(child, nn.MaxPool2d):
            setattr(model, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
        else:
            to_qcfs(child, levels, avgpool, threshold)
    return model


def set_levels(model: nn.Module, levels: int) -> int:
    """Set every QCFS quantizer of ``model`` to ``levels`` (thresholds kept); returns how many there are."""
    quantizers = [m for m in model.modules() if isinstance(m, QCFS)]
    for q in quantizers:
        q.levels = levels
    return len(quantizers)


@torch.no_grad()
def init_thresholds(model: nn.Module, batches, percentile: float = 99.9) -> None:
    """Set every QCFS threshold to the ``percentile`` of its input on ``batches`` (used when
    fine-tuning a trained ReLU network, so training starts close to the ReLU function)."""
    acts: dict[QCFS, list[torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: acts.setdefault(m, []).append(i[0].flatten()))
             for m in model.modules() if isinstance(m, QCFS)]
    model.eval()
    try:
        for x in batches:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    for m, xs in acts.items():
        v = torch.cat(xs)
        v = v[v > 0]
        if v.numel():
            k = max(1, int(round(v.numel() * percentile / 100)))
            m.threshold.fill_(float(v.kthvalue(min(k, v.numel())).values))
