"""Training and inference on a chosen device: the same code on the CPU here, and on CUDA where
torch sees a GPU (skipped otherwise, with the reason). benchmarks/gpu_check.sh runs this file on
a GPU machine after installing requirements-gpu.txt."""
import pickle

import numpy as np
import pytest
import torch

from desom.checkpoint import load_checkpoint, save_checkpoint
from desom.inference import DesomPredictor, default_device
from desom.model import DESOMConfig, build_desom
from desom.training import default_train_precision, train_desom

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NO_CUDA = None if torch.cuda.is_available() else (
    "torch is a CPU build (requirements-gpu.txt installs a CUDA one)" if torch.version.cuda is None
    else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(NO_CUDA is not None, reason=str(NO_CUDA)))]

TINY1 = dict(conv_filters=(4, 8, 8), dense_units=32, latent_dim=8, map_rows=3, map_cols=4,
             batch_size=16, iterations=60, t_max=3.0, seed=0)
TINY2 = dict(input_shape=(36,), hidden_dims=(24, 16), latent_dim=6, map_rows=3, map_cols=3,
             batch_size=16, iterations=60, seed=0)


def blobs(n=200, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32] - 15.5
    sig = rng.uniform(1.5, 5.0, n)[:, None, None]
    return np.exp(-(xx ** 2 + yy ** 2) / (2 * sig ** 2)).astype(np.float32)


def histos(n=120, seed=0):
    rng = np.random.default_rng(seed)
    types = rng.dirichlet(np.full(36, 0.3), size=4)
    p = rng.gamma(50 * types[rng.integers(4, size=n)] + 1e-3)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def test_device_choice_and_its_errors():
    assert default_device(None) == default_device("auto")
    assert default_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert default_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="only cpu and cuda"):
        default_device("meta")
    with pytest.raises(ValueError, match="unknown device"):
        default_device("gpu-please")
    if NO_CUDA:
        with pytest.raises(ValueError, match="CPU build|sees no CUDA device"):
            default_device("cuda")
        with pytest.raises(ValueError, match="CPU build|sees no CUDA device"):
            DesomPredictor(build_desom(DESOMConfig.desom1(**TINY1)), device="cuda")
        with pytest.raises(ValueError, match="CPU build|sees no CUDA device"):
            train_desom(build_desom(DESOMConfig.desom1(**TINY1)), blobs(20), progress=False, device="cuda")
    else:
        with pytest.raises(ValueError, match="CUDA device"):
            default_device(f"cuda:{torch.cuda.device_count()}")


def test_default_training_precision_follows_the_device():
    assert default_train_precision("cpu") in ("float32", "bf16")
    if not NO_CUDA:
        assert default_train_precision("cuda") == ("bf16" if torch.cuda.is_bf16_supported() else "float32")


@pytest.mark.parametrize("device", DEVICES)
def test_desom1_trains_and_predicts_on_the_device(device, tmp_path):
    """The archive's DESOM-1 path on `device`: training (bf16 autocast where the device runs it,
    channels-last), a checkpoint that loads on the CPU, and a predictor on the device whose BMUs
    agree with the CPU's."""
    x = blobs()
    cfg = DESOMConfig.desom1(**TINY1)
    model = build_desom(cfg)
    precision = default_train_precision(device)
    history = train_desom(model, x, cfg, progress=False, device=device, precision=precision,
                          channels_last=True, probe=x[:50, None], probe_every=30)
    assert next(model.parameters()).device.type == device
    assert np.isfinite(history.column("loss")).all()
    assert model.map_order is not None
    path = tmp_path / "d1.pt"
    save_checkpoint(path, model, cfg)
    on_cpu = load_checkpoint(path).model
    assert next(on_cpu.parameters()).device.type == "cpu"
    # float32 on both sides: the comparison is of devices, not of precisions
    here = DesomPredictor(path, device=device, precision="float32", compile=False).predict(x)
    cpu = DesomPredictor(on_cpu, device="cpu", precision="float32", compile=False).predict(x)
    assert (here.bmu == cpu.bmu).mean() >= 0.99
    np.testing.assert_allclose(here.activations.sum(1), 1.0, atol=1e-5)
    # (CUDA convolutions run in TF32 by default: close, not equal)
    np.testing.assert_allclose(here.quantization, cpu.quantization, rtol=5e-2, atol=1e-3)
    # the predictor in the model's own precision runs on the device too
    auto = DesomPredictor(path, device=device, compile=False)
    assert auto.device.type == device and auto.precision == ("bf16-autocast" if precision == "bf16" else "float32")
    assert len(auto.predict(x[:10]).bmu) == 10


@pytest.mark.parametrize("device", DEVICES)
def test_desom2_trains_and_resumes_across_devices(device, tmp_path):
    """DESOM-2 on `device`, stopped half way and resumed from its checkpoint on the CPU: the
    state written on one device continues on another."""
    h = histos()
    cfg = DESOMConfig.desom2(**TINY2, checkpoint_every=30)
    model = build_desom(cfg)
    ckpt = tmp_path / "run-{phase}-{iteration}.pt"
    train_desom(model, h, cfg, progress=False, device=device, checkpoint_path=ckpt)
    assert next(model.parameters()).device.type == device
    half = tmp_path / "run-joint-30.pt"
    resumed = build_desom(cfg)
    train_desom(resumed, h, cfg, progress=False, device="cpu", resume_from=half)
    assert next(resumed.parameters()).device.type == "cpu"
    pred = DesomPredictor(resumed, device=device).predict(h)
    assert pred.bmu.min() >= 0 and pred.bmu.max() < 9
    if device == "cpu":   # the same device all along: bit for bit what the straight run gave
        for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.skipif(NO_CUDA is not None, reason=str(NO_CUDA))
def test_cuda_predictor_pickles_to_the_cpu_side():
    """A predictor made on a GPU machine pickles (a Dask task could carry it) with its encoder."""
    pred = DesomPredictor(build_desom(DESOMConfig.desom1(**TINY1)), device="cuda", compile=False)
    again = pickle.loads(pickle.dumps(pred))
    x = blobs(20)
    assert (again.predict(x).bmu == pred.predict(x).bmu).all()
