"""Lava side of ``snnconv export --format lava`` (runs under the Python 3.9 lava-nc 0.9.0 venv; numpy only).

Usage: ``python lava_runner.py NETWORK.npz INPUTS.npz RESULT.npz``.

Builds **one** Lava process graph for the network written by :mod:`snnconv.backends.lava` and streams
every input through it at run time:

* input: a ``lava.proc.io.source.RingBuffer`` sends each sample's 8-bit integer image (graded payload)
  for ``T`` consecutive steps (samples back to back, no gap);
* synapses: Lava's own ``lava.proc.conv.process.Conv`` (shared-weight convolution, fixed_pt model) and
  ``lava.proc.dense.process.Dense`` (bit-accurate model), 8-bit integer weights, graded messages where
  the source sends graded or signed spikes;
* neurons: :class:`SnnconvIF`, a Lava process with a fixed-point Python model (below) that states the
  neuron snnconv converted to (integer membrane, per-neuron threshold, subtractive or zero reset,
  initial membrane, signed and graded spikes, Loihi's 12-bit leak), as a Loihi 2 microcoded neuron
  would run it. Lava's built-in ``LIF`` resets to 0 and starts at 0; with it the accurate conversion
  cannot be expressed (docs/lava.md).
* pipelining: a synapse delivers at step t+1 what it received at step t, so a layer ``d`` hops from the
  input sees sample ``i`` during steps ``[i*T + d, (i+1)*T + d)``: each neuron resets to its initial
  membrane at the start of its own window (``offset`` = its hop count) and a shorter path into a
  residual sum waits ``delay`` steps in the neuron's second input port (a dendritic delay line).
* readout: a ``Dense`` into non-spiking :class:`SnnconvIF` integrators, whose membrane at the end of
  each window (probed with a ``Monitor``) is the sum over T steps of the readout layer's output.

Writes ``readout`` ``[samples, n_out]`` (integer membranes) and per layer ``count{k}`` (spike events per
neuron summed over all samples, in snnconv's CHW order).

This file must not import snnconv or torch: it runs in the other interpreter.
"""
import sys

import numpy as np


from lava.magma.core.decorator import implements, requires, tag  # noqa: E402  (the Lava venv only)
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402


class SnnconvIF(AbstractProcess):
    """Integrate-and-fire neuron of snnconv in integers (per-neuron threshold ``vth``, bias, initial
    membrane ``v_init``; ``levels`` > 1: graded spikes ``clip(v // vth, 0, levels)``; ``signed``:
    negative spikes while the net count is positive; ``reset`` 1 = subtract, 0 = to zero; ``dv``:
    Loihi's 12-bit membrane decay; ``spiking`` 0: an integrator that never fires)."""

    def __init__(self, *, shape, vth, bias, v_init, period, offset, levels=1, signed=0, reset=1, dv=0,
                 delay=0, spiking=1, windows=1, name=None):
        super().__init__(shape=shape, name=name)
        self.a_in = InPort(shape=shape)
        self.a_in_d = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.v = Var(shape=shape, init=0)
        self.n = Var(shape=shape, init=0)
        self.count = Var(shape=shape, init=0)
        self.vth = Var(shape=shape, init=vth)
        self.bias = Var(shape=shape, init=bias)
        self.v_init = Var(shape=shape, init=v_init)
        self.fifo = Var(shape=(max(delay, 1),) + tuple(shape), init=0)
        self.cfg = Var(shape=(9,), init=np.array([period, offset, levels, signed, reset, dv, delay, spiking,
                                                      windows]))

@implements(proc=SnnconvIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySnnconvIFModel(PyLoihiProcessModel):
    a_in = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_in_d = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v = LavaPyType(np.ndarray, np.int64, precision=24)
    n = LavaPyType(np.ndarray, np.int64, precision=24)
    count = LavaPyType(np.ndarray, np.int64, precision=32)
    vth = LavaPyType(np.ndarray, np.int64, precision=24)
    bias = LavaPyType(np.ndarray, np.int64, precision=24)
    v_init = LavaPyType(np.ndarray, np.int64, precision=24)
    fifo = LavaPyType(np.ndarray, np.int64, precision=24)
    cfg = LavaPyType(np.ndarray, np.int64, precision=24)

    def run_spk(self):
        period, offset, levels, signed, reset, dv, delay, spiking, windows = (int(c) for c in self.cfg)
        a = self.a_in.recv().astype(np.int64)
        ad = self.a_in_d.recv().astype(np.int64)
        if delay:  # dendritic delay line: what arrives now is used `delay` steps later
            cur_d = self.fifo[0].copy()
            self.fifo[:-1] = self.fifo[1:]
            self.fifo[-1] = ad
        else:
            cur_d = ad
        step = self.time_step - 1
        if step >= offset and (step - offset) % period == 0:  # a new sample's window starts here
            self.v[:] = self.v_init
            self.n[:] = 0
        if dv:  # Loihi's integer decay, truncated towards zero (PyLifModelBitAcc)
            p = self.v * (4096 - dv)
            self.v[:] = np.sign(p) * (np.abs(p) >> 12)
        self.v += a + cur_d + self.bias
        if not spiking:
            self.s_out.send(np.zeros(self.v.shape, dtype=np.int32))
            return
        if levels == 1:
            s = (self.v >= self.vth).astype(np.int64)
        else:
            s = np.clip(np.floor_divide(self.v, self.vth), 0, levels)
        if signed:
            neg = np.maximum(np.floor_divide(self.v, self.vth), -np.minimum(self.n, levels))
            s = np.where(self.v < 0, neg, s)
            self.n += s
        if reset:
            self.v -= s * self.vth
        else:
            self.v[:] = np.where(s != 0, 0, self.v)
        if offset <= step < offset + windows * period:  # spike events inside the samples' windows
            self.count += np.abs(s)
        self.s_out.send(s.astype(np.int32))



def _xyc_shape(shape):
    """The Lava (XYC) shape of a snnconv (CHW) shape; a 1-D population stays as is."""
    shape = tuple(int(v) for v in shape)
    return shape if len(shape) == 1 else shape[::-1]


def _xyc(a):
    """snnconv's CHW layout -> Lava's XYC (a 1-D population stays as is)."""
    return a if a.ndim == 1 else a.transpose(2, 1, 0)


def _conv(w, src_shape, net, key, bits, name):
    """Lava ``Conv`` for a torch-layout kernel [O, C, kH, kW] (Lava convolves in XYC and flips the kernel)."""
    from lava.proc.conv.process import Conv

    wl = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)).astype(np.int32)
    stride, pad = (int(v) for v in net[f"stride_{key}"]), (int(v) for v in net[f"padding_{key}"])
    return Conv(weight=wl, input_shape=_xyc_shape(src_shape), stride=tuple(stride)[::-1],
                padding=tuple(pad)[::-1], num_weight_bits=8, num_message_bits=bits, name=name)


def _dense(w, src_port, src_shape, bits, name):
    """Lava ``Dense``; a 3-D source is flattened (its columns reordered from snnconv's CHW to Lava's XYC)."""
    from lava.proc.dense.process import Dense

    if len(src_shape) > 1:
        c, h, wd = src_shape
        w = w[:, np.arange(c * h * wd).reshape(c, h, wd).transpose(2, 1, 0).reshape(-1)]
        src_port = src_port.flatten()
    syn = Dense(weights=w.astype(np.int32), num_message_bits=bits, name=name)
    src_port.connect(syn.s_in)
    return syn


def main_sdn(net, x, out_path):
    """The Sigma-Delta route: ``SigmaDelta`` (ReLU) population pairs whose difference is clip(z, 0, L);
    the input is sent as the delta of the image at the start of each sample's window; a ``Sigma`` readout."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor
    from lava.proc.sdn.process import ActivationMode, Sigma, SigmaDelta

    P, n_layers, samples = int(net["window"]), int(net["n_layers"]), x.shape[0]
    steps = samples * P
    frames = np.stack([_xyc(s) for s in x], -1).astype(np.int32)  # [X, Y, C, samples]
    data = np.zeros(frames.shape[:-1] + (steps,), np.int32)
    data[..., ::P] = np.diff(frames, axis=-1, prepend=0)  # delta of the image, once per sample
    source = RingBuffer(data=data)
    pairs, shapes = [], []
    for k in range(n_layers):
        shape = tuple(int(s) for s in net[f"shape_{k}"])
        shapes.append(shape)
        xyc = _xyc_shape(shape)
        e = int(net[f"state_exp_{k}"])
        pairs.append([SigmaDelta(shape=xyc, vth=1, bias=_xyc(net[f"bias_{k}"]).astype(np.int32), state_exp=e,
                                 act_mode=ActivationMode.RELU),
                      SigmaDelta(shape=xyc, vth=1, bias=_xyc(net[f"bias_n_{k}"]).astype(np.int32), state_exp=e,
                                 act_mode=ActivationMode.RELU)])
    synapses = []

    def connect(src, w, kind, key, targets):
        if src < 0:
            ports = [(source.s_out, w)]
            src_shape = x.shape[1:]
        else:
            ports = [(pairs[src][0].s_out, w), (pairs[src][1].s_out, -w)]
            src_shape = shapes[src]
        for i, (port, wi) in enumerate(ports):
            name = f"syn{key}_{i}"
            if kind == "conv":
                syn = _conv(wi, src_shape, net, key, 24, name)
                port.connect(syn.s_in)
            else:
                syn = _dense(wi, port, src_shape, 24, name)
            syn.a_out.connect(targets)
            synapses.append(syn)

    for k in range(n_layers):
        for j in range(int(net[f"n_conns_{k}"])):
            key = f"{k}_{j}"
            connect(int(net[f"src_{key}"]), net[f"w_{key}"], str(net[f"kind_{key}"]), key,
                    [pairs[k][0].a_in, pairs[k][1].a_in])
    n_out = int(net["readout_size"])
    readout = Sigma(shape=(n_out,))
    connect(int(net["readout_src"]), net["readout_w"], "dense", "r", [readout.a_in])
    mon = Monitor()
    mon.probe(target=readout.sigma, num_steps=steps)
    readout.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    sigma = np.asarray(mon.get_data()[readout.name]["sigma"]).reshape(steps, n_out)
    readout.stop()
    ends = np.arange(samples) * P + P - 1
    np.savez_compressed(out_path, readout=sigma[ends].astype(np.int64) + net["readout_bias"].astype(np.int64))


def main(net_path, inputs_path, out_path):
    net = np.load(net_path)
    if "route" in net.files and str(net["route"]) == "sdn":
        return main_sdn(net, np.load(inputs_path)["x"], out_path)
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    x = np.load(inputs_path)["x"]  # [samples, C, H, W] int8-range integers
    T, n_layers, samples = int(net["timesteps"]), int(net["n_layers"]), x.shape[0]
    steps = samples * T + int(net["readout_offset"])
    data = np.repeat(np.stack([_xyc(s) for s in x], -1), T, axis=-1).astype(np.int32)  # [X, Y, C, samples*T]
    data = np.concatenate([data, np.zeros(data.shape[:-1] + (steps - data.shape[-1],), np.int32)], -1)
    source = RingBuffer(data=data)
    pops, shapes = [], []
    for k in range(n_layers):
        shape = tuple(int(s) for s in net[f"shape_{k}"])
        shapes.append(shape)
        vth = np.broadcast_to(net[f"vth_{k}"].reshape((-1,) + (1,) * (len(shape) - 1)), shape)
        v0 = np.broadcast_to(net[f"v_init_{k}"].reshape((-1,) + (1,) * (len(shape) - 1)), shape)
        pops.append(SnnconvIF(shape=_xyc_shape(shape), vth=_xyc(np.ascontiguousarray(vth)),
                              bias=_xyc(net[f"bias_{k}"]), v_init=_xyc(np.ascontiguousarray(v0)), period=T,
                              offset=int(net[f"offset_{k}"]), levels=int(net[f"levels_{k}"]),
                              signed=int(net[f"signed_{k}"]), reset=int(net[f"reset_{k}"]), dv=int(net[f"dv_{k}"]),
                              delay=int(net[f"delay_{k}"]), windows=samples, name=f"layer{k}"))
    synapses = []

    def connect(src, dst_port, key, dst_shape):
        bits = int(net[f"bits_{key}"])
        w = net[f"w_{key}"]
        src_port, src_shape = (source.s_out, x.shape[1:]) if src < 0 else (pops[src].s_out, shapes[src])
        if str(net[f"kind_{key}"]) == "conv":
            syn = _conv(w, src_shape, net, key, bits, f"syn{key}")
            src_port.connect(syn.s_in)
        else:
            syn = _dense(w, src_port, src_shape, bits, f"syn{key}")
        syn.a_out.connect(dst_port)
        synapses.append(syn)

    for k in range(n_layers):
        for j in range(int(net[f"n_conns_{k}"])):
            key = f"{k}_{j}"
            port = pops[k].a_in_d if int(net[f"delayed_{key}"]) else pops[k].a_in
            connect(int(net[f"src_{key}"]), port, key, shapes[k])
    n_out = int(net["readout_size"])
    readout = SnnconvIF(shape=(n_out,), vth=np.ones(n_out, np.int64), bias=net["readout_bias"],
                        v_init=np.zeros(n_out, np.int64), period=T, offset=int(net["readout_offset"]),
                        spiking=0, windows=samples, name="readout")
    net_keys = {"bits_r": net["readout_bits"], "w_r": net["readout_w"], "kind_r": np.array("dense")}
    net = {**{k: net[k] for k in net.files}, **net_keys}
    connect(int(net["readout_src"]), readout.a_in, "r", (n_out,))
    mon = Monitor()
    mon.probe(target=readout.v, num_steps=steps)
    readout.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    v = np.asarray(mon.get_data()["readout"]["v"]).reshape(steps, n_out)
    ends = np.arange(samples) * T + int(net["readout_offset"]) + T - 1
    result = {"readout": v[ends].astype(np.int64)}
    for k, p in enumerate(pops):
        cnt = np.asarray(p.count.get())
        result[f"count{k}"] = cnt if cnt.ndim == 1 else cnt.transpose(2, 1, 0)
    readout.stop()
    np.savez_compressed(out_path, **result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
