"""Tests of the loaders for the real example data in ../shared/data."""

import itertools
import json

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from scaleseg.datasets import (
    ExpertSample,
    InstanceSample,
    load_dsb2018,
    load_pv_hc,
    pv_hc_metadata,
    shared_data_dir,
)
from scaleseg.datasets._shared import ENV_VAR


@pytest.fixture(scope="module")
def data_dir():
    try:
        return shared_data_dir()
    except FileNotFoundError as err:
        pytest.skip(f"shared data not available: {err}")


@pytest.fixture(scope="module")
def pv(data_dir):
    return load_pv_hc(root=data_dir)


def dice(a, b):
    total = a.sum() + b.sum()
    return 2.0 * np.logical_and(a, b).sum() / total if total else np.nan


@pytest.mark.shared_data
def test_pv_hc_counts_shapes_dtypes(pv):
    assert len(pv) == 36
    assert [s.name for s in pv] == sorted(s.name for s in pv)
    for s in pv:
        assert isinstance(s, ExpertSample)
        assert s.image.shape == (1, 1024, 1024) and s.image.dtype == np.uint8
        assert list(s.experts) == [f"expert_{k}" for k in range(1, 6)]
        for mask in s.experts.values():
            assert mask.shape == (1024, 1024) and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 1}


@pytest.mark.shared_data
def test_pv_hc_expert_agreement_matches_readme(pv):
    # README: mean pairwise expert Dice 0.786; masks align with the PV channel (ratio 3.3).
    pairwise = [
        dice(s.experts[a] > 0, s.experts[b] > 0)
        for s in pv
        for a, b in itertools.combinations(s.experts, 2)
    ]
    assert 0.77 < np.nanmean(pairwise) < 0.80
    image = np.concatenate([s.image[0].ravel() for s in pv]).astype(float)
    fg = np.concatenate([s.experts["expert_1"].ravel() for s in pv]) > 0
    assert 2.5 < image[fg].mean() / image[~fg].mean() < 4.5


@pytest.mark.shared_data
def test_pv_hc_metadata(data_dir, pv):
    table = pv_hc_metadata(root=data_dir)
    assert len(table) == 36
    assert sorted(table["name"]) == [s.name for s in pv]
    assert set(table["Area"]) <= {"CA1", "CA3", "DG"}


@pytest.mark.shared_data
def test_pv_hc_names_selects_and_reports_missing(data_dir):
    (s,) = load_pv_hc("0004", root=data_dir)
    assert s.name == "0004"
    assert [x.name for x in load_pv_hc(["0006.png", "0001"], root=data_dir)] == ["0006", "0001"]
    with pytest.raises(FileNotFoundError, match="9999"):
        load_pv_hc(["9999"], root=data_dir)


@pytest.mark.shared_data
@pytest.mark.parametrize(("subset", "count"), [("fluo", 38), ("ood", 12)])
def test_dsb2018_counts_and_manifest(data_dir, subset, count):
    samples = load_dsb2018(subset, root=data_dir)
    assert len(samples) == count
    manifest = json.loads((data_dir / "dsb2018_stage1_fixed_subset" / "manifest.json").read_text())
    by_name = {entry["short"]: entry for entry in manifest}
    for s in samples:
        assert isinstance(s, InstanceSample) and s.kind == subset
        assert s.image.dtype == np.uint8 and s.image.ndim == 3
        assert s.instances.dtype == np.uint32 and s.instances.shape == s.image.shape[1:]
        entry = by_name[s.name]
        assert list(s.instances.shape) == entry["shape"][:2]
        assert np.count_nonzero(np.unique(s.instances)) == entry["n_instances"]
    channels = sorted(s.image.shape[0] for s in samples)
    assert channels == ([1] * 38 if subset == "fluo" else [1] * 4 + [3] * 8)


@pytest.mark.shared_data
def test_dsb2018_rejects_unknown_subset(data_dir):
    with pytest.raises(ValueError, match="subset"):
        load_dsb2018("brightfield", root=data_dir)


@pytest.mark.shared_data
def test_env_var_pointing_to_data_is_used(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(data_dir))
    monkeypatch.chdir(tmp_path)
    assert shared_data_dir() == data_dir.resolve()


def test_env_var_pointing_to_empty_dir_gives_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=ENV_VAR) as info:
        shared_data_dir()
    assert str(tmp_path) in str(info.value)
    assert "pv_hc_multiexpert_deepflash_temp" in str(info.value)
    with pytest.raises(FileNotFoundError, match=ENV_VAR):
        load_pv_hc()
    with pytest.raises(FileNotFoundError, match=ENV_VAR):
        load_dsb2018()


def _fake_pv(root, n_experts=2):
    base = root / "pv_hc_multiexpert_deepflash_temp"
    rng = np.random.default_rng(0)
    (base / "images").mkdir(parents=True)
    iio.imwrite(base / "images" / "0001.png", rng.integers(0, 255, (32, 48), dtype=np.uint8))
    for k in range(1, n_experts + 1):
        (base / "labels" / f"expert_{k}").mkdir(parents=True)
        mask = (rng.random((32, 48)) > 0.7).astype(np.uint8) * 255
        iio.imwrite(base / "labels" / f"expert_{k}" / "0001_Parv.png", mask)
    return base


def test_pv_loader_on_fake_tree(tmp_path):
    _fake_pv(tmp_path)
    (s,) = load_pv_hc(root=tmp_path)
    assert s.image.shape == (1, 32, 48) and list(s.experts) == ["expert_1", "expert_2"]
    assert set(np.unique(s.experts["expert_2"])) == {0, 1}


def test_pv_missing_mask_is_named(tmp_path):
    base = _fake_pv(tmp_path)
    (base / "labels" / "expert_2" / "0001_Parv.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"expert_2.0001_Parv\.png"):
        load_pv_hc(root=tmp_path)


def test_unreadable_file_is_named(tmp_path):
    base = _fake_pv(tmp_path)
    (base / "labels" / "expert_1" / "0001_Parv.png").write_bytes(b"not a png")
    with pytest.raises(OSError, match=r"cannot read .*0001_Parv\.png"):
        load_pv_hc(root=tmp_path)


def test_dsb_loader_on_fake_tree(tmp_path):
    base = tmp_path / "dsb2018_stage1_fixed_subset" / "ood_brightfield_stained"
    (base / "images").mkdir(parents=True)
    (base / "labels").mkdir()
    rgba = np.random.default_rng(0).integers(0, 255, (16, 20, 4), dtype=np.uint8)
    iio.imwrite(base / "images" / "abc.png", rgba)
    labels = np.zeros((16, 20), np.uint16)
    labels[2:6, 3:9] = 7
    tifffile.imwrite(base / "labels" / "abc.tif", labels)
    iio.imwrite(base / "images" / "def.png", rgba[..., 0])
    (s,) = load_dsb2018("ood", names="abc", root=tmp_path)
    assert s.kind == "ood" and s.image.shape == (3, 16, 20)
    np.testing.assert_array_equal(s.image, np.moveaxis(rgba[..., :3], -1, 0))
    assert s.instances.dtype == np.uint32 and s.instances.max() == 7
    with pytest.raises(FileNotFoundError, match=r"def\.tif"):
        load_dsb2018("ood", root=tmp_path)
