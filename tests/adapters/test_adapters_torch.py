"""dlrcore.adapters.torch on real PyTorch models: D_LR equals the core on hand-extracted features and outputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import dlrcore

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import dlrcore.adapters.torch as dlt  # noqa: E402

TOL = 1e-6


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------------- models
class MLP(nn.Module):
    def __init__(self, d_in: int = 6, width: int = 16, p: int = 12, C: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Dropout(0.5), nn.Linear(width, p), nn.Tanh())
        self.head = nn.Linear(p, C)

    def forward(self, x):
        return self.head(self.body(x))


class CNN(nn.Module):
    def __init__(self, C: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.MaxPool2d(2), nn.Flatten())
        self.head = nn.Linear(4 * 3 * 3, C)

    def forward(self, x):
        return self.head(self.body(x))


class SeqModel(nn.Module):
    """Embedding, a token-wise MLP and a token-wise head: logits (batch, seq, C)."""

    def __init__(self, vocab: int = 11, hidden: int = 8, C: int = 5) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, hidden)
        self.mix = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, C)

    def body(self, ids):
        h = self.emb(ids)
        return torch.tanh(self.mix(h) + h.cumsum(dim=1) / 3.0)

    def forward(self, ids):
        return self.head(self.body(ids))


def mlp_data(n_batches: int = 5, bs: int = 40, d_in: int = 6, C: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(bs, d_in, generator=g) + 0.5, torch.randint(0, C, (bs,), generator=g)) for _ in range(n_batches)
    ]


def hand(model, xs, body=None, head=None):
    """Features and outputs extracted by hand, in eval mode."""
    model.eval()
    with torch.no_grad():
        phi = torch.cat([(body or model.body)(x) for x in xs])
        out = (head or model.head)(phi)
    return phi, out


def no_hooks(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return MLP()


# ---------------------------------------------------------------------------------------------- equality with the core
def test_mlp_tuple_batches_match_hand_extraction(mlp):
    data = mlp_data()
    stats = dlt.collect(mlp, data, progress=False)
    phi, out = hand(mlp, [x for x, _ in data])
    y = torch.cat([y for _, y in data])
    ref = dlrcore.dlr(phi.numpy(), out.numpy())
    res = stats.result()
    assert (res.n, res.p, res.C) == (200, 12, 4)
    assert res.value == pytest.approx(ref.value, abs=TOL)
    assert res.output_rank == ref.output_rank
    assert stats.label_kind == "classes"
    assert stats.nc1().value == pytest.approx(dlrcore.nc1(phi.numpy(), y.numpy()).value, rel=1e-6)
    sp = stats.spectrum()
    assert sp.cumulative_quality is not None


def test_dataloader_and_tensor_batches(mlp):
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(1)
    x = torch.randn(150, 6, generator=g)
    y = torch.randint(0, 4, (150,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    phi, out = hand(mlp, [x])
    ref = dlrcore.dlr(phi.numpy(), out.numpy()).value
    st = dlt.collect(mlp, loader, progress=False)
    assert st.n == 150 and st.label_kind == "classes"
    assert st.result().value == pytest.approx(ref, abs=TOL)
    # plain tensors: inputs only, no labels; a one-shot generator works too
    st2 = dlt.collect(mlp, (x[i : i + 50] for i in range(0, 150, 50)), progress=False)
    assert st2.label_kind == "none"
    assert st2.result().value == pytest.approx(ref, abs=TOL)


def test_tiny_cnn_matches_hand_extraction():
    torch.manual_seed(3)
    model = CNN()
    g = torch.Generator().manual_seed(4)
    xs = [torch.randn(30, 1, 8, 8, generator=g) for _ in range(4)]
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics; collect must use them (eval mode)
        model(torch.randn(64, 1, 8, 8, generator=g) * 2 + 1)
    phi, out = hand(model, xs)
    st = dlt.collect(model, xs, progress=False)
    assert (st.n, st.p, st.C) == (120, 36, 3)
    assert st.result().value == pytest.approx(dlrcore.dlr(phi.numpy(), out.numpy()).value, abs=TOL)


def test_low_precision_model_goes_to_the_core():
    torch.manual_seed(5)
    model = MLP().to(torch.bfloat16)
    xs = [x.to(torch.bfloat16) for x, _ in mlp_data(3)]
    phi, out = hand(model, xs)
    st = dlt.collect(model, xs, progress=False)
    ref = dlrcore.dlr(phi.float().numpy(), out.float().numpy()).value
    assert st.result().value == pytest.approx(ref, abs=TOL)


# ---------------------------------------------------------------------------------------------- hooks and modes
class Exploding(MLP):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.explode_at = 2

    def forward(self, x):
        out = self.head(self.body(x))
        self.calls += 1
        if self.calls >= self.explode_at:
            raise RuntimeError("boom")
        return out


@pytest.mark.parametrize("explode_at", [1, 3])  # in the detection pass / in the measuring loop
def test_hooks_removed_and_modes_restored_after_forward_error(explode_at):
    torch.manual_seed(0)
    model = Exploding()
    model.explode_at = explode_at
    model.train()
    model.body[2].eval()
    before = {name: m.training for name, m in model.named_modules()}
    with pytest.raises(RuntimeError, match="boom"):
        dlt.collect(model, mlp_data(4), progress=False)
    assert no_hooks(model)
    assert {name: m.training for name, m in model.named_modules()} == before
    with pytest.raises(RuntimeError, match="boom"):
        dlt.collect(model, mlp_data(4), layer="head", layers=["body.0"], progress=False)
    assert no_hooks(model)


class ModeSpy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, x):
        self.seen.append(self.training)
        return x


def test_eval_no_grad_during_the_pass_and_modes_restored(mlp):
    spy = ModeSpy()
    grads: list[bool] = []
    mlp.body.append(spy)
    mlp.head.register_forward_pre_hook(lambda m, a: grads.append(torch.is_grad_enabled()))
    mlp.train()
    mlp.body[2].eval()  # a submodule in eval while its parent trains
    before = {name: m.training for name, m in mlp.named_modules()}
    dlt.collect(mlp, mlp_data(3), progress=False)
    assert spy.seen and not any(spy.seen)
    assert grads and not any(grads)
    assert {name: m.training for name, m in mlp.named_modules()} == before
    assert mlp.body[2].training is False and mlp.training is True
    assert len(mlp.head._forward_pre_hooks) == 1  # the user's own hook is left alone
    mlp.head._forward_pre_hooks.clear()
    assert no_hooks(mlp)


# ---------------------------------------------------------------------------------------------- layer choice
def test_last_linear_detected_and_layer_given_by_name_or_module(mlp):
    data = mlp_data(2)
    assert dlt.last_linear(mlp, data[0]) == "head"
    auto = dlt.collect(mlp, data, progress=False).result().value
    assert dlt.collect(mlp, data, "head", progress=False).result().value == auto
    assert dlt.collect(mlp, data, mlp.head, progress=False).result().value == auto
    # another layer: its input and output (flattened) are the features and outputs
    st = dlt.collect(mlp, data, "body.3", progress=False)
    with torch.no_grad():
        mlp.eval()
        h = torch.cat([mlp.body[:3](x) for x, _ in data])
        ref = dlrcore.dlr(h.numpy(), mlp.body[3](h).numpy()).value
    assert (st.p, st.C) == (16, 12)
    assert st.result().value == pytest.approx(ref, abs=TOL)
    with pytest.raises(ValueError, match="no submodule named 'nope'"):
        dlt.collect(mlp, data, "nope", progress=False)
    with pytest.raises(ValueError, match="not a submodule"):
        dlt.collect(mlp, data, nn.Linear(3, 3), progress=False)


def test_no_linear_is_a_clear_error():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(ValueError, match="no nn.Linear module was called"):
        dlt.collect(model, [torch.randn(4, 1, 5, 5)], progress=False)
    assert no_hooks(model)


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(torch.relu(self.lin(self.first(x))))


def test_ambiguous_last_linear_is_a_clear_error():
    model = Twice()
    with pytest.raises(ValueError, match="ambiguous last linear layer: 'lin' is called 2 times"):
        dlt.collect(model, [torch.randn(8, 4)], progress=False)
    with pytest.raises(ValueError, match="'lin' was called 2 times"):
        dlt.collect(model, [torch.randn(8, 4)], "lin", progress=False)
    assert no_hooks(model)
    # a Linear that is called once is fine
    assert dlt.collect(model, [torch.randn(8, 4)], "first", progress=False).n == 8


# ---------------------------------------------------------------------------------------------- batches and labels
def test_dict_batches_labels_and_batch_to_input(mlp):
    data = mlp_data(3)
    ref = dlt.collect(mlp, data, progress=False)
    for in_key, lab_key in [("x", "label"), ("inputs", "labels"), ("input", "targets")]:
        st = dlt.collect(mlp, [{in_key: x, lab_key: y, "meta": 1} for x, y in data], progress=False)
        assert st.label_kind == "classes"
        assert st.result().value == pytest.approx(ref.result().value, abs=1e-12)
        assert st.nc1().value == pytest.approx(ref.nc1().value, rel=1e-9)

    class Kw(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *, features, scale):
            return self.inner(features * scale)

    kw = Kw(mlp)
    batches = [{"features": x, "scale": torch.tensor(1.0), "y": y} for x, y in data]
    with pytest.raises(ValueError, match="dict batch without an input key"):
        dlt.collect(kw, batches, progress=False)
    st = dlt.collect(
        kw, batches, batch_to_input=lambda b: {k: v for k, v in b.items() if k != "y"}, progress=False
    )
    assert st.label_kind == "classes"
    assert st.result().value == pytest.approx(ref.result().value, abs=1e-12)
    # tuples are positional arguments; labels=False and labels=callable
    st = dlt.collect(mlp, data, batch_to_input=lambda b: (b[0],), labels=False, progress=False)
    assert st.label_kind == "none"
    targets = dlt.collect(mlp, data, labels=lambda b: torch.nn.functional.one_hot(b[1], 4).float(), progress=False)
    assert targets.label_kind == "targets"


def test_regression_targets_and_num_classes(mlp):
    g = torch.Generator().manual_seed(2)
    data = [(torch.randn(20, 6, generator=g), torch.randn(20, 2, generator=g)) for _ in range(3)]
    assert dlt.collect(mlp, data, progress=False).label_kind == "targets"
    cls = [(x, torch.randint(0, 7, (20,), generator=g)) for x, _ in data]
    st = dlt.collect(mlp, cls, num_classes=7, progress=False)
    assert st.label_kind == "classes" and st.nc1().num_classes == 7


def test_max_batches_stops_early_without_pulling_more(mlp):
    data = mlp_data(6, bs=10)
    pulled = []

    def gen():
        for i, b in enumerate(data):
            pulled.append(i)
            yield b

    st = dlt.collect(mlp, gen(), max_batches=2, progress=False)
    assert st.n == 20 and pulled == [0, 1]
    phi, out = hand(mlp, [x for x, _ in data[:2]])
    assert st.result().value == pytest.approx(dlrcore.dlr(phi.numpy(), out.numpy()).value, abs=TOL)
    with pytest.raises(ValueError, match="max_batches"):
        dlt.collect(mlp, data, max_batches=0)
    with pytest.raises(ValueError, match="data is empty"):
        dlt.collect(mlp, [], progress=False)


# ---------------------------------------------------------------------------------------------- layer-wise
def test_layers_give_per_layer_stats_equal_to_hand_extraction(mlp):
    data = mlp_data(4)
    xs = [x for x, _ in data]
    per = dlt.collect(mlp, data, layers=["body.0", mlp.body[3], "head"], progress=False)
    assert list(per) == ["body.0", "body.3", "head"]
    mlp.eval()
    with torch.no_grad():
        x = torch.cat(xs)
        inputs = {"body.0": x, "body.3": mlp.body[:3](x), "head": mlp.body(x)}
        out = mlp(x)
    for name, st in per.items():
        assert st.label_kind == "classes"
        ref = dlrcore.dlr(inputs[name].numpy(), out.numpy()).value
        assert st.result().value == pytest.approx(ref, abs=TOL), name
    # the penultimate entry is the ordinary D_LR
    assert per["head"].result().value == pytest.approx(dlt.collect(mlp, data, progress=False).result().value, abs=1e-12)
    # against another reference layer's outputs
    per2 = dlt.collect(mlp, data, "body.3", layers=["body.0"], progress=False)
    with torch.no_grad():
        ref = dlrcore.dlr(x.numpy(), mlp.body[3](mlp.body[:3](x)).numpy()).value
    assert per2["body.0"].result().value == pytest.approx(ref, abs=TOL)
    with pytest.raises(ValueError, match="more than once"):
        dlt.collect(mlp, data, layers=["head", mlp.head], progress=False)


def test_layers_of_a_cnn_are_flattened_per_sample():
    torch.manual_seed(6)
    model = CNN()
    g = torch.Generator().manual_seed(7)
    xs = [torch.randn(25, 1, 8, 8, generator=g) for _ in range(3)]
    per = dlt.collect(model, xs, layers=["body.2", "head"], progress=False)
    model.eval()
    with torch.no_grad():
        x = torch.cat(xs)
        conv = model.body[1](model.body[0](x))
        out = model(x)
    assert per["body.2"].p == 4 * 6 * 6
    assert per["body.2"].result().value == pytest.approx(
        dlrcore.dlr(conv.reshape(75, -1).numpy(), out.numpy()).value, abs=TOL
    )


# ---------------------------------------------------------------------------------------------- sequences
@pytest.fixture
def seq():
    torch.manual_seed(8)
    model = SeqModel()
    g = torch.Generator().manual_seed(9)
    ids = [torch.randint(0, 11, (6, 7), generator=g) for _ in range(3)]
    tok_labels = [torch.randint(0, 5, (6, 7), generator=g) for _ in range(3)]
    seq_labels = [torch.randint(0, 5, (6,), generator=g) for _ in range(3)]
    return model, ids, tok_labels, seq_labels


def test_sequence_tokens_are_samples(seq):
    model, ids, tok_labels, _ = seq
    phi, out = hand(model, ids)  # (18, 7, 8), (18, 7, 5)
    st = dlt.collect(model, list(zip(ids, tok_labels)), progress=False)
    assert (st.n, st.p, st.C, st.label_kind) == (18 * 7, 8, 5, "classes")
    ref = dlrcore.dlr(phi.reshape(-1, 8).numpy(), out.reshape(-1, 5).numpy()).value
    assert st.result().value == pytest.approx(ref, abs=TOL)
    y = torch.cat(tok_labels).reshape(-1)
    assert st.nc1().value == pytest.approx(dlrcore.nc1(phi.reshape(-1, 8).numpy(), y.numpy()).value, rel=1e-6)


def test_sequence_mean_and_last_pool(seq):
    model, ids, tok_labels, seq_labels = seq
    phi, out = hand(model, ids)
    data = [{"input_ids": i, "labels": y} for i, y in zip(ids, seq_labels)]
    mean = dlt.collect(model, data, sequence="mean", progress=False)
    assert (mean.n, mean.label_kind) == (18, "classes")
    ref = dlrcore.dlr(phi.mean(1).numpy(), out.mean(1).numpy()).value
    assert mean.result().value == pytest.approx(ref, abs=TOL)
    last = dlt.collect(model, data, sequence="last", progress=False)
    assert last.result().value == pytest.approx(dlrcore.dlr(phi[:, -1].numpy(), out[:, -1].numpy()).value, abs=TOL)
    # per-token labels with "last": the last token's label
    last_tok = dlt.collect(model, list(zip(ids, tok_labels)), sequence="last", progress=False)
    assert last_tok.label_kind == "classes"
    y_last = torch.cat(tok_labels)[:, -1]
    assert last_tok.nc1().value == pytest.approx(dlrcore.nc1(phi[:, -1].numpy(), y_last.numpy()).value, rel=1e-6)
    # layer-wise with pooling: the embedding output (input of "mix") pooled the same way
    per = dlt.collect(model, ids, layers=["mix"], sequence="mean", progress=False)
    with torch.no_grad():
        emb = torch.cat([model.emb(i) for i in ids]).mean(1)
    assert per["mix"].result().value == pytest.approx(dlrcore.dlr(emb.numpy(), out.mean(1).numpy()).value, abs=TOL)
    with pytest.raises(ValueError, match="sequence must be one of"):
        dlt.collect(model, ids, sequence="max")


def test_sequence_labels_that_do_not_match_tokens_are_dropped_with_a_warning(seq):
    model, ids, _, seq_labels = seq
    with pytest.warns(UserWarning, match="labels dropped.*token layout"):
        st = dlt.collect(model, list(zip(ids, seq_labels)), progress=False)
    assert st.label_kind == "none" and st.n == 18 * 7


# ---------------------------------------------------------------------------------------------- progress
def test_progress_display_on_stderr(mlp, monkeypatch, capsys):
    dlt.collect(mlp, mlp_data(3), progress=True)
    assert capsys.readouterr().err == ""  # short passes print nothing
    monkeypatch.setattr(dlt, "PROGRESS_DELAY", 0.0)
    dlt.collect(mlp, mlp_data(3), progress=True)
    err = capsys.readouterr().err
    assert "3/3 batches" in err and "120 samples" in err
    dlt.collect(mlp, (b for b in mlp_data(3)), progress=True)
    assert "3 batches, 120 samples" in capsys.readouterr().err
    dlt.collect(mlp, mlp_data(3), progress=False)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------- Tracker
def test_tracker_records_every_n_steps_and_plots(mlp, tmp_path):
    pytest.importorskip("matplotlib")
    train = mlp_data(11, bs=16, seed=10)  # steps 0..10: the last step is measured
    held_out = mlp_data(2, bs=50, seed=11)
    opt = torch.optim.SGD(mlp.parameters(), lr=0.1)
    tracker = dlt.Tracker(mlp, held_out, every=5, spectrum=True)
    mlp.train()
    returned = []
    for step, (x, y) in enumerate(train):
        loss = nn.functional.cross_entropy(mlp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        returned.append(tracker.step(step, test_acc=0.1 * step, loss=loss.item()))
        assert mlp.training and mlp.body[2].training  # training mode kept for the loop
    assert [r["step"] for r in tracker.records] == [0, 5, 10]
    assert [r is not None for r in returned] == [s % 5 == 0 for s in range(11)]
    assert returned[5] is tracker.records[1]
    rec = tracker.records[-1]
    assert {"step", "dlr", "output_rank", "n", "test_acc", "spectrum"} <= set(rec)
    assert rec["n"] == 100 and 0.0 <= rec["dlr"] <= 1.0
    again = dlt.collect(mlp, held_out, progress=False).result()
    assert rec["dlr"] == pytest.approx(again.value, abs=1e-12) and rec["output_kernel"] == "span"
    assert rec["dlr_span"] == rec["dlr"] and rec["dlr_sqrt"] == pytest.approx(again.value_sqrt, abs=1e-12)
    fig = dlrcore.plot.trajectory(tracker.records, tmp_path / "dlr.png")
    assert (tmp_path / "dlr.png").stat().st_size > 0
    # both measures are drawn, each from its own record key
    assert [line.get_label() for ax in fig.axes for line in ax.get_lines()] == ["D_LR", "D_half", "test_acc"]
    np.testing.assert_allclose(fig.axes[0].get_lines()[1].get_ydata(), [r["dlr_sqrt"] for r in tracker.records])
    half = dlt.Tracker(mlp, held_out, every=5, output_kernel="sqrt").measure(11)
    assert half["dlr"] == half["dlr_sqrt"] == pytest.approx(again.value_sqrt, abs=1e-12)
    with pytest.raises(ValueError, match="output_kernel"):
        dlt.Tracker(mlp, held_out, output_kernel="half")
    spectra = [dlrcore.Spectrum.from_dict(r["spectrum"]) for r in tracker.records]
    dlrcore.plot.spectrum(spectra, tmp_path / "spectra.png")
    assert (tmp_path / "spectra.png").stat().st_size > 0
    with pytest.raises(ValueError, match="every"):
        dlt.Tracker(mlp, held_out, every=0)


# ---------------------------------------------------------------------------------------------- import isolation
def test_import_dlrcore_does_not_import_torch():
    code = (
        "import sys, dlrcore, dlrcore.adapters, dlrcore.stats; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'dlrcore.adapters.torch' not in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_collect_and_tracker_with_jackknife_blocks_carry_standard_errors_to_records_and_bands():
    """collect(blocks=) gives the same value as without blocks, with a standard error; Tracker records carry
    <key>_stderr for both measures, and plot.trajectory draws them as bands."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    data = [(torch.randn(200, 6), torch.randint(0, 4, (200,))) for _ in range(4)]
    plain = dlt.collect(net, data, progress=False).result()
    blocked = dlt.collect(net, data, progress=False, blocks=10).result()
    assert blocked.blocks == 10 and blocked.stderr > 0
    assert abs(blocked.value - plain.value) < 1e-10
    tracker = dlt.Tracker(net, data, every=1, blocks=10)
    tracker.step(0)
    tracker.step(1)
    rec = tracker.records[0]
    assert rec["dlr_span_stderr"] == pytest.approx(blocked.stderr_span, rel=1e-9)
    assert rec["dlr_sqrt_stderr"] == pytest.approx(blocked.stderr_sqrt, rel=1e-9)
    pytest.importorskip("matplotlib")
    import dlrcore.plot

    assert len(dlrcore.plot.trajectory(tracker.records).axes[0].collections) == 2
