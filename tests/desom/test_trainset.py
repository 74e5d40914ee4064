"""Training sets: a bounded, order-independent sample; a set on disk read back in batches; a run
trained from disk (and resumed from a checkpoint) the same as from memory."""
import json

import numpy as np
import pytest
import torch

from desom.model import DESOMConfig, build_desom
from desom.trainset import (BottomKSample, DiskRows, TrainingSetError, cutout_keys, decode_unit, encode_unit,
                            open_training_set, select_offer, write_rows, write_training_set)
from desom.training import train_desom

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY1 = dict(conv_filters=(4, 8, 8), dense_units=32, latent_dim=8, map_rows=3, map_cols=3,
             batch_size=16, log_every=5)


def _exposures(n=12, seed=0, shape=(4, 4)):
    """Per exposure a different number of 'cutouts' in [0, 1]."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 1, (int(rng.integers(0, 60)),) + shape).astype(np.float32) for _ in range(n)]


def _reference_sample(exposures, k, seed):
    """The definition: the k smallest (key, exposure, position) over everything."""
    keys = np.concatenate([cutout_keys(seed, i, len(c)) for i, c in enumerate(exposures)])
    src = np.concatenate([np.full(len(c), i) for i, c in enumerate(exposures)])
    pos = np.concatenate([np.arange(len(c)) for c in exposures])
    pick = np.lexsort((pos, src, keys))[:k]
    return sorted(zip(src[pick].tolist(), pos[pick].tolist()))


@pytest.mark.parametrize("arrival", ["in order", "reversed", "shuffled"])
def test_the_bounded_sample_is_the_k_smallest_keys_whatever_the_arrival_order(arrival):
    exposures, k, seed = _exposures(), 70, 3
    order = list(range(len(exposures)))
    if arrival == "reversed":
        order = order[::-1]
    elif arrival == "shuffled":
        order = list(np.random.default_rng(1).permutation(order))
    sample = BottomKSample(k, (4, 4), buffer=16)   # a small buffer: many compactions
    peak = 0
    for i in order:
        # Each "worker" filters with the threshold the driver had when the task was sent.
        sample.offer(i, select_offer(exposures[i], seed=seed, source=i, threshold=sample.threshold))
        peak = max(peak, sample.count)
    slots, rows = sample.result()
    assert [tuple(r) for r in rows.tolist()] == _reference_sample(exposures, k, seed)
    assert peak <= k + 16   # never more than the set plus the buffer
    # The kept codes are those of the right cutouts.
    for slot, (src, pos) in zip(slots, rows):
        np.testing.assert_array_equal(sample.codes[slot], encode_unit(exposures[src][pos]))


def test_without_a_cap_everything_is_kept_in_exposure_order():
    exposures = _exposures(n=5)
    sample = BottomKSample(None, (4, 4))
    for i in (3, 0, 4, 1, 2):
        sample.offer(i, select_offer(exposures[i], seed=0, source=i))
    _, rows = sample.result()
    assert len(rows) == sum(len(c) for c in exposures)
    assert rows.tolist() == [[i, j] for i, c in enumerate(exposures) for j in range(len(c))]


def test_keys_are_prefix_stable_and_differ_between_exposures_and_seeds():
    np.testing.assert_array_equal(cutout_keys(5, 2, 10), cutout_keys(5, 2, 30)[:10])
    assert not np.array_equal(cutout_keys(5, 2, 10), cutout_keys(5, 3, 10))
    assert not np.array_equal(cutout_keys(5, 2, 10), cutout_keys(6, 2, 10))


def test_encoding_round_trips_to_a_sixty_thousandth_and_refuses_bad_values():
    x = np.random.default_rng(0).uniform(0, 1, 1000).astype(np.float32)
    assert np.abs(decode_unit(encode_unit(x)) - x).max() <= 0.5 / 65535 + 1e-7
    assert decode_unit(encode_unit(np.array([0.0, 1.0])))[[0, 1]].tolist() == [0.0, 1.0]
    for bad in (np.nan, 1.5, -0.1):
        with pytest.raises(TrainingSetError, match="outside"):
            encode_unit(np.array([0.5, bad]))


def _write_set(tmp_path, cutouts, name="set", **meta):
    sample = BottomKSample(None, cutouts.shape[1:])
    sample.offer(0, select_offer(cutouts, seed=0, source=0))
    return write_training_set(tmp_path / name, sample, {"seed": 0, **meta})


def test_a_set_on_disk_reads_rows_in_the_order_asked_with_repeats(tmp_path):
    cutouts = np.random.default_rng(2).uniform(0, 1, (50, 32, 32)).astype(np.float32)
    ts = _write_set(tmp_path, cutouts, stamps={"stretch": "asinh"})
    assert len(ts) == 50 and ts.meta["stamps"] == {"stretch": "asinh"} and ts.meta["n_cutouts"] == 50
    expect = decode_unit(encode_unit(cutouts))
    idx = np.array([7, 3, 3, 49, 0, 8, 9, 10])
    np.testing.assert_array_equal(ts.rows[idx], expect[idx])
    np.testing.assert_array_equal(ts.rows[5:9], expect[5:9])
    np.testing.assert_array_equal(ts.rows[-1], expect[-1])
    sub = ts.rows.subset([40, 2, 11])
    assert sub.shape == (3, 32, 32)
    np.testing.assert_array_equal(sub[np.array([2, 0])], expect[[11, 40]])
    assert ts.rows.with_row_shape((1, 32, 32))[np.array([4])].shape == (1, 1, 32, 32)
    assert ts.provenance().tolist() == [[0, j] for j in range(50)]
    with pytest.raises(IndexError):
        ts.rows[np.array([50])]
    with pytest.raises(TrainingSetError, match="not empty"):
        _write_set(tmp_path, cutouts)


def test_an_incomplete_or_damaged_set_is_refused_with_a_reason(tmp_path):
    with pytest.raises(TrainingSetError, match="not a folder"):
        open_training_set(tmp_path / "missing")
    (tmp_path / "half").mkdir()
    with pytest.raises(TrainingSetError, match="not a complete training set"):
        open_training_set(tmp_path / "half")
    ts = _write_set(tmp_path, np.zeros((5, 32, 32), np.float32), name="cut")
    meta = json.loads((ts.path / "set.json").read_text())
    meta["shape"] = [6, 32, 32]
    (ts.path / "set.json").write_text(json.dumps(meta))
    with pytest.raises(TrainingSetError, match="damaged"):
        open_training_set(ts.path)


def test_a_float_file_with_nan_is_caught_before_training(tmp_path):
    data = np.random.default_rng(0).uniform(0, 1, (30, 32, 32)).astype(np.float32)
    data[17, 3, 3] = np.nan
    np.save(tmp_path / "f.npy", data)
    cfg = DESOMConfig.desom1(iterations=2, **TINY1)
    with pytest.raises(ValueError, match="NaN"):
        train_desom(build_desom(cfg), DiskRows(tmp_path / "f.npy"), cfg, progress=False)


def test_training_from_disk_equals_training_from_memory_and_resumes_exactly(tmp_path):
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:32, :32] - 15.5
    sig = rng.uniform(1.5, 5.0, 120)[:, None, None]
    cutouts = np.clip(np.exp(-(xx ** 2 + yy ** 2) / (2 * sig ** 2)), 0, 1).astype(np.float32)
    ts = _write_set(tmp_path, cutouts)
    decoded = decode_unit(encode_unit(cutouts))
    probe = decoded[:20, None]
    cfg = DESOMConfig.desom1(iterations=12, pretrain_iterations=2, checkpoint_every=4, **TINY1)

    memory = build_desom(cfg)
    train_desom(memory, decoded[:, None], cfg, progress=False, probe=probe, probe_every=3)
    disk = build_desom(cfg)
    train_desom(disk, ts.rows, cfg, progress=False, probe=probe, probe_every=3,
                checkpoint_path=tmp_path / "ck-{phase}-{iteration}.pt")
    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    assert same(memory, disk)

    resumed = build_desom(cfg)
    train_desom(resumed, ts.rows, cfg, progress=False, probe=probe, probe_every=3,
                resume_from=tmp_path / "ck-joint-8.pt")
    assert same(disk, resumed)
    # The probe's churn is measured against the BMUs saved with the checkpoint, as without a stop.
    assert resumed.map_order == disk.map_order and disk.map_order["bmu_churn"] is not None


def test_write_rows_leaves_nothing_behind_when_it_fails(tmp_path):
    def broken(idx):
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        write_rows(tmp_path / "s", broken, np.arange(3), np.zeros((3, 2), np.int32), {})
    assert list(tmp_path.iterdir()) == []
    # A killed writer's staging folder (another process id) is cleared by the next write.
    (tmp_path / ".s.partial-999999").mkdir()
    (tmp_path / ".s.partial-999999" / "cutouts.npy").write_bytes(b"half")
    ts = write_rows(tmp_path / "s", lambda idx: np.zeros((len(idx), 4, 4), np.uint16), np.arange(3),
                    np.zeros((3, 2), np.int32), {})
    assert len(ts) == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["s"]
