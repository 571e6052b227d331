"""The intermediate representation: typed nodes and the graph that wires them."""
from snnconv.ir.activations import Clip
from snnconv.ir.adaptive_lif import AdaptiveLIF
from snnconv.ir.cuba_lif import CubaLIF
from snnconv.ir.function_neuron import FunctionNeuron
from snnconv.ir.graph import Graph
from snnconv.ir.hodgkin_huxley import HodgkinHuxley
from snnconv.ir.izhikevich import Izhikevich
from snnconv.ir.layers import BatchNorm, Conv2d, ConvTranspose2d, Linear
from snnconv.ir.neurons import (IFNeuron, LIFNeuron, MultiLevelIFNeuron, MultiLevelLIFNeuron, SignedIFNeuron,
                                SignedLIFNeuron, SpikingNeuron)
from snnconv.ir.node import NODE_TYPES, Node
from snnconv.ir.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d, Upsample
from snnconv.ir.structure import Add, Concat, Flatten, Identity, Input, Reshape, Scale
from snnconv.ir.transformer import (Activation, ConcatConst, Embedding, LayerNorm, MatMul, Mul, Permute, Select,
                                   SignedNeuron, Slice, Softmax)

__all__ = ["Graph", "Node", "NODE_TYPES", "Input", "Conv2d", "ConvTranspose2d", "Linear", "BatchNorm", "Clip", "SpikingNeuron",
           "IFNeuron", "LIFNeuron", "MultiLevelIFNeuron", "MultiLevelLIFNeuron", "SignedIFNeuron", "SignedLIFNeuron",
           "AdaptiveLIF", "CubaLIF", "FunctionNeuron", "Izhikevich", "HodgkinHuxley",
           "AvgPool2d", "MaxPool2d", "AdaptiveAvgPool2d", "Upsample", "Add", "Concat", "Flatten", "Reshape", "Identity", "Scale",
           "LayerNorm", "Activation", "Softmax", "MatMul", "Mul", "Embedding", "Permute", "Select", "Slice", "ConcatConst",
           "SignedNeuron"]
