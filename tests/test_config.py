"""Config models: deepflash2 defaults, JSON round trip, clear errors."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from scaleseg.config import ConfigError, RunConfig, from_dict, load_config, save_config


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
    assert c.predict.tta == "dihedral" and c.predict.overlap == 0.5


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
