"""rtdetr_fine/ssd/pretrained.py: ImageNet VGG16 into SSD300's extractor, fc6 / fc7 as the SSD paper reduced them.
No download: the state dicts are synthetic (a full-size classifier as a zero-stride view of a few numbers)."""
import pytest
import torch
from helpers import config_path
from torch.nn import functional as F
from torchvision.models import VGG16_Weights

import rtdetr_fine
from rtdetr_fine import cli
from rtdetr_fine.ssd import build_torchvision_ssd300, pretrained
from rtdetr_fine.ssd.model import SSD_IMAGE_MEAN, SSD_IMAGE_STD
from rtdetr_fine.ssd.pretrained import fc_convs, fold_input_standardisation, load_reduced_fc, reduce_classifier


def small_classifier():
    """A VGG-like classifier for 2-channel 7x7 inputs: fc6 [16, 2 * 49], fc7 [8, 16], every entry distinct."""
    return {"classifier.0.weight": torch.arange(16 * 98, dtype=torch.float64).reshape(16, 98),
            "classifier.0.bias": torch.arange(16, dtype=torch.float64) + 0.5,
            "classifier.3.weight": -torch.arange(8 * 16, dtype=torch.float64).reshape(8, 16),
            "classifier.3.bias": -torch.arange(8, dtype=torch.float64) - 0.5}


def test_the_classifier_is_decimated_as_the_ssd_paper_says():
    """fc6 -> [O6, C, 7, 7], every 4th output channel and the taps 0, 3, 6 each way; fc7 every 4th output
    and input; biases every 4th."""
    state = small_classifier()
    reduced = reduce_classifier(state)
    assert reduced["fc6.weight"].shape == (4, 2, 3, 3) and reduced["fc7.weight"].shape == (2, 4, 1, 1)
    fc6, fc7 = state["classifier.0.weight"], state["classifier.3.weight"]
    for o in range(4):
        for c in range(2):
            for i in range(3):
                for j in range(3):                  # input feature c * 49 + row * 7 + column of the 7x7 pool5 map
                    assert reduced["fc6.weight"][o, c, i, j] == fc6[4 * o, c * 49 + 3 * i * 7 + 3 * j]
    for o in range(2):
        for k in range(4):
            assert reduced["fc7.weight"][o, k, 0, 0] == fc7[4 * o, 4 * k]
    assert reduced["fc6.bias"].tolist() == [0.5, 4.5, 8.5, 12.5]
    assert reduced["fc7.bias"].tolist() == [-0.5, -4.5]


def test_a_file_without_the_classifier_is_named():
    features_only = {k: v for k, v in small_classifier().items() if not k.startswith("classifier.3")}
    with pytest.raises(ValueError, match=r"backbone.pretrained: vgg\.pth has no classifier\.3\.weight, "
                                         r"classifier\.3\.bias: ssd\.fc_init: reduced_vgg16 .* set ssd\.fc_init: random"):
        reduce_classifier(features_only, "vgg.pth")
    wrong = dict(small_classifier(), **{"classifier.3.weight": torch.zeros(8, 15)})
    with pytest.raises(ValueError, match="are not VGG16's classifier"):
        reduce_classifier(wrong, "vgg.pth")


def test_reduced_weights_fill_fc6_and_fc7_and_shapes_are_checked():
    ssd = build_torchvision_ssd300(3)
    fc6, fc7 = fc_convs(ssd.backbone)
    assert (fc6.in_channels, fc6.out_channels, fc6.kernel_size, fc6.dilation) == (512, 1024, (3, 3), (6, 6))
    assert (fc7.in_channels, fc7.out_channels, fc7.kernel_size) == (1024, 1024, (1, 1))
    reduced = {"fc6.weight": torch.randn(1024, 512, 3, 3), "fc6.bias": torch.randn(1024),
               "fc7.weight": torch.randn(1024, 1024, 1, 1), "fc7.bias": torch.randn(1024)}
    load_reduced_fc(ssd.backbone, reduced)
    assert torch.equal(fc6.weight, reduced["fc6.weight"]) and torch.equal(fc7.bias, reduced["fc7.bias"])
    with pytest.raises(ValueError, match=r"vgg\.pth's classifier gives fc6.weight \(4, 2, 3, 3\)"):
        load_reduced_fc(ssd.backbone, reduce_classifier(small_classifier()), "vgg.pth")


def test_folding_the_input_standardisation_into_the_first_conv():
    """A conv trained on (x - m_t) / s_t, folded, gives the same output on (x - m_u) / s_u (inside the image)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1).double()
    trained, used = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), (SSD_IMAGE_MEAN, SSD_IMAGE_STD)
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)

    def standardised(stats):
        mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in stats)
        return (x - mean) / std
    with torch.no_grad():
        expected = conv(standardised(trained))
        fold_input_standardisation(conv, trained, used)
        folded = conv(standardised(used))
    torch.testing.assert_close(folded[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], rtol=1e-12, atol=1e-10)
    assert (folded[..., 0, :] - expected[..., 0, :]).abs().max() < 0.05 * expected.abs().max()   # the padded border


def full_size_vgg16(seed=0):
    """A torchvision vgg16 state dict with random convs and a full-size classifier whose rows are constant
    (zero-stride views: 4096 x 25088 without the memory): fc6 row o is 1000 + o, fc7 row o is -o."""
    from torchvision.models.vgg import cfgs, make_layers
    torch.manual_seed(seed)
    state = {f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}
    state["classifier.0.weight"] = (1000.0 + torch.arange(4096.0)).view(-1, 1).expand(4096, 25088)
    state["classifier.0.bias"] = torch.arange(4096.0)
    state["classifier.3.weight"] = -torch.arange(4096.0).view(-1, 1).expand(4096, 4096)
    state["classifier.3.bias"] = -torch.arange(4096.0)
    return state


@pytest.mark.parametrize("fc_init", ["reduced_vgg16", "random"])
def test_pretrained_true_loads_one_network_by_fc_init(monkeypatch, fc_init):
    """reduced_vgg16: IMAGENET1K_V1's convs and its classifier subsampled into fc6 / fc7, conv1_1 folded to
    SSD300's input standardisation; random: IMAGENET1K_FEATURES' convs as they are, fc6 / fc7 untouched.
    conv1 is frozen either way."""
    state, sources = full_size_vgg16(), []
    monkeypatch.setattr(pretrained, "read_state_dict", lambda source: sources.append(source) or state)
    torch.manual_seed(1)
    untouched = fc_convs(build_torchvision_ssd300(3).backbone)[0].weight.clone()
    torch.manual_seed(1)
    ssd = build_torchvision_ssd300(3, True, fc_init)
    extractor = ssd.backbone
    fc6, fc7 = fc_convs(extractor)
    assert torch.equal(extractor.extra[0][5].weight, state["features.28.weight"])          # conv5_3
    assert not extractor.features[0].weight.requires_grad and extractor.features[5].weight.requires_grad
    if fc_init == "random":
        assert sources == [VGG16_Weights.IMAGENET1K_FEATURES.url]
        assert torch.equal(extractor.features[0].weight, state["features.0.weight"])
        assert torch.equal(fc6.weight, untouched)
        return
    assert sources == [VGG16_Weights.IMAGENET1K_V1.url]
    assert torch.equal(fc6.weight[:, 0, 0, 0], 1000.0 + torch.arange(0, 4096.0, 4))        # rows 0, 4, 8, ...
    assert torch.equal(fc6.bias, torch.arange(0, 4096.0, 4)) and torch.equal(fc7.bias, -torch.arange(0, 4096.0, 4))
    assert torch.equal(fc7.weight[:, :, 0, 0], -torch.arange(0, 4096.0, 4).view(-1, 1).expand(1024, 1024))
    # conv1_1 on SSD300's input (0-255 minus the mean) = IMAGENET1K_V1's conv1_1 on its own standardisation
    v1 = VGG16_Weights.IMAGENET1K_V1.transforms()
    x = torch.rand(1, 3, 10, 10, dtype=torch.float64)
    ssd_input = (x - torch.tensor(SSD_IMAGE_MEAN).view(1, 3, 1, 1)) / torch.tensor(SSD_IMAGE_STD).view(1, 3, 1, 1)
    v1_input = (x - torch.tensor(v1.mean).view(1, 3, 1, 1)) / torch.tensor(v1.std).view(1, 3, 1, 1)
    conv = extractor.features[0]
    ours = F.conv2d(ssd_input, conv.weight.double(), conv.bias.double(), padding=1)
    theirs = F.conv2d(v1_input, state["features.0.weight"].double(), state["features.0.bias"].double(), padding=1)
    torch.testing.assert_close(ours[..., 1:-1, 1:-1], theirs[..., 1:-1, 1:-1], rtol=1e-5, atol=1e-5)


def test_a_local_file_without_the_classifier_is_refused_naming_it(tmp_path):
    features_only = {k: v for k, v in full_size_vgg16().items() if k.startswith("features.")}
    path = tmp_path / "vgg16_features.pth"
    torch.save(features_only, path)
    with pytest.raises(ValueError, match=f"{path} has no classifier.0.weight"):
        build_torchvision_ssd300(3, str(path), "reduced_vgg16")
    ssd = build_torchvision_ssd300(3, str(path), "random")                  # the features file fits `random`
    assert torch.equal(ssd.backbone.features[0].weight, features_only["features.0.weight"])


def test_a_failed_download_is_one_message_naming_the_source(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Temporary failure in name resolution")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(OSError) as e:
        build_torchvision_ssd300(3, True, "reduced_vgg16")
    assert VGG16_Weights.IMAGENET1K_V1.url in str(e.value) and "local file" in str(e.value)
    assert cli.user_message(e.value) == str(e.value)                      # one line at the command line


def test_the_paper_configs_reduce_fc6_fc7_and_the_demos_do_not():
    for name, fc_init in [("ssd300.yml", "reduced_vgg16"), ("ssd300_cfsam.yml", "reduced_vgg16"),
                          ("ssd300_coco.yml", "reduced_vgg16"), ("ssd300_cfsam_coco.yml", "reduced_vgg16"),
                          ("demo/ssd300_cfsam_shapes.yml", "random")]:
        cfg = rtdetr_fine.load_config(config_path(name))
        assert cfg["ssd"]["fc_init"] == fc_init, name
    assert rtdetr_fine.load_config(config_path("demo/ssd300_cfsam_shapes.yml"))["backbone"]["pretrained"] is None
