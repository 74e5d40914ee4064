"""Batched prediction: BMUs, quantization, soft activations, streams, bad input."""
import numpy as np
import pytest
import torch

from desom.inference import DesomPredictor, Prediction
from desom.model import DESOMConfig, build_desom
from desom.training import train_desom

TINY1 = dict(conv_filters=(4, 8, 8), dense_units=32, latent_dim=8, map_rows=3, map_cols=4,
             batch_size=16, iterations=200, t_max=3.0)


# Tiny models on a shared 2-core box: one torch thread (tests/desom/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32] - 15.5
    sig = rng.uniform(1.5, 5.0, 300)[:, None, None]
    x = np.exp(-(xx ** 2 + yy ** 2) / (2 * sig ** 2)).astype(np.float32)
    cfg = DESOMConfig.desom1(**TINY1)
    model = build_desom(cfg)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    train_desom(model, x, cfg, progress=False)
    torch.set_num_threads(n)
    return model, x


def test_prediction_fields_match_the_model(trained):
    model, x = trained
    pred = DesomPredictor(model, batch_size=64, precision="float32").predict(x, return_latent=True)
    assert isinstance(pred, Prediction) and len(pred) == 300
    assert pred.bmu.dtype == np.int64 and pred.quantization.dtype == np.float32
    assert pred.activations.shape == (300, 12) and pred.activations.dtype == np.float32
    assert pred.latent.shape == (300, 8)
    with torch.no_grad():
        _, z, d2 = model(torch.from_numpy(x))
    np.testing.assert_allclose(pred.latent, z.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(pred.bmu, d2.argmin(1).numpy())
    np.testing.assert_allclose(pred.quantization, d2.min(1).values.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pred.activations.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(pred.activations.argmax(1), pred.bmu)
    assert (pred.second_bmu != pred.bmu).all()
    assert len(np.unique(pred.bmu)) >= 6        # a trained map spreads the samples


def test_soft_activations_are_soft_for_typical_samples(trained):
    model, x = trained
    act = DesomPredictor(model, precision="float32").predict(x).activations
    top = np.sort(act, axis=1)[:, ::-1]
    assert np.median(top[:, 0]) < 0.95         # not one-hot
    assert np.median(top[:, 1]) > 0.01         # the runner-up keeps real weight
    assert np.median(top[:, 0] / top[:, 1]) > 1.0
    sharp = DesomPredictor(model, precision="float32", activation_temperature=0.1).predict(x).activations
    assert np.median(sharp.max(1)) > np.median(top[:, 0])


def test_streams_and_batch_sizes_give_the_same_answer(trained):
    model, x = trained
    ref = DesomPredictor(model, batch_size=1000, precision="float32").predict(x)
    small = DesomPredictor(model, batch_size=7, precision="float32")
    chunks = list(small.iter_predict(iter([x[:100], x[100:250], x[250:]])))
    assert max(len(c) for c in chunks) <= 7
    streamed = small.predict((x[i:i + 33] for i in range(0, 300, 33)))
    np.testing.assert_array_equal(streamed.bmu, ref.bmu)
    np.testing.assert_allclose(streamed.activations, ref.activations, atol=1e-4)
    lean = small.predict(x, return_activations=False)
    assert lean.activations is None and (lean.bmu == ref.bmu).all()
    empty = small.predict(np.zeros((0, 32, 32), np.float32))
    assert len(empty) == 0 and empty.activations.shape == (0, 12)


@pytest.mark.parametrize("precision", ["bf16", "bf16-autocast"])
def test_bf16_channels_last_path_agrees_with_float32(trained, precision):
    model, x = trained
    f32 = DesomPredictor(model, precision="float32", channels_last=False).predict(x)
    fast = DesomPredictor(model, precision=precision, channels_last=True).predict(x)
    default = DesomPredictor(model)
    assert default.precision == "float32" and default.channels_last    # the default DESOM-1 path
    assert (fast.bmu == f32.bmu).mean() > 0.8
    np.testing.assert_allclose(fast.activations.sum(1), 1.0, atol=1e-5)


def test_encoder_chunks_and_pool_before_relu_change_nothing(trained):
    from desom.inference import CPU_ENCODER_CHUNK, pool_before_relu

    model, x = trained
    feats = model.encoder.features
    moved = pool_before_relu(feats)
    kinds = [type(m).__name__ for m in moved]
    assert kinds == ["Conv2d", "MaxPool2d", "ReLU"] * 3
    t = torch.from_numpy(x[:50, None])
    with torch.no_grad():
        np.testing.assert_array_equal(moved(t).numpy(), feats(t).numpy())   # exact, not close
    whole = DesomPredictor(model, batch_size=300, precision="float32", compile=False, encoder_chunk=0)
    chunked = DesomPredictor(model, batch_size=300, precision="float32", compile=False, encoder_chunk=7)
    assert DesomPredictor(model, compile=False).encoder_chunk == CPU_ENCODER_CHUNK
    a, b = whole.predict(x, return_latent=True), chunked.predict(x, return_latent=True)
    np.testing.assert_array_equal(a.bmu, b.bmu)
    np.testing.assert_allclose(a.latent, b.latent, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="encoder_chunk"):
        DesomPredictor(model, encoder_chunk=-1)


def test_predictor_is_a_frozen_copy(trained):
    model, x = trained
    pred = DesomPredictor(model, precision="float32")
    before = pred.predict(x[:20]).bmu
    assert pred.version_id is None and pred.n_nodes == 12 and pred.map_shape == (3, 4)
    saved = model.som.prototypes.detach().clone()
    with torch.no_grad():
        model.som.prototypes.mul_(-1)
    try:
        np.testing.assert_array_equal(pred.predict(x[:20]).bmu, before)
    finally:
        with torch.no_grad():
            model.som.prototypes.copy_(saved)


def test_bad_input_is_refused(trained):
    model, x = trained
    pred = DesomPredictor(model)
    with pytest.raises(ValueError, match=r"got \(4, 1, 28, 28\)"):
        pred.predict(np.zeros((4, 1, 28, 28), np.float32))
    bad = x[:10].copy()
    bad[3, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pred.predict(bad)
    with pytest.raises(ValueError, match="batch 1"):
        pred.predict([x[:5], np.zeros((5, 16, 16), np.float32)])
    with pytest.raises(ValueError, match="numeric"):
        pred.predict(np.array([["a"] * 32] * 32)[None])
    with pytest.raises(ValueError, match="DESOM model"):
        DesomPredictor(42)
    with pytest.raises(ValueError, match="precision"):
        DesomPredictor(model, precision="fp8")
    with pytest.raises(ValueError, match="normaliser"):
        pred.predict_histos(np.zeros((2, 625)))


# -- torch.compile: the default for a DESOM-1 once a predictor has encoded COMPILE_MIN_SAMPLES ----

class _FakeCompiled(torch.nn.Module):
    """Stands in for torch.compile's wrapper: runs the module, counts calls, or fails."""

    def __init__(self, module, fail=False):
        super().__init__()
        self.module, self.fail, self.calls = module, fail, 0

    def forward(self, x):
        self.calls += 1
        if self.fail:
            raise RuntimeError("InductorError: no working C++ compiler")
        return self.module(x)


def test_compile_auto_waits_for_a_bulk_pass(trained, monkeypatch):
    import desom.inference as inf

    model, x = trained
    made = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: made.append(_FakeCompiled(m)) or made[-1])
    monkeypatch.setattr(inf, "compile_unavailable", lambda: None)
    monkeypatch.setattr(inf, "COMPILE_MIN_SAMPLES", 500)
    pred = DesomPredictor(model, batch_size=128)
    eager = DesomPredictor(model, compile=False).predict(x)
    assert not pred.compiled and pred.compile_skipped is None
    first = pred.predict(x)                 # 300 samples: still eager
    assert not pred.compiled and not made
    second = pred.predict(x)                # crosses 500 during this call: compiled from then on
    assert pred.compiled and made and made[0].calls >= 1 and pred.compile_seconds is not None
    assert (first.bmu == eager.bmu).all() and (second.bmu == eager.bmu).all()
    assert not DesomPredictor(model, compile=False).compiled


def test_compile_turned_off_and_failing_compile_falls_back(trained, monkeypatch, caplog):
    import logging

    import desom.inference as inf

    model, x = trained
    monkeypatch.setenv("DESOM_COMPILE", "0")
    off = DesomPredictor(model)
    assert off.compile_skipped == "turned off by DESOM_COMPILE=0" and not off._compile_pending
    monkeypatch.delenv("DESOM_COMPILE")
    monkeypatch.setattr(torch, "compile", lambda m, **kw: _FakeCompiled(m, fail=True))
    eager = DesomPredictor(model, compile=False).predict(x)
    pred = DesomPredictor(model, compile=True)
    assert pred.compiled
    with caplog.at_level(logging.WARNING, logger="desom.inference"):
        got = pred.predict(x)
    assert not pred.compiled and "no working C++ compiler" in pred.compile_error
    assert "runs eager" in caplog.text
    assert (got.bmu == eager.bmu).all()
    monkeypatch.setattr(inf.shutil, "which", lambda name: None)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    assert "no C++ compiler" in inf.compile_unavailable()
    with pytest.raises(ValueError, match="compile"):
        DesomPredictor(model, compile="sometimes")


def test_compiled_predictor_pickles_with_its_eager_encoder(trained, monkeypatch):
    import pickle

    model, x = trained
    monkeypatch.setattr(torch, "compile", lambda m, **kw: _FakeCompiled(m))
    pred = DesomPredictor(model, compile=True)
    pred.predict(x[:20])
    again = pickle.loads(pickle.dumps(pred))
    assert not again.compiled and again._compile_pending
    assert (again.predict(x).bmu == pred.predict(x).bmu).all()


@pytest.mark.slow
def test_torch_compile_agrees_with_eager_float32(trained):
    """The real torch.compile (inductor) path: BMUs agree with eager float32 for >= 99% of samples."""
    from desom.inference import compile_unavailable

    why = compile_unavailable()
    if why:
        pytest.skip(f"torch.compile cannot run here: {why}")
    model, x = trained
    eager = DesomPredictor(model, precision="float32", channels_last=False, compile=False).predict(x)
    pred = DesomPredictor(model, precision="float32", channels_last=True, compile=True, batch_size=128)
    got = pred.predict(x)
    if pred.compile_error:
        pytest.skip(f"torch.compile failed here and the predictor fell back to eager: {pred.compile_error}")
    assert pred.compiled and pred.compile_seconds is not None
    assert (got.bmu == eager.bmu).mean() >= 0.99
    np.testing.assert_allclose(got.activations.sum(1), 1.0, atol=1e-5)
