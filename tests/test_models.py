"""scaleseg.models: factory, channel adaptation, decoder init, losses, weight I/O, export.

Small models use the timm encoder ``tu-resnet10t`` (random init, 64x64 tiles): it goes through the
same ``tu-`` path as the default ConvNeXt-Tiny but builds in a fraction of a second.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time

import pytest
import torch
import torch.nn.functional as F

from scaleseg.models import (
    ARCHITECTURES,
    DECODER_INIT_STD,
    LOSSES,
    ModelSpec,
    WeightsError,
    adapt_first_conv_weight,
    build_loss,
    build_model,
    export_onnx,
    export_torchscript,
    file_sha256,
    find_first_conv,
    load_weights,
    read_weights,
    save_weights,
)

ENC = "tu-resnet10t"
# std of N(0, s^2) truncated at +-2s, divided by s
TRUNC2_STD_FACTOR = math.sqrt(
    1 - 4 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(2 / math.sqrt(2))
)


def small_spec(**kw) -> ModelSpec:
    base = {"encoder": ENC, "in_channels": 1, "n_classes": 3, "encoder_weights": None}
    return ModelSpec(**{**base, **kw})


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def offline_caches(tmp_path, monkeypatch):
    """Empty Hugging Face and torch.hub caches, so no test sees weights on this machine."""
    import huggingface_hub.constants

    hf = tmp_path / "hf"
    hf.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return hf


# ---------------------------------------------------------------- factory


def test_architectures_discovered_from_smp():
    assert {"Unet", "UnetPlusPlus", "FPN", "DeepLabV3Plus", "Linknet", "PSPNet"} <= set(
        ARCHITECTURES
    )


@pytest.mark.parametrize(
    ("arch", "encoder", "n_extra"),
    [
        ("Unet", ENC, 0),
        ("Unet", ENC, 2),
        ("FPN", ENC, 2),
        ("UnetPlusPlus", ENC, 2),
        ("DeepLabV3Plus", ENC, 2),
        ("Unet", "resnet18", 0),  # an smp-native encoder
    ],
)
def test_build_model_output_shape(arch, encoder, n_extra):
    spec = small_spec(arch=arch, encoder=encoder, n_extra=n_extra)
    model = build_model(spec, seed=0).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 1, 64, 64))
    assert y.shape == (2, 3 + n_extra, 64, 64)
    assert spec.out_channels == 3 + n_extra


def test_default_model_builds_offline(offline_caches):
    t = time.perf_counter()
    with pytest.warns(UserWarning, match="tu-convnext_tiny"):
        model = build_model(ModelSpec(), seed=0)
    assert time.perf_counter() - t < 20
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 1, 64, 64)).shape == (1, 2, 64, 64)


def test_model_spec_dict_round_trip_and_validation():
    spec = ModelSpec(arch="unet", n_extra=2, encoder_weights="/w/enc.safetensors")
    assert spec.arch == "Unet"
    d = json.loads(json.dumps(spec.to_dict()))
    assert ModelSpec.from_dict(d) == spec
    with pytest.raises(ValueError, match="unknown ModelSpec keys"):
        ModelSpec.from_dict({**d, "colour": "red"})
    with pytest.raises(ValueError, match="arch"):
        ModelSpec(arch="NoSuchNet")
    with pytest.raises(ValueError, match="in_channels"):
        ModelSpec(in_channels=0)
    with pytest.raises(ValueError, match="encoder"):
        build_model(small_spec(encoder="tu-no_such_model_xyz"))


def test_seed_determinism_and_global_rng_untouched():
    before = torch.get_rng_state()
    a = build_model(small_spec(in_channels=5), seed=3).state_dict()
    b = build_model(small_spec(in_channels=5), seed=3).state_dict()
    c = build_model(small_spec(in_channels=5), seed=4).state_dict()
    assert state_equal(a, b)
    assert not state_equal(a, c)
    assert torch.equal(torch.get_rng_state(), before)


def test_decoder_truncated_normal_init():
    model = build_model(small_spec(), seed=0)
    ws, bs = [], []
    for part in (model.decoder, model.segmentation_head):
        for m in part.modules():
            if isinstance(m, torch.nn.Conv2d):
                ws.append(m.weight.detach().flatten())
                if m.bias is not None:
                    bs.append(m.bias.detach())
    w = torch.cat(ws)
    assert w.numel() > 100_000
    assert w.abs().max() <= 2 * DECODER_INIT_STD + 1e-7
    assert w.std().item() == pytest.approx(DECODER_INIT_STD * TRUNC2_STD_FACTOR, rel=0.02)
    assert abs(w.mean().item()) < 1e-3
    assert all(torch.count_nonzero(b) == 0 for b in bs)


# ---------------------------------------------------------------- channel rule (pure function)


def test_adapt_first_conv_weight_rules():
    w = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(adapt_first_conv_weight(w, 1), w[:, :1] * 3, rtol=0, atol=0)
    torch.testing.assert_close(adapt_first_conv_weight(w, 2), w[:, :2] * 1.5, rtol=0, atol=0)
    assert torch.equal(adapt_first_conv_weight(w, 1, rescale=False), w[:, :1])
    assert torch.equal(adapt_first_conv_weight(w, 3), w)
    with pytest.raises(ValueError, match="shape"):
        adapt_first_conv_weight(w[:, :2], 1)
    with pytest.raises(ValueError, match="in_channels"):
        adapt_first_conv_weight(w, 0)


def test_adapt_first_conv_weight_more_channels_is_truncated_normal():
    w = torch.randn(256, 3, 7, 7)
    g = torch.Generator().manual_seed(1)
    new = adapt_first_conv_weight(w, 5, generator=g)
    assert new.shape == (256, 5, 7, 7)
    assert new.abs().max() <= 0.04 + 1e-7
    assert new.std().item() == pytest.approx(0.02 * TRUNC2_STD_FACTOR, rel=0.02)
    again = adapt_first_conv_weight(w, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(new, again)


# ---------------------------------------------------------------- channel rule through build_model


@pytest.fixture(scope="module")
def fake_pretrained(tmp_path_factory):
    """A "pretrained" 3-channel encoder state dict saved as safetensors."""
    ref = build_model(small_spec(in_channels=3), seed=123)
    path = tmp_path_factory.mktemp("weights") / "encoder.safetensors"
    save_weights(ref.encoder, path)
    return path, ref.encoder.state_dict()


@pytest.mark.parametrize("in_channels", [1, 2, 3, 5])
def test_local_encoder_weights_channel_rule(fake_pretrained, in_channels):
    path, ref = fake_pretrained
    model = build_model(small_spec(in_channels=in_channels, encoder_weights=str(path)), seed=0)
    name, conv = find_first_conv(model.encoder, in_channels)
    key = f"{name}.weight"
    w, w3 = conv.weight.detach(), ref[key]
    assert w.shape == (w3.shape[0], in_channels, *w3.shape[2:])
    if in_channels <= 3:
        torch.testing.assert_close(w, w3[:, :in_channels] * (3 / in_channels), rtol=0, atol=1e-7)
    else:
        assert not any(torch.allclose(w[:, i], w3[:, j]) for i in range(5) for j in range(3))
        assert w.abs().max() <= 0.04 + 1e-7
        assert w.std().item() == pytest.approx(0.02 * TRUNC2_STD_FACTOR, rel=0.15)
    sd = model.encoder.state_dict()
    assert all(torch.equal(sd[k], ref[k]) for k in ref if k != key)


def test_local_weights_smp_native_encoder(tmp_path):
    ref = build_model(small_spec(encoder="resnet18", in_channels=3), seed=5).encoder
    path = tmp_path / "resnet18_encoder.safetensors"
    save_weights(ref, path)
    model = build_model(small_spec(encoder="resnet18", encoder_weights=str(path)), seed=0)
    name, conv = find_first_conv(model.encoder, 1)
    w3 = ref.state_dict()[f"{name}.weight"]
    torch.testing.assert_close(conv.weight.detach(), w3[:, :1] * 3, rtol=0, atol=1e-7)


def test_local_weights_other_formats(tmp_path, fake_pretrained):
    _, ref = fake_pretrained
    full = build_model(small_spec(in_channels=3), seed=123)
    pt = tmp_path / "full_model.pt"  # whole smp model, torch format, "encoder." prefixes
    torch.save(full.state_dict(), pt)
    model = build_model(small_spec(in_channels=3, encoder_weights=str(pt)), seed=0)
    assert state_equal(model.encoder.state_dict(), ref)

    import timm  # a timm classification checkpoint (as on the hub) goes through timm's loader

    backbone = timm.create_model(ENC[3:])
    ckpt = tmp_path / "timm.safetensors"
    save_weights(backbone, ckpt)
    model = build_model(small_spec(in_channels=1, encoder_weights=str(ckpt)), seed=0)
    name, conv = find_first_conv(model.encoder, 1)
    w3 = backbone.state_dict()[name.removeprefix("model.") + ".weight"]
    torch.testing.assert_close(conv.weight.detach(), w3[:, :1] * 3, rtol=0, atol=1e-7)

    bad = tmp_path / "bad.safetensors"
    save_weights({"x": torch.zeros(2)}, bad)
    with pytest.raises(WeightsError, match="bad.safetensors"):
        build_model(small_spec(encoder_weights=str(bad)))
    with pytest.raises(FileNotFoundError, match="neither a file"):
        build_model(small_spec(encoder_weights=str(tmp_path / "nope.safetensors")))


def test_imagenet_without_cache_warns_and_is_random(offline_caches):
    t = time.perf_counter()
    with pytest.warns(UserWarning, match=r"tu-resnet10t.*local safetensors"):
        model = build_model(small_spec(encoder_weights="imagenet"), seed=7)
    assert time.perf_counter() - t < 10
    assert state_equal(model.state_dict(), build_model(small_spec(), seed=7).state_dict())


def test_imagenet_from_local_hf_cache(offline_caches):
    import timm

    backbone = timm.create_model(ENC[3:])
    repo = timm.models.get_pretrained_cfg(ENC[3:]).hf_hub_id
    snap = offline_caches / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
    (offline_caches / f"models--{repo.replace('/', '--')}" / "refs").mkdir(parents=True)
    (offline_caches / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("0" * 40)
    save_weights(backbone, snap / "model.safetensors")
    model = build_model(small_spec(in_channels=3, encoder_weights="imagenet"), seed=0)
    name, conv = find_first_conv(model.encoder, 3)
    assert torch.equal(
        conv.weight.detach(), backbone.state_dict()[name.removeprefix("model.") + ".weight"]
    )


# ---------------------------------------------------------------- losses


def _loss_inputs(n_classes=3, n_extra=0):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, n_classes + n_extra, 8, 8, generator=g, requires_grad=True)
    target = torch.randint(0, n_classes, (2, 8, 8), generator=g)
    flows = torch.randn(2, n_extra, 8, 8, generator=g) if n_extra else None
    return logits, target, flows


def test_ce_dice_is_mean_of_ce_and_dice():
    from segmentation_models_pytorch.losses import DiceLoss

    logits, target, _ = _loss_inputs()
    got = build_loss(n_classes=3)(logits, target)
    want = 0.5 * (F.cross_entropy(logits, target) + DiceLoss(mode="multiclass")(logits, target))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", LOSSES)
def test_each_loss_runs_and_backprops(name):
    logits, target, _ = _loss_inputs()
    loss = build_loss(name, n_classes=3)(logits, target)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_flow_term():
    logits, target, flows = _loss_inputs(n_extra=2)
    loss = build_loss("ce", n_classes=3, n_extra=2, flow_weight=2.0)
    want = F.cross_entropy(logits[:, :3], target) + 2.0 * F.mse_loss(logits[:, 3:], flows)
    torch.testing.assert_close(loss(logits, target, flows), want, rtol=1e-6, atol=1e-7)
    loss(logits, target, flows).backward()
    assert logits.grad[:, 3:].abs().sum() > 0
    with pytest.raises(ValueError, match="flows"):
        loss(logits, target)
    with pytest.raises(ValueError, match="flows must have shape"):
        loss(logits, target, flows[:, :1])
    with pytest.raises(ValueError, match="logits"):
        build_loss(n_classes=3)(logits, target)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("hinge", n_classes=3)


# ---------------------------------------------------------------- weights


def test_weights_round_trip(tmp_path):
    model = build_model(small_spec(), seed=0)
    path = tmp_path / "fold0.safetensors"
    sha = save_weights(model, path)
    assert sha == file_sha256(path) and len(sha) == 64
    assert [p.name for p in tmp_path.iterdir()] == ["fold0.safetensors"]  # no temp file left
    other = build_model(small_spec(), seed=1)
    load_weights(other, path, expected_sha256=sha)
    assert state_equal(other.state_dict(), model.state_dict())
    with pytest.raises(ValueError, match="safetensors"):
        save_weights(model, tmp_path / "fold0.pt")


def test_weights_checksum_mismatch(tmp_path):
    model = build_model(small_spec(), seed=0)
    path = tmp_path / "w.safetensors"
    sha = save_weights(model, path)
    wrong = "0" * 64
    with pytest.raises(WeightsError, match="w.safetensors") as err:
        load_weights(model, path, expected_sha256=wrong)
    assert sha in str(err.value) and wrong in str(err.value)


def test_weights_truncated_and_garbage_files(tmp_path):
    model = build_model(small_spec(), seed=0)
    path = tmp_path / "w.safetensors"
    save_weights(model, path)
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cut.safetensors"):
        load_weights(model, cut)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="junk.pth"):
        load_weights(model, junk)
    with pytest.raises(FileNotFoundError):
        load_weights(model, tmp_path / "missing.safetensors")


def test_weights_torch_checkpoint_weights_only(tmp_path):
    model = build_model(small_spec(), seed=0)
    pt = tmp_path / "w.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, pt)
    other = load_weights(build_model(small_spec(), seed=1), pt)
    assert state_equal(other.state_dict(), model.state_dict())
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "obj": time.struct_time}, evil)  # needs code to unpickle
    with pytest.raises(WeightsError, match="evil.pt"):
        read_weights(evil)


def test_weights_key_and_shape_mismatch(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(build_model(small_spec(n_classes=4), seed=0), path)
    with pytest.raises(WeightsError, match="shape mismatches"):
        load_weights(build_model(small_spec(), seed=0), path)
    save_weights({"only.this": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="missing keys"):
        load_weights(build_model(small_spec(), seed=0), path)


# ---------------------------------------------------------------- export


def test_export_torchscript_matches_eager(tmp_path):
    model = build_model(small_spec(n_extra=2), seed=0)
    path = tmp_path / "model.pt"
    sha = export_torchscript(model, path, example_shape=(1, 1, 64, 64))
    assert sha == file_sha256(path)
    loaded = torch.jit.load(str(path))
    x = torch.randn(2, 1, 96, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=1e-5)


def test_export_onnx_names_missing_package(tmp_path, monkeypatch):
    from scaleseg.models import _export

    monkeypatch.setattr(_export, "_ONNX_PACKAGES", ("onnx", "no_such_onnx_exporter"))
    with pytest.raises(RuntimeError, match="no_such_onnx_exporter"):
        export_onnx(build_model(small_spec(), seed=0), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_export_onnx_matches_eager(tmp_path):
    for pkg in ("onnx", "onnxscript", "onnxruntime"):
        if importlib.util.find_spec(pkg) is None:
            pytest.skip(f"{pkg} is not installed (optional; not a scaleseg dependency)")
    import onnxruntime

    model = build_model(small_spec(), seed=0)
    path = tmp_path / "m.onnx"
    export_onnx(model, path, example_shape=(1, 1, 64, 64))
    x = torch.randn(1, 1, 64, 64)
    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model.eval()(x), rtol=0, atol=1e-4)


def test_deepflash2_convnext_unet_shape():
    """deepflash2 builds its ConvNeXt U-Nets with 4 encoder stages and decoder (256, 128, 64, 16):
    14.9 M parameters instead of smp's depth-5 31.9 M."""
    import torch

    from scaleseg.models import ModelSpec, build_model

    spec = ModelSpec(encoder_weights=None, encoder_depth=4, decoder_channels=[256, 128, 64, 16])
    assert spec.decoder_channels == (256, 128, 64, 16)
    model = build_model(spec)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 14.9
    with torch.inference_mode():
        assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 2, 64, 64)
    d = spec.to_dict()
    assert d["encoder_depth"] == 4 and d["decoder_channels"] == [256, 128, 64, 16]
    assert ModelSpec.from_dict(d) == spec
    # specs written before these fields existed load and compare unchanged
    old = ModelSpec(encoder="tu-resnet10t", encoder_weights=None).to_dict()
    assert "encoder_depth" not in old and ModelSpec.from_dict(old).encoder_depth is None


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"encoder_depth": 6}, "encoder_depth"),
        ({"encoder_depth": 4, "decoder_channels": (64, 32)}, "one width per encoder stage"),
        ({"decoder_channels": (64, 32, 16, 8, 0)}, "positive integers"),
    ],
)
def test_model_shape_fields_validated(kw, match):
    from scaleseg.models import ModelSpec

    with pytest.raises(ValueError, match=match):
        ModelSpec(encoder_weights=None, **kw)


def test_train_config_checks_decoder_widths():
    from scaleseg.config import TrainConfig

    with pytest.raises(ValueError, match="one positive width"):
        TrainConfig(encoder_depth=4, decoder_channels=(8, 8))


def test_train_cli_shape_flags_reach_the_config():
    from scaleseg.cli import build_parser
    from scaleseg.cli._train import _train_config
    from scaleseg.config import load_config

    args = build_parser().parse_args(
        ["train", "in.zarr", "out", "--encoder-depth", "4", "--decoder-channels", "256", "128",
         "64", "16"]
    )  # fmt: skip
    t = _train_config(load_config(None), args).train
    assert (t.encoder_depth, t.decoder_channels) == (4, (256, 128, 64, 16))
