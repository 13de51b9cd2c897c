"""Config models: deepflash2 defaults, JSON round trip, clear errors."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from scaleseg.config import (
    ConfigError,
    PredictConfig,
    RunConfig,
    from_dict,
    load_config,
    save_config,
)


def test_defaults_follow_the_paper():
    c = RunConfig()
    assert c.train.encoder == "tu-convnext_tiny" and c.train.arch == "Unet"
    assert (c.train.lr, c.train.weight_decay, c.train.batch_size) == (1e-3, 1e-3, 4)
    assert c.train.tile_shape == (512, 512)
    assert (c.train.frozen_epochs, c.train.epochs, c.train.n_folds) == (1, 25, 5)
    assert c.predict.tta == "flips" and c.predict.zeta == 4.0
    assert c.gt.method == "staple" and c.gt.undecided == "best_expert"


def test_json_round_trip(tmp_path):
    c = RunConfig().updated("train", epochs=3, tile_shape=(256, 256))
    path = save_config(c, tmp_path / "c.json")
    back = load_config(path)
    assert back == c and back.train.tile_shape == (256, 256)


def test_partial_file_takes_defaults(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"predict": {"tta": "dihedral"}}))
    c = load_config(tmp_path / "c.json")
    assert c.predict.tta == "dihedral" and c.predict.overlap == 0.25 and c.predict.tile_scale == 4


def test_frozen():
    c = RunConfig()
    with pytest.raises(ValidationError, match="frozen"):
        c.train.epochs = 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": {"epoch": 3}}, r"train\.epoch: unknown key"),
        ({"predict": {"tta": "all"}}, r"predict\.tta"),
        ({"predict": {"overlap": 1.5}}, r"predict\.overlap"),
        ({"train": {"tile_shape": [0, 512]}}, r"train\.tile_shape"),
        ({"stages": {}}, r"stages: unknown key"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(data, source="x.json")


def test_bad_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json is not valid JSON"):
        load_config(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="unknown stage"):
        RunConfig().updated("nope", x=1)


@pytest.mark.parametrize(
    ("image", "ens_tile", "scale", "window"),
    [
        ((1, 1024, 1024), (256, 256), 2, (512, 512)),  # the scaled tile fits
        ((1, 1024, 1024), (256, 256), 4, (1024, 1024)),
        ((1, 1024, 1024), (256, 256), 8, (1024, 1024)),  # never more than the image needs
        ((1, 256, 320), (256, 256), 2, (256, 320)),  # cut to the image, a multiple of 32
        ((1, 100, 700), (64, 64), 2, (128, 128)),  # 100 -> 128 (stride 32)
        ((1, 40, 40), (64, 64), 2, (64, 64)),  # never below the training tile
        ((1, 1024, 1024), (256, 256), 1, (256, 256)),
    ],
)
def test_window_for_scales_the_training_tile_and_fits_the_image(image, ens_tile, scale, window):
    assert PredictConfig(tile_scale=scale).window_for(image, ens_tile) == window


def test_window_for_keeps_an_explicit_tile():
    c = PredictConfig(tile_shape=(96, 128), tile_scale=4)
    assert c.window_for((1, 40, 40), (256, 256)) == (96, 128)


def test_presets_are_configs_and_explicit_values_win():
    from scaleseg.config import PREDICT_PRESETS

    assert set(PREDICT_PRESETS) == {"fast", "default", "thorough"}
    assert PredictConfig.preset("default") == PredictConfig()
    thorough = PredictConfig.preset("thorough")
    # the most complete setting of the frontier: the training tile, overlap 0.5, flips, float32
    assert (thorough.tile_scale, thorough.overlap, thorough.tta, thorough.precision) == (
        1, 0.5, "flips", "float32",
    )  # fmt: skip
    assert PredictConfig.preset("thorough", overlap=0.3).overlap == 0.3
    for name, fields in PREDICT_PRESETS.items():
        assert PredictConfig.preset(name).model_dump() == {**PredictConfig().model_dump(), **fields}
    with pytest.raises(ConfigError, match="unknown predict preset 'quick'; expected one of fast"):
        PredictConfig.preset("quick")
    with pytest.raises(ConfigError, match=r"preset 'fast':\n  overlap"):
        PredictConfig.preset("fast", overlap=2.0)
