"""Transformers: HF frontend (tiny BERT / ViT from config, random weights), spiking-transformer
conversion (signed IF neurons + accumulate-and-difference operator nodes), census, bad input, CLI.

Thresholds were measured on these exact models (initializer_range=0.5 makes the activations
large enough that conversion error is visible): relative L2 error at T=32 was 0.007 (BERT) and
0.014 (ViT), cosine at T=32 >= 0.9999 for both; the asserts leave a margin of ~3x.
"""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from snnconv.errors import SnnconvError  # noqa: E402
from snnconv.frontends.hf import from_hf, pack_tokens  # noqa: E402
from snnconv.ir import Graph, MatMul, SignedNeuron, Softmax  # noqa: E402
from snnconv.runtime.neurons.signed_if import run_signed_neuron  # noqa: E402
from snnconv.passes import PassContext, Pipeline  # noqa: E402
from snnconv.passes.spiking_transformer import spiking_census  # noqa: E402
from snnconv.runtime.interpreter import run_ann  # noqa: E402
from snnconv.runtime.kernels import KERNELS  # noqa: E402
from snnconv.runtime.operators import run_operator  # noqa: E402
from snnconv.runtime.simulator import Simulator  # noqa: E402

SEQ = 12


def tiny_bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=100, max_position_embeddings=64, initializer_range=0.5)
    m = transformers.BertModel(cfg).eval()  # with its pooler: unused by last_hidden_state, skipped at ingest
    m.config._attn_implementation = "eager"
    return m


def tiny_vit():
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, initializer_range=0.5)
    return transformers.ViTModel(cfg, add_pooling_layer=False).eval()


def tokens(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (n, SEQ), generator=g)
    mask = torch.ones(n, SEQ, dtype=torch.long)
    mask[::2, 7:] = 0  # every other sentence padded
    return pack_tokens(ids, mask)


@pytest.fixture(scope="module")
def bert():
    m = tiny_bert()
    g, table = from_hf(m, seq_len=SEQ)
    return m, g, table


@pytest.fixture(scope="module")
def vit():
    m = tiny_vit()
    g, table = from_hf(m)
    return m, g, table


def convert(g: Graph, calib: torch.Tensor) -> Graph:
    return Pipeline.from_config(["remove_identity", "spiking_transformer"]).run(g, PassContext(calibration=[calib]))


def rel_err(a, b) -> float:
    return float((a - b).norm() / b.norm())


def test_bert_ingest_matches_hf(bert):
    m, g, table = bert
    x = tokens(5, 3)
    with torch.no_grad():
        ref = m(input_ids=x[:, 0].long(), attention_mask=x[:, 1].long()).last_hidden_state
    assert (run_ann(g, x) - ref).abs().max() < 1e-4
    kinds = g.kinds()
    assert kinds["matmul"] == 4 and kinds["softmax"] == 2 and kinds["layernorm"] == 5 and kinds["embedding"] == 1
    assert "tanh" not in table  # the pooler does not feed last_hidden_state: skipped, not reported


def test_vit_ingest_matches_hf(vit):
    m, g, _ = vit
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        ref = m(pixel_values=x).last_hidden_state
    assert (run_ann(g, x) - ref).abs().max() < 1e-4
    assert g.kinds()["concat_const"] == 1  # the class token


def test_ir_roundtrip_keeps_transformer_nodes(bert, tmp_path):
    _, g, _ = bert
    g.save(tmp_path / "g.pt")
    g2 = Graph.load(tmp_path / "g.pt")
    x = tokens(3, 4)
    assert torch.equal(run_ann(g, x), run_ann(g2, x))


@pytest.mark.parametrize("which", ["bert", "vit"])
def test_snn_approaches_ann(which, bert, vit):
    _, g, _ = bert if which == "bert" else vit
    calib = tokens(32, 1) if which == "bert" else torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    x = tokens(8, 2) if which == "bert" else torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    snn = convert(g, calib)
    ref = run_ann(g, x)
    out = Simulator(snn, 32).run(x)  # running mean of the readout at every t
    errs = {t: rel_err(out[t - 1], ref) for t in (1, 2, 8, 32)}
    assert errs[32] < errs[8] < errs[2] < errs[1]
    assert errs[32] < 0.05
    cos = torch.nn.functional.cosine_similarity(out[31].flatten(1), ref.flatten(1))
    assert cos.min() > 0.999


def test_census_lists_spiking_and_operator_nodes(bert):
    _, g, _ = bert
    snn = convert(g, tokens(16, 1))
    census = {r["node"]: r for r in spiking_census(snn)}
    roles = {r["role"] for r in census.values()}
    assert {"spiking", "operator", "synaptic_spikes", "synaptic_analog", "input_side"} <= roles
    for name, node in snn.nodes.items():
        role = census[name]["role"]
        if node.kind in ("softmax", "layernorm", "matmul", "activation") and name not in \
                [n for n, r in census.items() if r["role"] == "input_side"]:
            assert role == "operator", name
        if node.kind == "signed_neuron":
            assert role == "spiking"
    # layer-0 Q/K/V read the embedding layer norm (input side): analog; every other linear is spike-driven
    linears = {n: census[n]["role"] for n, node in snn.nodes.items() if node.kind == "linear"}
    assert sorted(r for r in linears.values()) == ["synaptic_analog"] * 3 + ["synaptic_spikes"] * (len(linears) - 3)
    # both operands of every attention matmul are spike trains (possibly through reshape/transpose views)
    for name, node in snn.nodes.items():
        if isinstance(node, MatMul):
            for src in snn.preds(name):
                while snn.nodes[src].kind in ("reshape", "permute"):
                    src = snn.preds(src)[0]
                assert isinstance(snn.nodes[src], SignedNeuron), (name, src)


def test_accumulate_and_difference_is_exact_on_running_means():
    """sum of the outputs up to t == t * f(running means of the inputs), across chunks."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(10, 3, 4, 5, generator=g), torch.randn(10, 3, 5, 2, generator=g)
    node = MatMul()
    out1, st = run_operator(node, [a[:4], b[:4]], None, KERNELS["matmul"])
    out2, _ = run_operator(node, [a[4:], b[4:]], st, KERNELS["matmul"])
    out = torch.cat([out1, out2]).cumsum(0)
    for t in (1, 4, 5, 10):
        expect = t * (a[:t].mean(0) @ b[:t].mean(0))
        assert torch.allclose(out[t - 1], expect, atol=1e-4)
    s = Softmax(-1)
    o, _ = run_operator(s, [a], None, KERNELS["softmax"])
    assert torch.allclose(o.cumsum(0)[-1] / 10, torch.softmax(a.mean(0), -1), atol=1e-5)


def test_signed_neuron_tracks_signed_input():
    x = torch.tensor([[-0.73, 0.2, 1.9, -2.5]])
    node = SignedNeuron(torch.tensor(0.25), levels=0)
    out, counts, _ = run_signed_neuron(node, x.unsqueeze(0).expand(16, 1, 4).clone(), None)
    mean = out.cumsum(0) / torch.arange(1, 17).view(-1, 1, 1)
    assert ((mean - x).abs() <= 0.125 / torch.arange(1, 17).view(-1, 1, 1) + 1e-6).all()  # |error| <= theta/(2t)
    assert (counts < 0).any() and (counts > 0).any()
    capped, _, _ = run_signed_neuron(SignedNeuron(torch.tensor(0.25), levels=2), x.unsqueeze(0).expand(16, 1, 4).clone(),
                                     None)
    assert torch.allclose(capped.mean(0)[0, 3], torch.tensor(-0.5))  # capped at 2 spikes of 0.25 per step


def test_hf_folder_without_weights_is_one_line_error(tmp_path):
    tiny_bert().config.save_pretrained(tmp_path)  # config.json only
    with pytest.raises(SnnconvError) as e:
        from_hf(str(tmp_path))
    assert "no weights" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SnnconvError):
        from_hf(str(tmp_path / "missing"))


def test_cli_convert_hf_folder(tmp_path, monkeypatch, capsys):
    """`snnconv convert --model hf:<folder>` on a tiny saved BERT with a word-level tokenizer."""
    from snnconv import cli as cli_module
    from snnconv.data.sentences import calibration_sentences, test_sentences

    words = sorted({w.strip(".") for s in test_sentences() + calibration_sentences() for w in s.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    folder = tmp_path / "tiny-bert"
    transformers.BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=len(vocab), max_position_embeddings=32)
    transformers.BertModel(cfg).save_pretrained(folder)
    out = tmp_path / "run"
    monkeypatch.setattr("sys.argv", ["snnconv", "convert", "--model", f"hf:{folder}", "--dataset", "sentences",
                                     "--timesteps", "1,4", "--eval-samples", "16", "--calib-samples", "16",
                                     "--output-dir", str(out)])
    try:
        cli_module.main()
    except SystemExit as e:
        assert not e.code, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert set(report["cosine"]) == {"1", "4"} and report["cosine"]["4"] > 0.99
    assert report["census_counts"]["spiking"] > 0 and report["census_counts"]["operator"] > 0
    assert "Spiking census" in (out / "report.md").read_text()
    Graph.load(out / "snn.pt")
    # and a folder without weights: one line, exit 2, no output folder
    (tmp_path / "empty").mkdir()
    cfg.save_pretrained(tmp_path / "empty")
    monkeypatch.setattr("sys.argv", ["snnconv", "convert", "--model", f"hf:{tmp_path / 'empty'}", "--dataset",
                                     "sentences", "--output-dir", str(tmp_path / "run2")])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli_module.main()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: hf:") and "no weights" in err[-1]
    assert not (tmp_path / "run2").exists()


def test_gpt2_decoder_ingests_and_converts():
    """GPT-2 (built from its config, no download): Conv1D layers, NewGELU and the causal mask ingest through
    torch.export after the exact module rewrite (Conv1D -> Linear, NewGELU -> GELU(tanh), no KV cache); the
    graph matches the HF model on other inputs (causality included), and the spiking conversion tracks it."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=32,
                                  initializer_range=0.5)
    m = transformers.GPT2Model(cfg).eval()
    x = tokens(6, 5)
    x[:, 1] = 1  # decoder LM: no padding
    with torch.no_grad():
        ref_before = m(input_ids=x[:, 0].long()).last_hidden_state
    g, table = from_hf(m, seq_len=SEQ)
    assert "addmm" not in table and "Conv1D" not in table
    assert g.kinds()["linear"] == 8 and g.kinds()["matmul"] == 4
    assert (run_ann(g, x) - ref_before).abs().max() < 1e-4
    y = x.clone()
    y[:, 0, -1] = (y[:, 0, -1] + 7) % 100  # change the last token: earlier positions must not move (causal)
    a, b = run_ann(g, x), run_ann(g, y)
    assert torch.equal(a[:, :-1], b[:, :-1]) and not torch.equal(a[:, -1], b[:, -1])
    snn = convert(g, tokens(32, 1).index_fill_(1, torch.tensor([1]), 1.0))
    out = Simulator(snn, 32).run(x)
    assert rel_err(out[31], run_ann(g, x)) < rel_err(out[1], run_ann(g, x))
    assert rel_err(out[31], run_ann(g, x)) < 0.05
