"""Held-out check of the FINE paper's Table 2 baselines as whole R18 models (configs/ablation/
rtdetr_r18_{fapn,adafpn,mgc}.yml): weights for other seeds, written in the authors' layout (the official
names, their module names under encoder.), load strictly with load_weights, and the model's
pred_logits / pred_boxes equal those of a reference built here in float64 to 1e-6.

The reference is the official R18 (tests/rtdetr/test_conformance.py) whose encoder runs
../shared/conformance/README_t2.md's wiring, written out level by level, with each module computed
from that README's description in plain functional ops on the authors' tensors (checked against the
seed-0 fixtures first). Nothing of rtdetr_fine/modules/ is used by it.
"""
import os

import pytest
import torch
import torch.nn.functional as F
from fill_weights import fill, read_keys
from helpers import CONFORMANCE, config_path
from torchvision.ops import deform_conv2d

import rtdetr_fine
from rtdetr_fine.checkpoint import CheckpointMismatchError, load_weights

# which official encoder layers each variant replaces (README_t2.md, "Wiring")
REPLACED = {"fapn": "encoder.input_proj.", "adafpn": "encoder.fpn_blocks.", "mgc": "encoder.input_proj."}


# ----------------------------------------------------------------------------- README_t2, written out

def bn(w, p, x):
    return F.batch_norm(x, w[p + "running_mean"], w[p + "running_var"], w[p + "weight"], w[p + "bias"], False, 0.0,
                        1e-5)


def fsm(w, p, x):
    """FeatureSelectionModule: x + x * sigmoid(GN(conv_atten(global mean))), then conv."""
    a = F.conv2d(F.avg_pool2d(x, x.shape[-2:]), w[p + "conv_atten.weight"])
    a = torch.sigmoid(F.group_norm(a, 32, w[p + "norm_atten.weight"], w[p + "norm_atten.bias"], eps=1e-5))
    return F.conv2d(x + x * a, w[p + "conv.weight"])


def fapn_concat(w, j, high, low):
    """cat[DCN(up, offset[j](cat[low, 2 up])), low]: what fpn_blocks[j] receives."""
    up = F.interpolate(high, scale_factor=2.0, mode="nearest")
    off = bn(w, f"offset.{j}.1.", F.conv2d(torch.cat([low, 2 * up], 1), w[f"offset.{j}.0.weight"]))
    p = f"feature_align.{j}."
    raw = F.conv2d(off, w[p + "conv_offset_mask.weight"], w[p + "conv_offset_mask.bias"], padding=1)
    o1, o2, m = torch.chunk(raw, 3, dim=1)
    aligned = deform_conv2d(up, torch.cat([o1, o2], 1), w[p + "deform_conv.deform_conv.weight"],
                            w[p + "deform_conv.deform_conv.bias"], padding=1, mask=torch.sigmoid(m))
    return torch.cat([torch.relu(aligned), low], 1)


def adafpn_block(w, j, high, low):
    """AdaUp (4 points sampled on a float32 linspace grid + offsets, border padding) then AFF."""
    def conv(name, x, pad=0):
        return F.conv2d(x, w[f"ada_fpn_blocks.{j}.{name}.weight"], w[f"ada_fpn_blocks.{j}.{name}.bias"], padding=pad)
    u = F.interpolate(high, scale_factor=2.0, mode="bilinear", align_corners=False)
    o = conv("ada_up.offset_conv2", torch.relu(conv("ada_up.offset_conv1", torch.cat([u, low], 1))), 1)
    projected = conv("ada_up.feature_conv", high)
    h2, w2 = o.shape[-2:]
    gy, gx = torch.meshgrid(torch.linspace(-1, 1, h2), torch.linspace(-1, 1, w2), indexing="ij")
    a = torch.stack([F.grid_sample(projected, torch.stack([gx + o[:, 2 * i] / w2 * 2, gy + o[:, 2 * i + 1] / h2 * 2],
                                                          dim=-1), padding_mode="border", align_corners=False)
                     for i in range(4)]).mean(0)
    f = torch.relu(conv("aff.conv2", torch.relu(conv("aff.conv1", torch.cat([a, low], 1), 1)), 1))
    att = torch.sigmoid(conv("aff.attention_conv.2", torch.relu(conv("aff.attention_conv.0", f, 1)), 1))
    return att[:, 0:1] * a + att[:, 1:2] * low


def mgc(w, feats):
    """Collector (their einsum), graph reasoning, distributor."""
    def gcn(p, x):
        for i in (0, 2):
            x = torch.relu(F.conv1d(x, w[f"mgc.{p}.{i}.weight"], w[f"mgc.{p}.{i}.bias"]))
        return F.conv1d(x, w[f"mgc.{p}.4.weight"], w[f"mgc.{p}.4.bias"])

    def conv(p, x):
        return F.conv2d(x, w[f"mgc.{p}.weight"])
    refined = []
    for i, f in enumerate(feats):
        e, v = conv(f"semantic_entities.{i}", f), conv(f"feature_embeddings.{i}", f)
        s = torch.einsum("bni,bci->bni", F.normalize(e, dim=1).flatten(2), F.normalize(f, dim=1).flatten(2))
        ctx = torch.bmm(v.flatten(2), torch.softmax(s * f.shape[1] ** 0.5, dim=2).transpose(1, 2))
        refined.append(gcn(f"single_level_gcns.{i}", ctx) + ctx)
    r = torch.cat(refined, 2)
    g = gcn("multi_level_gcn", r) + r
    outs, start = [], 0
    for i, (f, n) in enumerate(zip(feats, (256, 192, 128))):
        c, start = g[:, :, start:start + n], start + n
        q = F.normalize(conv(f"context_query.{i}", f).flatten(2), dim=1)
        att = torch.softmax(torch.bmm(q.transpose(1, 2), F.normalize(c, dim=1)), dim=2)
        spread = torch.bmm(c, att.transpose(1, 2)).reshape(f.shape[0], -1, *f.shape[-2:])
        outs.append(conv(f"context_output.{i}", spread) + conv(f"residual_proj.{i}", f))
    return outs


def reference_encoder(enc, w, variant, feats):
    """README_t2's encoder for R18 (3 levels), unrolled: `enc` is the official encoder, `w` the authors'
    tensors named relative to it."""
    def project(i, c):
        return fsm(w, f"feature_selection.{i}.", c) if variant == "fapn" else enc.input_proj[i](c)

    def top_down(j, high, low):
        if variant == "adafpn":
            return adafpn_block(w, j, high, low)
        if variant == "fapn":
            return enc.fpn_blocks[j](fapn_concat(w, j, high, low))
        return enc.fpn_blocks[j](torch.cat([F.interpolate(high, scale_factor=2.0, mode="nearest"), low], 1))
    p3, p4, p5 = mgc(w, feats) if variant == "mgc" else [project(i, c) for i, c in enumerate(feats)]
    f5 = enc.lateral_convs[0](enc.intra_scale(p5, 0))
    f4 = enc.lateral_convs[1](top_down(0, f5, p4))
    t3 = top_down(1, f4, p3)
    n4 = enc.pan_blocks[0](torch.cat([enc.downsample_convs[0](t3), f4], 1))
    return [t3, n4, enc.pan_blocks[1](torch.cat([enc.downsample_convs[1](n4), f5], 1))]


# ----------------------------------------------------------------------------- the reference, checked first

def module_weights(variant, seed=0):
    return fill(read_keys(os.path.join(CONFORMANCE, f"t2_{variant}_keys.tsv")), seed)


def test_the_written_out_modules_reproduce_the_seed0_fixtures():
    fx = {v: torch.load(os.path.join(CONFORMANCE, f"t2_{v}_seed0.pt"), weights_only=False) for v in REPLACED}
    w = module_weights("fapn")
    for i, c in enumerate(fx["fapn"]["backbone_feats"]):
        torch.testing.assert_close(fsm(w, f"feature_selection.{i}.", c), fx["fapn"]["proj_feats"][i], rtol=0, atol=1e-6)
    for j, step in enumerate(fx["fapn"]["steps"]):
        torch.testing.assert_close(fapn_concat(w, j, step["feat_high"], step["feat_low"]), step["output"],
                                   rtol=0, atol=1e-6)
    w = module_weights("adafpn")
    for j, step in enumerate(fx["adafpn"]["steps"]):
        torch.testing.assert_close(adafpn_block(w, j, step["feat_high"], step["feat_low"]), step["output"],
                                   rtol=0, atol=1e-6)
    for ours, theirs in zip(mgc(module_weights("mgc"), fx["mgc"]["backbone_feats"]), fx["mgc"]["outputs"]):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- whole models

@pytest.mark.parametrize("variant, params", [("fapn", 21_935_680), ("adafpn", 22_914_052), ("mgc", 21_134_736)])
def test_parameter_counts_are_those_of_the_authors_logs(variant, params):
    """"number of trainable parameters" in v1_r18vd_12e_coco_<variant>/train.log (the R18 baseline: 20,184,464)."""
    model = rtdetr_fine.build_model(config(f"ablation/rtdetr_r18_{variant}.yml"))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == params


def authors_state(variant, seed):
    """The whole R18 model as the authors' code names it: the official keys without the layers the variant
    replaces, and the variant's keys under encoder., filled for `seed`."""
    keys = {k: s for k, s in read_keys(os.path.join(CONFORMANCE, "rtdetr_r18vd_keys.tsv")).items()
            if not k.startswith(REPLACED[variant])}
    keys.update({f"encoder.{k}": s for k, s in read_keys(os.path.join(CONFORMANCE, f"t2_{variant}_keys.tsv")).items()})
    return fill(keys, seed)


def config(name):
    return rtdetr_fine.load_config(config_path(name), ["backbone.pretrained=null"])


@pytest.mark.parametrize("variant, seed", [("fapn", 1), ("adafpn", 2), ("mgc", 3)])
def test_whole_model_in_the_authors_layout_matches_the_reference(variant, seed, tmp_path):
    state = authors_state(variant, seed)
    path = tmp_path / "authors.pth"
    torch.save({"ema": {"module": state}}, path)
    model = rtdetr_fine.build_model(config(f"ablation/rtdetr_r18_{variant}.yml")).double().eval()
    assert set(model.state_dict()) == set(state)         # their names are ours: no mapping needed
    assert load_weights(model, str(path), log=lambda *a: None) == "ema"   # strict

    reference = rtdetr_fine.build_model(config("rtdetr_r18.yml")).double().eval()
    missing, _ = reference.load_state_dict({k: v for k, v in state.items() if k in reference.state_dict()},
                                           strict=False)
    assert missing and all(k.startswith(REPLACED[variant]) for k in missing)   # unused by the reference
    w = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    reference.encoder.forward = lambda feats: reference_encoder(reference.encoder, w, variant, feats)

    images = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
    with torch.no_grad():
        ours, expected = model(images), reference(images)
    torch.testing.assert_close(ours["pred_logits"], expected["pred_logits"], rtol=0, atol=1e-6)
    torch.testing.assert_close(ours["pred_boxes"], expected["pred_boxes"], rtol=0, atol=1e-6)


def test_a_table2_checkpoint_in_the_baseline_config_is_refused_naming_the_module(tmp_path):
    path = tmp_path / "fapn.pth"
    torch.save({"model": authors_state("fapn", 0)}, path)
    with pytest.raises(CheckpointMismatchError, match="with FaPN(.|\n)*encoder.feature_selection"):
        load_weights(rtdetr_fine.build_model(config("rtdetr_r18.yml")), str(path))
