"""The any-depth authors' backbone ResNet-ADN (rtdetr_fine/anydepth/resnet_adn.py), its twins after the
conversion, its any-depth ImageNet weights (backbone.pretrained), and the configs of their recipe."""
import pytest
import torch
import torch.nn.functional as F
from helpers import config_path
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

import rtdetr_fine
from rtdetr_fine.anydepth import SkippableSequential, SwitchableNorm, set_depth
from rtdetr_fine.anydepth.resnet_adn import ResNetADN, load_adn_pretrained
from rtdetr_fine.config import ConfigError
from rtdetr_fine.engine.optim import build_optimizer

ADN = ["backbone.pretrained=null", "decoder.num_queries=30", "postprocessor.num_top_queries=30",
       "decoder.num_denoising=10"]


def load(name="rtdetr_r50_adn_6x.yml", *overrides):
    return rtdetr_fine.load_config(config_path(name), [*ADN, *overrides])


def test_the_backbone_is_a_torchvision_style_resnet_d_with_a_7x7_stem():
    backbone = ResNetADN(50, "d", freeze_at=0, freeze_norm=True)
    assert backbone.conv1.weight.shape == (64, 3, 7, 7) and backbone.conv1.stride == (2, 2)
    assert [len(getattr(backbone, n)) for n in ("layer1", "layer2", "layer3", "layer4")] == [3, 4, 6, 3]
    block = backbone.layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)          # the stride on the 3x3
    pool, conv, norm = block.downsample                                              # "d": pool, stride-1 conv
    assert isinstance(pool, nn.AvgPool2d) and pool.ceil_mode and conv.stride == (1, 1)
    assert [type(m) for m in backbone.layer1[0].downsample] == [nn.Conv2d, FrozenBatchNorm2d]   # layer1: no pool
    assert all(type(m) is not nn.BatchNorm2d for m in backbone.modules())           # every norm frozen
    assert not backbone.conv1.weight.requires_grad and backbone.layer1[0].conv1.weight.requires_grad   # freeze_at 0
    assert backbone.out_channels == [512, 1024, 2048] and backbone.out_strides == [8, 16, 32]
    # torchvision's names and the authors' order inside a block
    assert list(backbone.state_dict())[:10] == [
        "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "layer1.0.conv1.weight",
        "layer1.0.bn1.weight", "layer1.0.bn1.bias", "layer1.0.bn1.running_mean", "layer1.0.bn1.running_var"]
    outs = backbone(torch.rand(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 512, 8, 12), (1, 1024, 4, 6), (1, 2048, 2, 3)]
    variant_a = ResNetADN(50, "a")
    conv, _ = variant_a.layer2[0].downsample
    assert conv.stride == (2, 2)


def test_the_block_computes_torchvision_bottleneck():
    torch.manual_seed(0)
    backbone = ResNetADN(50, "d", freeze_norm=False).eval()
    block, x = backbone.layer3[0], torch.rand(1, 512, 8, 8)

    def bn(m, t):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    with torch.no_grad():
        for m in block.modules():       # non-trivial statistics
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5), m.bias.uniform_(-0.1, 0.1)
        main = F.relu(bn(block.bn1, F.conv2d(x, block.conv1.weight)))
        main = F.relu(bn(block.bn2, F.conv2d(main, block.conv2.weight, stride=2, padding=1)))
        main = bn(block.bn3, F.conv2d(main, block.conv3.weight))
        short = bn(block.downsample[2], F.conv2d(F.avg_pool2d(x, 2, ceil_mode=True), block.downsample[1].weight))
        torch.testing.assert_close(block(x), F.relu(main + short), rtol=0, atol=1e-5)


def test_conversion_gives_shared_blocks_frozen_twins_as_the_authors():
    model = rtdetr_fine.build_model(load())
    twins = {n: m for n, m in model.named_modules() if isinstance(m, SwitchableNorm)}
    backbone = {n: m for n, m in twins.items() if n.startswith("backbone.")}
    assert len(backbone) == 27 and all(type(m.skip) is FrozenBatchNorm2d for m in backbone.values())
    assert set(backbone) == {f"backbone.{layer}.{i}.bn{k}" for layer, shared in
                             (("layer1", 2), ("layer2", 2), ("layer3", 3), ("layer4", 2))
                             for i in range(shared) for k in (1, 2, 3)}
    assert sum(n.startswith("encoder.") for n in twins) == 25          # 23 BatchNorm2d + 2 LayerNorm twins
    stages = [m for n, m in model.backbone.named_children() if isinstance(m, SkippableSequential)]
    assert [(len(s), s.num_essential) for s in stages] == [(3, 2), (4, 2), (6, 3), (3, 2)]
    # nothing in the backbone trains but the convs (the stem conv is frozen too: freeze_at 0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")}
    assert trainable and all(n.endswith(".weight") and ".conv" in n or ".downsample." in n for n in trainable)
    assert "backbone.conv1.weight" not in trainable
    # this project's variant of the same model: trainable twins
    ours = rtdetr_fine.build_model(load("rtdetr_r50_adn_6x.yml", "anydepth.twins_of_frozen_norms=trainable"))
    assert type(ours.backbone.layer1[0].bn1.skip) is nn.BatchNorm2d
    optimizer = build_optimizer(ours, load())
    optimized = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert id(ours.backbone.layer1[0].bn1.skip.weight) in optimized


def test_parameter_counts_are_the_authors():
    """nn.Parameters: the authors' R50 42,885,068 (their eval log's 42.885M; the backbone norms and twins
    are buffers) and R101 76.556M (their R101 eval log)."""
    from rtdetr_fine.evaluation.flops import count_params
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r50_adn_6x.yml"), ["backbone.pretrained=null"])
    assert count_params(rtdetr_fine.build_model(cfg)) == 42_885_068
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r101_adn_6x.yml"), ["backbone.pretrained=null"])
    assert round(count_params(rtdetr_fine.build_model(cfg)) / 1e3) == 76_556


def imagenet_checkpoint(backbone, seed=0, twins=True):
    """A wchkang/depth-style any-depth ImageNet checkpoint for `backbone` (an unconverted ResNetADN with
    trainable norms gives the names): torchvision names, BatchNorm2d entries, `bnN_skip` twins on the
    shared blocks, a classifier `fc`."""
    g = torch.Generator().manual_seed(seed)
    state = {k: (torch.rand(v.shape, generator=g) + 0.5 if v.is_floating_point() else v)
             for k, v in backbone.state_dict().items()}
    if twins:
        for layer, shared in (("layer1", 2), ("layer2", 2), ("layer3", 3), ("layer4", 2)):
            for i in range(shared):
                for k in (1, 2, 3):
                    for entry in ("weight", "bias", "running_mean", "running_var"):
                        main = state[f"{layer}.{i}.bn{k}.{entry}"]
                        state[f"{layer}.{i}.bn{k}_skip.{entry}"] = main + 1.0
                    state[f"{layer}.{i}.bn{k}_skip.num_batches_tracked"] = torch.tensor(5)
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    return state


def test_their_any_depth_imagenet_backbone_loads_as_backbone_pretrained(tmp_path):
    path = tmp_path / "weights-resnet50vd_adn.pth"
    state = imagenet_checkpoint(ResNetADN(50, "d", freeze_norm=False))
    torch.save(state, path)
    model = rtdetr_fine.build_model(load("rtdetr_r50_adn_6x.yml", f"backbone.pretrained={path}"))
    bb = model.backbone
    assert torch.equal(bb.conv1.weight, state["conv1.weight"]) and torch.equal(bb.bn1.weight, state["bn1.weight"])
    assert torch.equal(bb.layer3[2].bn2.running_var, state["layer3.2.bn2.running_var"])
    assert torch.equal(bb.layer3[2].bn2.skip.running_var, state["layer3.2.bn2_skip.running_var"])   # its twin
    assert torch.equal(bb.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])                  # skippable block
    # the twin is what runs when the stage skips
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        full = bb(x)[0]
        set_depth(model, "backbone=0,1,0,0")
        skipped = bb(x)[0]
    assert not torch.allclose(full, skipped)


def test_a_checkpoint_without_twins_gives_copies_and_one_without_any_depth_drops_them(tmp_path):
    plain = tmp_path / "plain.pth"
    torch.save({"model": imagenet_checkpoint(ResNetADN(50, "d", freeze_norm=False), twins=False)}, plain)
    converted = rtdetr_fine.build_model(load()).backbone
    logged = []
    load_adn_pretrained(converted, str(plain), 50, log=logged.append)
    assert any("skip twins start as copies" in line for line in logged)
    assert torch.equal(converted.layer2[1].bn3.skip.weight, converted.layer2[1].bn3.weight)
    with_twins = tmp_path / "adn.pth"
    torch.save(imagenet_checkpoint(ResNetADN(50, "d", freeze_norm=False)), with_twins)
    unconverted = ResNetADN(50, "d", freeze_norm=True)
    logged.clear()
    load_adn_pretrained(unconverted, str(with_twins), 50, log=logged.append)
    assert any("skip twins are not used" in line for line in logged)


def test_a_backbone_checkpoint_that_does_not_fit_names_the_file(tmp_path):
    path = tmp_path / "presnet50vd.pth"
    presnet = rtdetr_fine.build_model(rtdetr_fine.load_config(config_path("rtdetr_r50.yml"), ADN)).backbone
    torch.save(presnet.state_dict(), path)
    with pytest.raises(ValueError, match=r"presnet50vd.pth does not fit ResNet-ADN50 .*variant d"):
        rtdetr_fine.build_model(load("rtdetr_r50_adn_6x.yml", f"backbone.pretrained={path}"))
    variant_a = tmp_path / "resnet50_a.pth"     # torchvision's stride-2 shortcut conv where "d" has the pool
    torch.save(imagenet_checkpoint(ResNetADN(50, "a", freeze_norm=False)), variant_a)
    with pytest.raises(ValueError, match="layer2.0.downsample"):
        rtdetr_fine.build_model(load("rtdetr_r50_adn_6x.yml", f"backbone.pretrained={variant_a}"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        rtdetr_fine.build_model(load("rtdetr_r50_adn_6x.yml", f"backbone.pretrained={tmp_path / 'missing.pth'}"))


@pytest.mark.parametrize("override, message", [
    ("backbone.depth=18", "backbone.type: resnet_adn has depths 50 and 101"),
    ("backbone.variant=c", "backbone.type: resnet_adn has variants a and d"),
    ("backbone.type=resnet", "backbone.type must be one of ('presnet', 'resnet_adn')"),
    ("anydepth.distill=false", "anydepth.independent_scales draws a size for each of the two passes"),
    ("train_dataloader.multi_scale=[]", "train_dataloader.multi_scale, which is empty"),
    ("anydepth.distill_reduction=mean", "anydepth.distill_reduction must be one of ('plain', 'authors')"),
    ("anydepth.twins_of_frozen_norms=thawed", "anydepth.twins_of_frozen_norms must be one of"),
])
def test_config_errors_name_the_keys(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load("rtdetr_r50_adn_6x.yml", override)


@pytest.mark.parametrize("name", ["rtdetr_r50_adn_6x.yml", "rtdetr_r101_adn_6x.yml"])
def test_the_adn_configs_are_the_authors_recipe(name):
    cfg = rtdetr_fine.load_config(config_path(name))
    r50 = "r50" in name
    b, a, o, t = cfg["backbone"], cfg["anydepth"], cfg["optimizer"], cfg["train_dataloader"]
    assert (b["type"], b["depth"], b["variant"], b["freeze_at"], b["freeze_norm"], b["pretrained"]) == \
        ("resnet_adn", 50 if r50 else 101, "d", 0, True, True)
    assert cfg["epochs"] == 72 and o["warmup_iters"] == 0 and o["lr_milestones"] == [] and cfg["sync_bn"]
    assert t["total_batch_size"] == (16 if r50 else 32) and len(t["multi_scale"]) == 13 and t["no_aug_epochs"] == 0
    assert cfg["ema"] == {"enabled": True, "decay": 0.9999, "warmups": 2000} and o["clip_max_norm"] == 0.1
    assert (o["lr"], o["weight_decay"]) == ((1e-4, 1e-4) if r50 else (2e-4, 2e-4))
    assert o["params"][0]["lr"] == (1e-5 if r50 else 2e-6)
    assert a == {"enabled": True, "min_decoder_layers": 4, "distill": True, "distill_reduction": "authors",
                 "independent_scales": True, "twins_of_frozen_norms": "frozen",
                 "distill_weight_dict": {"loss_kd_class": 1.0, "loss_kd_bbox": 5.0, "loss_kd_giou": 2.0,
                                         "loss_kd_feat_backbone": 1.0, "loss_kd_feat_encoder": 1.0}}
    assert (cfg["num_classes"], cfg["remap_mscoco_category"], cfg["decoder"]["num_decoder_layers"]) == (80, True, 6)
    hidden = 256 if r50 else 384
    assert cfg["encoder"]["hidden_dim"] == hidden and cfg["decoder"]["feat_channels"] == [hidden] * 3
    assert cfg["encoder"]["dim_feedforward"] == (1024 if r50 else 2048)


def test_a_checkpoint_of_the_other_backbone_is_described_by_name(tmp_path):
    """An R50-ADN checkpoint given to this project's R50 variant (and the other way round) is refused with
    what each one is, not a list of names."""
    from rtdetr_fine.checkpoint import load_weights
    adn, ours = rtdetr_fine.build_model(load()), rtdetr_fine.build_model(load("rtdetr_r50_anydepth.yml"))
    torch.save({"model": adn.state_dict()}, tmp_path / "adn.pth")
    with pytest.raises(ValueError, match=r"looks like RT-DETR R50-ADN, any-depth(.|\n)*builds +RT-DETR R50, any-depth"):
        load_weights(ours, str(tmp_path / "adn.pth"))
    torch.save({"model": ours.state_dict()}, tmp_path / "ours.pth")
    with pytest.raises(ValueError, match=r"looks like RT-DETR R50, any-depth(.|\n)*builds +RT-DETR R50-ADN"):
        load_weights(adn, str(tmp_path / "ours.pth"), finetune=True)
