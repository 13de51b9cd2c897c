"""Tests of the synthetic fluorescence generator and its simulated experts."""

import itertools
import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from scaleseg.datasets import OOD_KINDS, SyntheticSample, make_dataset, make_sample


def dice(a, b):
    a, b = a > 0, b > 0
    total = a.sum() + b.sum()
    return 2.0 * (a & b).sum() / total if total else 1.0


def far_background(instances, distance=6):
    return ~ndi.binary_dilation(instances > 0, iterations=distance)


def noise_std(image, mask):
    """Noise std from horizontal neighbour differences inside ``mask`` (smooth background cancels)."""
    pair = mask[:, :-1] & mask[:, 1:]
    diff = image[:, 1:].astype(np.float64) - image[:, :-1]
    return diff[pair].std() / np.sqrt(2.0)


def measured_snr(sample, channel=0):
    """(mean object intensity - mean intensity of a ring 4-6 px around objects) / noise std."""
    image = sample.image[channel].astype(np.float64)
    fg = sample.instances > 0
    ring = ndi.binary_dilation(fg, iterations=6) & ~ndi.binary_dilation(fg, iterations=3)
    return (image[fg].mean() - image[ring].mean()) / noise_std(image, far_background(fg, 4))


def object_coverage(mask, instances):
    """Fraction of each ground-truth instance covered by ``mask`` (labels 1..N)."""
    index = np.arange(1, int(instances.max()) + 1)
    return np.asarray(ndi.mean((mask > 0).astype(np.float64), instances, index))


def merged_components(mask, instances, min_cover=0.3):
    """Number of connected components of ``mask`` that cover >= 2 instances by ``min_cover``."""
    comps, n = ndi.label(mask > 0, structure=np.ones((3, 3)))
    merged = 0
    for c in range(1, n + 1):
        inside = instances[comps == c]
        labels, counts = np.unique(inside[inside > 0], return_counts=True)
        areas = np.bincount(instances.ravel())[labels]
        merged += int(np.sum(counts >= min_cover * areas) >= 2)
    return merged


def false_components(mask, instances):
    """Number of connected components of ``mask`` that do not touch any instance."""
    comps, n = ndi.label(mask > 0, structure=np.ones((3, 3)))
    hit = np.unique(comps[instances > 0])
    return n - int(np.count_nonzero(hit))


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(16, seed=0)


def assert_samples_equal(a, b):
    assert a.name == b.name
    assert a.image.tobytes() == b.image.tobytes()
    assert a.instances.tobytes() == b.instances.tobytes()
    assert a.semantic.tobytes() == b.semantic.tobytes()
    assert a.experts.keys() == b.experts.keys()
    for key in a.experts:
        assert a.experts[key].tobytes() == b.experts[key].tobytes()
    assert json.dumps(a.meta, sort_keys=True) == json.dumps(b.meta, sort_keys=True)


@pytest.mark.parametrize("ood", [None, *OOD_KINDS])
def test_same_seed_gives_identical_sample(ood):
    kwargs = {"shape": (96, 128), "n_channels": 2, "n_classes": 2, "ood": ood}
    assert_samples_equal(make_sample(11, **kwargs), make_sample(11, **kwargs))


def test_different_seed_gives_different_sample():
    a, b = make_sample(1), make_sample(2)
    assert not np.array_equal(a.image, b.image)
    assert not np.array_equal(a.instances, b.instances)
    assert not np.array_equal(a.experts["expert_1"], b.experts["expert_1"])


@pytest.mark.parametrize("shape", [(64, 96), (256, 256)])
@pytest.mark.parametrize("n_channels", [1, 3])
def test_shapes_and_dtypes(shape, n_channels):
    s = make_sample(3, shape=shape, n_channels=n_channels, n_experts=4)
    assert isinstance(s, SyntheticSample)
    assert s.image.shape == (n_channels, *shape) and s.image.dtype == np.uint16
    assert s.instances.shape == shape and s.instances.dtype == np.uint32
    assert s.semantic.shape == shape and s.semantic.dtype == np.uint8
    assert list(s.experts) == ["expert_1", "expert_2", "expert_3", "expert_4"]
    for mask in s.experts.values():
        assert mask.shape == shape and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1}
    assert s.ood is None and s.name == "syn_0003"
    meta = json.loads(json.dumps(s.meta))  # JSON-serialisable
    assert meta["seed"] == 3 and meta["snr"] == 8.0
    assert all(len(v) == meta["n_objects"] for v in meta["objects"].values())


def test_instances_consistent_with_semantic(dataset):
    for s in dataset:
        n = s.meta["n_objects"]
        assert n > 5
        np.testing.assert_array_equal(np.unique(s.instances), np.arange(n + 1))
        np.testing.assert_array_equal(s.semantic > 0, s.instances > 0)
        classes = ndi.maximum(s.semantic, s.instances, np.arange(1, n + 1))
        np.testing.assert_array_equal(classes, s.meta["objects"]["class"])
        np.testing.assert_array_equal(
            np.bincount(s.instances.ravel())[1:], s.meta["objects"]["area"]
        )


def test_objects_touch_and_some_are_dim(dataset):
    n_objects = sum(s.meta["n_objects"] for s in dataset)
    n_touching = sum(len(s.meta["touching_pairs"]) for s in dataset)
    assert 0.1 * n_objects < n_touching < 0.5 * n_objects
    snr = np.concatenate([s.meta["objects"]["snr"] for s in dataset])
    dim = np.concatenate([s.meta["objects"]["dim"] for s in dataset])
    assert 0.1 < dim.mean() < 0.3
    target = dataset[0].meta["snr"]
    assert np.max(snr[dim]) < 0.5 * target < np.percentile(snr[~dim], 5)
    assert np.median(snr[dim]) < 0.3 * target < 0.9 * target < np.median(snr[~dim])


def test_measured_snr_tracks_parameter():
    targets = [1.0, 2.0, 4.0, 8.0, 16.0]
    measured = [np.mean([measured_snr(make_sample(s, snr=t)) for s in range(3)]) for t in targets]
    assert np.all(np.diff(measured) > 0)
    np.testing.assert_allclose(measured, targets, rtol=0.1)


def test_background_is_structured_not_flat():
    s = make_sample(4, shape=(256, 256), n_objects=0)
    smooth = ndi.uniform_filter(s.image[0].astype(np.float64), 31)[32:-32, 32:-32]
    noise = noise_std(s.image[0], np.ones((256, 256), bool))
    assert smooth.std() > 0.5 * noise  # low-frequency illumination far above averaging noise


def test_expert_pairwise_dice_is_realistic(dataset):
    pairwise = [
        dice(s.experts[a], s.experts[b])
        for s in dataset
        for a, b in itertools.combinations(s.experts, 2)
    ]
    assert 0.65 < np.mean(pairwise) < 0.9
    for key in dataset[0].experts:
        vs_gt = np.mean([dice(s.experts[key], s.semantic) for s in dataset])
        assert 0.7 < vs_gt < 0.97


def test_expert_personalities_differ(dataset):
    area = {k: sum(int(s.experts[k].sum()) for s in dataset) for k in dataset[0].experts}
    gt = sum(int((s.semantic > 0).sum()) for s in dataset)
    # expert_1 conservative, expert_2 liberal, expert_3 balanced
    assert area["expert_1"] < area["expert_3"] < area["expert_2"]
    assert area["expert_1"] < gt < area["expert_2"]


def test_dim_objects_are_missed_more_often(dataset):
    dim_missed, bright_missed = [], []
    for s in dataset:
        n = s.meta["n_objects"]
        brightness = np.asarray(
            ndi.mean(s.image[0].astype(float), s.instances, np.arange(1, n + 1))
        )
        low, high = np.percentile(brightness, [25, 75])
        for mask in s.experts.values():
            missed = object_coverage(mask, s.instances) < 0.2
            dim_missed.extend(missed[brightness <= low])
            bright_missed.extend(missed[brightness >= high])
    assert np.mean(dim_missed) > 0.2
    assert np.mean(bright_missed) < 0.05
    assert np.mean(dim_missed) > 5 * np.mean(bright_missed)


def test_experts_merge_touching_neighbours(dataset):
    merged = {
        k: sum(merged_components(s.experts[k], s.instances) for s in dataset)
        for k in dataset[0].experts
    }
    gt = sum(merged_components(s.semantic, s.instances) for s in dataset)
    assert merged["expert_2"] > 10  # the liberal expert
    assert merged["expert_1"] < merged["expert_2"]
    # the instance ground truth is not merged in semantic terms only because objects touch
    assert gt > merged["expert_1"]


def test_experts_draw_false_objects(dataset):
    extra = {
        k: sum(false_components(s.experts[k], s.instances) for s in dataset)
        for k in dataset[0].experts
    }
    assert extra["expert_2"] > 5
    assert extra["expert_1"] < extra["expert_2"]
    assert sum(false_components(s.semantic, s.instances) for s in dataset) == 0


def test_expert_meta_matches_masks():
    s = make_sample(6)
    for key, mask in s.experts.items():
        info = s.meta["experts"][key]
        coverage = object_coverage(mask, s.instances)
        missed = np.asarray(info["missed"], dtype=int)
        assert np.all(coverage[missed - 1] < 0.3)  # at most grazed by a neighbour's outline
        assert {"personality", "bias_px", "jitter_px", "detect_snr", "merged"} <= info.keys()
    assert s.meta["experts"]["expert_1"]["personality"] == "conservative"
    assert s.meta["experts"]["expert_2"]["personality"] == "liberal"


def test_ood_variants_are_labelled_and_differ():
    seed = 21
    ref = make_sample(seed)
    far = far_background(ref.instances)
    fg = ref.instances > 0
    image = ref.image[0].astype(float)
    sigma = noise_std(image, far)
    ref_bright_bg = np.mean(image[far] > np.median(image[far]) + 5 * sigma)
    samples = {kind: make_sample(seed, ood=kind) for kind in OOD_KINDS}
    for kind, s in samples.items():
        assert s.ood == kind and s.meta["ood"] == kind and s.name.startswith(f"ood_{kind}_")
        np.testing.assert_array_equal(s.instances, ref.instances)  # same objects
        assert s.image.shape == ref.image.shape and s.image.dtype == np.uint16

    stain = samples["stain"].image[0].astype(float)
    assert image[fg].mean() > image[far].mean()
    assert stain[fg].mean() < 0.8 * stain[far].mean()  # absorbing objects on bright background

    for kind in ("vessels", "particles"):
        img = samples[kind].image[0].astype(float)
        bright_bg = np.mean(img[far] > np.median(img[far]) + 5 * sigma)
        assert bright_bg > max(0.01, 20 * ref_bright_bg), kind
    vessels = samples["vessels"].image[0].astype(float)
    particles = samples["particles"].image[0].astype(float)
    # particles: small isolated spots far brighter than any object; vessels: large connected tubes
    assert particles.max() > 3 * image[fg].max()
    tubes = ndi.label(far & (vessels > np.median(vessels[far]) + 5 * sigma))[0]
    assert np.bincount(tubes.ravel())[1:].max() > 300

    assert measured_snr(samples["noise"]) < 0.25 * measured_snr(ref)
    assert samples["noise"].meta["snr_effective"] < ref.meta["snr_effective"]


def test_multiclass_objects_differ_by_class():
    samples = make_dataset(4, seed=3, n_classes=3)
    area = {c: [] for c in (1, 2, 3)}
    brightness = {c: [] for c in (1, 2, 3)}
    agree = []
    for s in samples:
        assert set(np.unique(s.semantic)) <= {0, 1, 2, 3}
        n = s.meta["n_objects"]
        index = np.arange(1, n + 1)
        cls = np.asarray(s.meta["objects"]["class"])
        areas = np.bincount(s.instances.ravel())[1:]
        means = np.asarray(ndi.median(s.image[0].astype(float), s.instances, index))
        for c in (1, 2, 3):
            area[c].extend(areas[cls == c])
            brightness[c].extend(means[cls == c])
        for mask in s.experts.values():
            assert set(np.unique(mask)) <= {0, 1, 2, 3}
            both = (mask > 0) & (s.semantic > 0)
            agree.append(np.mean(mask[both] == s.semantic[both]))
    assert np.median(area[3]) > np.median(area[1]) > np.median(area[2])
    assert np.median(brightness[2]) > np.median(brightness[1]) > np.median(brightness[3])
    assert np.mean(agree) > 0.85


def test_multichannel_counterstains_follow_objects():
    s = make_sample(8, n_channels=3)
    fg = s.instances > 0
    far = far_background(s.instances)
    core = ndi.binary_erosion(fg, iterations=3)
    rim = fg & ~ndi.binary_erosion(fg, iterations=2)
    nuclear, membrane = s.image[1].astype(float), s.image[2].astype(float)
    assert nuclear[core].mean() > nuclear[far].mean() + 2 * noise_std(nuclear, far)
    assert membrane[rim].mean() > membrane[core].mean()
    assert 1.0 > np.corrcoef(s.image[0][fg], s.image[1][fg])[0, 1] > 0.0
    assert len({s.image[c].tobytes() for c in range(3)}) == 3


def test_make_dataset_names_ood_and_reproducibility():
    samples = make_dataset(7, seed=5, n_ood=5, shape=(64, 64))
    assert [s.ood for s in samples] == [
        None,
        None,
        "stain",
        "vessels",
        "particles",
        "noise",
        "stain",
    ]
    assert [s.name for s in samples][:3] == ["syn_0000", "syn_0001", "ood_stain_0002"]
    assert len({s.meta["seed"] for s in samples}) == 7
    again = make_sample(
        samples[3].meta["seed"], ood="vessels", name=samples[3].name, shape=(64, 64)
    )
    assert_samples_equal(again, samples[3])
    only = make_dataset(2, seed=5, n_ood=2, ood_kinds=("noise",), shape=(64, 64))
    assert [s.ood for s in only] == ["noise", "noise"]


def test_empty_image_and_no_experts():
    s = make_sample(0, n_objects=0, n_experts=0, shape=(64, 64))
    assert s.meta["n_objects"] == 0 and not s.instances.any() and s.experts == {}
    assert s.image.min() > 0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"seed": -1}, ValueError),
        ({"seed": 1.5}, TypeError),
        ({"seed": 0, "snr": 0.0}, ValueError),
        ({"seed": 0, "ood": "blur"}, ValueError),
        ({"seed": 0, "shape": (8, 64)}, ValueError),
        ({"seed": 0, "n_classes": 0}, ValueError),
    ],
)
def test_make_sample_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        make_sample(**kwargs)


def test_make_dataset_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_ood"):
        make_dataset(2, n_ood=3)
    with pytest.raises(ValueError, match="ood_kinds"):
        make_dataset(2, n_ood=1, ood_kinds=("blur",))
    with pytest.raises(TypeError, match="ood"):
        make_dataset(2, ood="noise")


def test_demo_plan_spreads_snr_over_every_split():
    """Each split's SNRs are the log-uniform quantiles (i + 1/2) / n of the range, shuffled:
    train and test images both span hard to easy, deterministically; OOD images get the
    geometric middle."""
    from scaleseg.datasets import demo_plan

    plan = demo_plan(24, 8, seed=0, snr=(2.0, 48.0))
    assert plan == demo_plan(24, 8, seed=0, snr=(2.0, 48.0))
    for split, n in (("train", 16), ("test", 8)):
        got = sorted(e["snr"] for e in plan if e["split"] == split)
        expected = [2.0 * 24.0 ** ((i + 0.5) / n) for i in range(n)]
        np.testing.assert_allclose(got, expected, atol=1e-3)
    ood_snr = [e["snr"] for e in plan if e["split"] == "ood"]
    np.testing.assert_allclose(ood_snr, np.sqrt(96.0), atol=1e-3)
    assert {e["split"] for e in plan} == {"train", "test", "ood"}
    assert [e["ood"] for e in plan if e["split"] == "ood"] == ["stain", "vessels", "particles",
                                                                "noise"] * 2  # fmt: skip
    other = demo_plan(24, 8, seed=1, snr=(2.0, 48.0))
    assert [e["snr"] for e in other] != [e["snr"] for e in plan]
    assert all(e["snr"] == 8.0 for e in demo_plan(6, 2))  # the default: one SNR for all
    assert sum(e["split"] == "test" for e in demo_plan(10, 0, test_fraction=0.5)) == 5
    with pytest.raises(ValueError, match="snr"):
        demo_plan(4, 0, snr=(3.0, 2.0))
    with pytest.raises(ValueError, match="test_fraction"):
        demo_plan(4, 0, test_fraction=1.0)
