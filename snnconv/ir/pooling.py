"""Pooling nodes: average, max and adaptive average pooling over 2-D feature maps."""
from __future__ import annotations

import dataclasses

from snnconv.ir.node import Node, register_node


@register_node
@dataclasses.dataclass(eq=False)
class AvgPool2d(Node):
    r"""Average pooling, :math:`y = \frac{1}{k^2}\sum_{window} x`; linear, so it converts exactly."""

    kind = "avgpool2d"
    synaptic = True  # a sum-pool with weight 1/k^2: counts as synaptic operations
    kernel_size: tuple = (2, 2)
    stride: tuple = (2, 2)
    padding: tuple = (0, 0)
    ceil_mode: bool = False
    count_include_pad: bool = True


#: how the SNN runs max pooling (see :class:`MaxPool2d`)
MAXPOOL_MODES = ("count", "gate", "wta")


@register_node
@dataclasses.dataclass(eq=False)
class MaxPool2d(Node):
    r"""Max pooling. In the SNN, ``spike_mode`` says how a window of spike trains becomes one train:

    * ``"count"`` (default): the pool tracks the accumulated input of every element,
      :math:`A_t = \sum_{\tau \le t} x_\tau`, and emits the change of the window maximum,
      :math:`o_t = \max_w A_t - \max_w A_{t-1}`, so the emitted total is exactly the maximum of the
      accumulated inputs at every step and the output rate is the max of the input rates, the ANN's max
      pooling of rates (no conversion error of its own). With binary spikes of one threshold per channel
      the output is binary too (the maximum grows by at most one spike per step); signed or graded inputs
      give signed or graded outputs. This is the accumulate-and-difference form of the operator (as
      SpikeZIP-TF, You et al. ICML 2024, writes its spike-equivalent operators) applied to max, which is
      exact here because max commutes with the rate code's positive scaling.
    * ``"gate"``: the gating scheme of Rueckauer et al. (Front. Neurosci. 2017, §2.2.3): each window passes
      the current spikes of the input that has fired most so far; spikes of an input that only later
      becomes the winner are never sent, so the output converges slowly and biases the layers after it.
    * ``"wta"``: winner-take-all by lateral inhibition: the first input of a window to fire wins it and
      the others are inhibited for the rest of the run; the window then passes only the winner's
      spikes (ties at that step go to the largest input). In a latency code the first spike *is* the
      maximum (Masquelier & Thorpe, PLoS Comput. Biol. 2007; Kheradpisheh et al., Neural Netw. 2018);
      in a rate code it is exact only when the earliest input is also the most active one.
    """

    kind = "maxpool2d"
    kernel_size: tuple = (2, 2)
    stride: tuple = (2, 2)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    ceil_mode: bool = False
    spike_mode: str = "count"

    def __post_init__(self):
        if self.spike_mode not in MAXPOOL_MODES:
            raise ValueError(f"max pooling spike_mode must be one of {MAXPOOL_MODES}, got {self.spike_mode!r}")


@register_node
@dataclasses.dataclass(eq=False)
class AdaptiveAvgPool2d(Node):
    """Adaptive average pooling to ``output_size`` (global average pooling when (1, 1))."""

    kind = "adaptive_avgpool2d"
    synaptic = True
    output_size: tuple = (1, 1)


@register_node
@dataclasses.dataclass(eq=False)
class Upsample(Node):
    """Resize each map to ``size`` (H, W): ``nearest`` (copies) or ``bilinear`` (a fixed linear interpolation,
    ``align_corners`` as in PyTorch). Linear in its input, so spike trains pass through it unchanged in rate."""

    kind = "upsample"
    size: tuple = ()
    mode: str = "nearest"
    align_corners: bool = False

    def __post_init__(self):
        if self.mode not in ("nearest", "bilinear"):
            raise ValueError(f"upsample mode must be 'nearest' or 'bilinear', got {self.mode!r}")
