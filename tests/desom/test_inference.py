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
