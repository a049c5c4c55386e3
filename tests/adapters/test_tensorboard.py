"""TensorBoard output of the torch Tracker and the Keras callback (issue 15): written to a temporary log folder and
read back from the event files, tags, steps and values, and the spectrum figure as an image."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util

from dlrcore.adapters.tensorboard import SCALAR_NAMES, SummaryLog, record_scalars

SCALARS = [f"dlr/{n}" for n in SCALAR_NAMES]


def _events(logdir) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[tuple[int, np.ndarray]]]]:
    """{tag: [(step, value)]} of the scalars and {tag: [(step, RGB image)]} of the images under ``logdir``."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    images: dict[str, list[tuple[int, np.ndarray]]] = {}
    paths = sorted(logdir.rglob("events.out.tfevents.*"))
    assert paths, f"no event file under {logdir}"
    for path in paths:
        for event in EventFileLoader(str(path)).Load():  # torch's simple values come back as tensors too
            for v in event.summary.value:
                plugin = v.metadata.plugin_data.plugin_name
                arr = tensor_util.make_ndarray(v.tensor)
                if plugin == "scalars":
                    scalars.setdefault(v.tag, []).append((event.step, float(arr)))
                elif plugin == "images":  # [width, height, PNG bytes]
                    from matplotlib.image import imread

                    png = imread(io.BytesIO(arr[2]), format="png")
                    assert png.shape[1::-1] == (int(arr[0]), int(arr[1]))
                    images.setdefault(v.tag, []).append((event.step, png))
    return scalars, images


def _check_scalars(scalars, records, key="dlr"):
    for name, tag in zip(SCALAR_NAMES, [f"{key}/{n}" for n in SCALAR_NAMES]):
        assert [s for s, _ in scalars[tag]] == [r["step"] for r in records], tag
        want = [record_scalars(r, key)[name] for r in records]
        assert [v for _, v in scalars[tag]] == pytest.approx(want, rel=1e-6, abs=1e-7), tag  # float32 on disk


def test_torch_tracker_writes_scalars_and_spectrum_figures(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    from dlrcore.adapters.torch import Tracker

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))
    held_out = [(torch.randn(30, 5), torch.randint(0, 3, (30,))) for _ in range(2)]
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    tracker = Tracker(net, held_out, every=4, spectrum=True, tensorboard=tmp_path / "runs")
    for step in range(9):
        x, y = held_out[step % 2]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        tracker.step(step)
    tracker.close()
    assert [r["step"] for r in tracker.records] == [0, 4, 8]
    scalars, images = _events(tmp_path / "runs")
    assert set(SCALARS) <= set(scalars)
    _check_scalars(scalars, tracker.records)
    assert [s for s, _ in images["dlr/spectrum"]] == [0, 4, 8]
    img = images["dlr/spectrum"][0][1]
    assert img.shape[0] > 100 and img.shape[1] > 2 * img.shape[0]  # the three panels side by side
    assert img.std() > 0  # something was drawn


def test_torch_tracker_with_a_writer_of_yours(tmp_path):
    torch = pytest.importorskip("torch")
    from torch.utils.tensorboard import SummaryWriter

    from dlrcore.adapters.torch import Tracker

    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    writer = SummaryWriter(log_dir=str(tmp_path / "mine"))
    tracker = Tracker(net, [torch.randn(40, 4)], every=2, tensorboard=writer, output_kernel="sqrt")
    for step in range(5):
        tracker.step(step)
    tracker.close()  # flushes; the writer is yours and stays open
    writer.add_scalar("mine/other", 1.0, 7)
    writer.close()
    scalars, images = _events(tmp_path / "mine")
    _check_scalars(scalars, tracker.records)
    assert [v for _, v in scalars["dlr/value"]] == pytest.approx([r["dlr_sqrt"] for r in tracker.records], abs=1e-7)
    assert not images and scalars["mine/other"] == [(7, 1.0)]


def test_keras_callback_writes_tf_summaries(tmp_path):
    keras = pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    pytest.importorskip("matplotlib")
    from dlrcore.adapters.keras import DLRKerasCallback

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0).astype("int64")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = DLRKerasCallback((x[:48], y[:48]), every_n_steps=4, key="richness", spectrum=True,
                          tensorboard=str(tmp_path / "keras"))
    model.fit(x, y, epochs=2, batch_size=16, callbacks=[cb], verbose=0)  # 12 steps: measured at 4, 8, 12
    assert [r["step"] for r in cb.records] == [4, 8, 12]
    scalars, images = _events(tmp_path / "keras")
    _check_scalars(scalars, cb.records, key="richness")
    assert [s for s, _ in images["richness/spectrum"]] == [4, 8, 12]


def test_summary_log_refuses_what_it_cannot_write_to(tmp_path):
    with pytest.raises(TypeError, match="log folder"):
        SummaryLog(object())
    with pytest.raises(ValueError, match="flavour"):
        SummaryLog(tmp_path, flavour="mxnet")


def test_missing_matplotlib_skips_the_figure_with_one_warning(monkeypatch):
    import dlrcore.adapters.tensorboard as tb

    def no_mpl(*args, **kwargs):
        raise ImportError("dlrcore.plot needs matplotlib: pip install 'dlrcore[plot]'")

    monkeypatch.setattr(tb, "spectrum_image", no_mpl)
    written: list[str] = []

    class Writer:
        def add_scalar(self, tag, value, global_step=None):
            written.append(tag)

        def add_image(self, *args, **kwargs):  # pragma: no cover - must not be called
            raise AssertionError("no image without matplotlib")

    log = SummaryLog(Writer())
    rec = {"step": 1, "dlr": 0.5, "dlr_span": 0.5, "dlr_sqrt": 0.2, "spectrum": {"k": 1}}
    with pytest.warns(UserWarning, match="matplotlib"):
        log.write(rec)
    log.write(rec)  # no second warning (the test run turns none into an error, but there is none)
    assert written == ["dlr/value", "dlr/span", "dlr/sqrt"] * 2 and not log.images


def test_blocked_tracker_writes_the_jackknife_errors_too():
    """With blocks=, the records carry standard errors and the writer gets <key>/stderr, span_stderr, sqrt_stderr
    equal to the result's."""
    torch = pytest.importorskip("torch")
    from dlrcore.adapters.torch import Tracker

    class Recorder:
        def __init__(self):
            self.scalars = {}

        def add_scalar(self, tag, value, global_step=None):
            self.scalars[tag] = value

        def flush(self):
            pass

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 24), torch.nn.ReLU(), torch.nn.Linear(24, 3))
    data = [(torch.randn(300, 5), torch.randint(0, 3, (300,)))]
    writer = Recorder()
    rec = Tracker(net, data, every=1, blocks=10, tensorboard=writer).measure(0)
    assert writer.scalars["dlr/stderr"] == pytest.approx(rec["dlr_stderr"]) and rec["dlr_stderr"] > 0
    assert writer.scalars["dlr/span_stderr"] == pytest.approx(rec["dlr_span_stderr"])
    assert writer.scalars["dlr/sqrt_stderr"] == pytest.approx(rec["dlr_sqrt_stderr"])
