"""SSD300 (rtdetr_fine/ssd/model.py): torchvision's network, loss and post-processing behind our interfaces."""
import json

import pytest
import torch
from helpers import config_path, run_script
from torchvision.models.detection import ssd300_vgg16
from torchvision.ops import box_convert

import rtdetr_fine
from rtdetr_fine import deploy
from rtdetr_fine.modules.cfsam import CFSAM
from rtdetr_fine.data.coco_ids import COCO_LABEL_TO_CATEGORY
from rtdetr_fine.evaluation import coco_bbox_eval, load_coco_gt, to_coco_results
from rtdetr_fine.data.loaders import build_val_loader, prepare_demo_data
from rtdetr_fine.ssd import (SSD300, SSDCriterion, SSDPostProcessor, head_in_channels, load_vgg16_features,
                             to_ssd_targets)

NUM_CLASSES = 3   # object classes; torchvision's SSD gets 4 outputs (background first)


def torchvision_ssd(seed=0):
    """ssd300_vgg16 without weights, its class head scaled down so softmax scores do not saturate
    (a random VGG16 on 0-255 pixels gives logits in the tens: all top scores would tie at 1.0)."""
    torch.manual_seed(seed)
    model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1)
    with torch.no_grad():
        for conv in model.head.classification_head.module_list:
            conv.weight.mul_(0.02)
    return model


def our_targets():
    """Image 0: two boxes (labels 0 and 2), image 1: none. cxcywh normalised, labels 0..K-1."""
    return [{"boxes": torch.tensor([[0.5, 0.4, 0.3, 0.5], [0.2, 0.7, 0.15, 0.2]]), "labels": torch.tensor([0, 2])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]


def test_criterion_equals_torchvision_training_loss():
    """Our labels 0..K-1 / cxcywh targets through SSDCriterion give torchvision's SSD losses for its
    labels 1..K / xyxy pixel targets (torchvision resizes 300 -> 300: the identity)."""
    tv = torchvision_ssd().train()
    images = torch.rand(2, 3, 300, 300)
    targets = our_targets()
    tv_targets = [{"boxes": box_convert(t["boxes"], "cxcywh", "xyxy") * 300, "labels": t["labels"] + 1}
                  for t in targets]
    expected = tv(list(images), tv_targets)
    ours = SSDCriterion({"loss_loc": 1.0, "loss_conf": 1.0})(SSD300(tv)(images), targets)
    torch.testing.assert_close(ours["loss_loc"], expected["bbox_regression"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours["loss_conf"], expected["classification"], rtol=1e-4, atol=1e-5)
    shifted = [{"boxes": t["boxes"], "labels": (t["labels"] + 1) % NUM_CLASSES} for t in targets]
    wrong = SSDCriterion({"loss_loc": 1.0, "loss_conf": 1.0})(SSD300(tv)(images), shifted)
    assert not torch.allclose(wrong["loss_conf"], expected["classification"])   # the labels matter


def test_criterion_weights_the_terms():
    tv = torchvision_ssd()
    outputs = SSD300(tv)(torch.rand(1, 3, 300, 300))
    plain = SSDCriterion({"loss_loc": 1.0, "loss_conf": 1.0})(outputs, our_targets()[:1])
    weighted = SSDCriterion({"loss_loc": 2.0, "loss_conf": 0.5})(outputs, our_targets()[:1])
    torch.testing.assert_close(weighted["loss_loc"], 2 * plain["loss_loc"])
    torch.testing.assert_close(weighted["loss_conf"], 0.5 * plain["loss_conf"])


def test_postprocessor_equals_torchvision_detections_in_original_pixels():
    tv = torchvision_ssd().eval()
    images = torch.rand(2, 3, 300, 300)
    with torch.no_grad():
        expected = tv(list(images))
        outputs = SSD300(tv).eval()(images)
    sizes = torch.tensor([[300, 300], [600, 450]])          # (w, h) of the original images
    results = SSDPostProcessor(NUM_CLASSES)(outputs, sizes)
    for exp, got, (w, h) in zip(expected, results, sizes.tolist()):
        assert len(got["scores"]) == len(exp["scores"]) > 0
        assert torch.equal(got["labels"], exp["labels"] - 1)                  # background index dropped
        torch.testing.assert_close(got["scores"], exp["scores"])
        scale = torch.tensor([w / 300, h / 300, w / 300, h / 300])
        torch.testing.assert_close(got["boxes"], exp["boxes"] * scale, rtol=1e-5, atol=1e-3)


def synthetic_outputs(batch=3, seed=0):
    """Head outputs with unsaturated scores; image 1 is mostly background (fewer than 200 detections)."""
    g = torch.Generator().manual_seed(seed)
    anchors = SSD300(torchvision_ssd()).default_boxes(torch.zeros(1, 3, 300, 300), [
        torch.zeros(1, 1, s, s) for s in (38, 19, 10, 5, 3, 1)])
    logits = 2 * torch.randn(batch, len(anchors), NUM_CLASSES + 1, generator=g)
    if batch > 1:
        logits[1, :, 0] += 12.0
        logits[1, :40, 0] -= 12.0
    return {"cls_logits": logits, "bbox_regression": 0.5 * torch.randn(batch, len(anchors), 4, generator=g),
            "anchors": anchors}


def test_deploy_form_gives_the_same_detections_as_fixed_size_tensors():
    outputs = synthetic_outputs()
    sizes = torch.tensor([[300, 300], [640, 480], [100, 200]])
    post = SSDPostProcessor(NUM_CLASSES)
    results = post(outputs, sizes)
    labels, boxes, scores = post.deploy()(outputs, sizes)
    assert labels.shape == (3, 200) and boxes.shape == (3, 200, 4) and scores.shape == (3, 200)
    assert len(results[1]["scores"]) < 200                       # the padding case is exercised
    for i, r in enumerate(results):
        n = len(r["scores"])
        assert torch.equal(labels[i, :n], r["labels"])
        torch.testing.assert_close(scores[i, :n], r["scores"], rtol=0, atol=0)
        torch.testing.assert_close(boxes[i, :n], r["boxes"])
        assert (scores[i, n:] == 0).all() and (boxes[i, n:] == 0).all()


def test_postprocessor_remaps_labels_to_coco_ids():
    outputs = synthetic_outputs(batch=1)
    sizes = torch.tensor([[300, 300]])
    plain = SSDPostProcessor(NUM_CLASSES)(outputs, sizes)[0]
    coco = SSDPostProcessor(NUM_CLASSES, label_to_category=COCO_LABEL_TO_CATEGORY)(outputs, sizes)[0]
    assert set(plain["labels"].tolist()) == {0, 1, 2}
    assert torch.equal(coco["labels"], torch.tensor(COCO_LABEL_TO_CATEGORY)[plain["labels"]])


@pytest.fixture(scope="module")
def ssd_cfgs():
    cfgs = {}
    for name in ("ssd300.yml", "ssd300_cfsam.yml"):
        cfgs[name] = rtdetr_fine.load_config(config_path(name), ["backbone.pretrained=null", "num_classes=3"])
    return cfgs


def test_ssd300_with_and_without_cfsam_give_the_same_output_format(ssd_cfgs):
    images = torch.rand(2, 3, 300, 300)
    formats, state_keys = [], []
    for name, cfg in ssd_cfgs.items():
        torch.manual_seed(0)
        model = rtdetr_fine.build_model(cfg).eval()
        with torch.no_grad():
            outputs = model(images)
        formats.append({k: tuple(v.shape) for k, v in outputs.items()})
        detections = rtdetr_fine.build_postprocessor(cfg)(outputs, torch.tensor([[300, 300]] * 2))
        assert [sorted(d) for d in detections] == [["boxes", "labels", "scores"]] * 2
        state_keys.append(set(model.state_dict()))
    assert formats[0] == formats[1] == {"cls_logits": (2, 8732, 4), "bbox_regression": (2, 8732, 4),
                                         "anchors": (8732, 4)}
    plain, with_cfsam = state_keys
    assert plain == set(torchvision_ssd().state_dict())            # torchvision's names: its checkpoints fit
    assert plain < with_cfsam and all(k.startswith("cross_layer.") for k in with_cfsam - plain)


def test_cfsam_sits_between_the_extractor_and_the_head(ssd_cfgs):
    model = rtdetr_fine.build_model(ssd_cfgs["ssd300_cfsam.yml"])
    assert isinstance(model.cross_layer, CFSAM)
    assert model.cross_layer.in_channels == [512, 1024, 512, 256, 256, 256]
    seen = []
    model.head.register_forward_pre_hook(lambda m, args: seen.append([tuple(x.shape) for x in args[0]]))
    model.cross_layer.register_forward_hook(lambda m, args, out: seen.append("cfsam"))
    with torch.no_grad():
        model.eval()(torch.rand(1, 3, 300, 300))
    assert seen == ["cfsam", [(1, 512, 38, 38), (1, 1024, 19, 19), (1, 512, 10, 10), (1, 256, 5, 5),
                              (1, 256, 3, 3), (1, 256, 1, 1)]]


def test_vgg16_weights_load_by_conv_order_and_conv1_is_frozen(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers   # vgg16's `features` without its 100M-param classifier
    from rtdetr_fine.ssd import build_torchvision_ssd300
    torch.manual_seed(1)
    path = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}, path)
    ssd = build_torchvision_ssd300(NUM_CLASSES, str(path))
    state = torch.load(path, weights_only=True)
    assert torch.equal(ssd.backbone.features[0].weight, state["features.0.weight"])      # conv1_1
    assert torch.equal(ssd.backbone.extra[0][5].weight, state["features.28.weight"])     # conv5_3
    assert not ssd.backbone.features[0].weight.requires_grad and ssd.backbone.features[5].weight.requires_grad
    with pytest.raises(ValueError, match="13 conv weights"):
        load_vgg16_features(ssd.backbone, {"features.0.weight": state["features.0.weight"]})
    with pytest.raises(FileNotFoundError, match="backbone.pretrained"):
        build_torchvision_ssd300(NUM_CLASSES, str(tmp_path / "missing.pth"))


def test_head_channels_are_the_six_prediction_maps():
    assert head_in_channels(torchvision_ssd()) == [512, 1024, 512, 256, 256, 256]


# ----------------------------------------------------------------------------- train.py / eval.py / export_onnx.py

DEMO = config_path("demo/ssd300_cfsam_shapes.yml")
TINY = 272   # the smallest size SSD300's extractor takes is 268 (conv11_2 needs a 3x3 input)


def tiny_overrides(root, out_dir):
    """The SSD300 + CFSAM demo shrunk to seconds: 4 train / 3 val images of 272 px, one epoch of 2 iterations."""
    return ["epochs=1", f"output_dir={out_dir}", f"demo.root={root}", "demo.num_train=4", "demo.num_val=3",
            f"demo.image_size={TINY}", f"train_dataloader.image_size={TINY}", f"val_dataloader.image_size={TINY}",
            "train_dataloader.batch_size=2", "train_dataloader.num_workers=0", "val_dataloader.num_workers=0",
            "cfsam.num_layers=1"]


def test_train_eval_export_ssd300_cfsam_on_a_tiny_set(tmp_path, capsys):
    root, out = tmp_path / "shapes", tmp_path / "run"
    overrides = tiny_overrides(root, out)
    assert run_script("train.py", ["-c", DEMO, "--device", "cpu", "-u", *overrides]) == 0
    log = [line for line in (out / "log.txt").read_text().splitlines() if line]
    assert len(log) == 1
    record = json.loads(log[0])
    assert record["iteration"] == 2 and {"train_loss_loc", "train_loss_conf", "val_AP", "val_AP50"} <= set(record)
    assert record["train_loss"] == pytest.approx(record["train_loss_loc"] + record["train_loss_conf"])
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert any(k.startswith("cross_layer.") for k in ckpt["model"])

    assert run_script("eval.py", ["-c", DEMO, "-r", str(out / "last.pth"), "--device", "cpu", "-u", *overrides,
                                  "--output-json", str(tmp_path / "report.json")]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["images"] == 3 and report["weights"] == "model"          # no EMA in the SSD recipe
    assert report["AP"] == pytest.approx(record["val_AP"], abs=1e-9)       # eval.py scores what training scored
    assert report["params"] == sum(v.numel() for k, v in ckpt["model"].items()
                                   if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))

    onnx_path = tmp_path / "ssd300_cfsam.onnx"
    capsys.readouterr()
    code = run_script("export_onnx.py", ["-c", DEMO, "-r", str(out / "last.pth"), "-o", str(onnx_path),
                                         "-u", *overrides, "--check"])
    text = capsys.readouterr().out
    assert code == 0 and onnx_path.is_file()
    assert f"input 1x3x{TINY}x{TINY}" in text                               # the config's size by default
    assert "NonMaxSuppression" in text and "% of the top-100 detections agree" in text


def test_onnxruntime_agrees_with_pytorch_for_ssd300_cfsam(tmp_path):
    """The deploy graph (model + NMS post-processing) at 300 px, dynamic batch, against PyTorch."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = deploy.build_deploy_model(config_path("ssd300_cfsam.yml"), overrides=["num_classes=3"],
                                           log=lambda *a: None)
    with torch.no_grad():                          # unsaturated scores (see torchvision_ssd)
        for conv in model.model.head.classification_head.module_list:
            conv.weight.mul_(0.02)
    path = str(tmp_path / "ssd300_cfsam.onnx")
    deploy.export(model, path, 300, 300, dynamic=True)
    graph = onnx.load(path)
    assert [i.name for i in graph.graph.input] == ["images", "orig_target_sizes"]
    assert [o.name for o in graph.graph.output] == ["labels", "boxes", "scores"]
    for batch_size in (1, 3):
        images, sizes = deploy.example_inputs(batch_size, 300, 300, seed=batch_size)
        sizes[-1] = torch.tensor([640, 480])
        with torch.no_grad():
            expected = [t.numpy() for t in model(images, sizes)]
        got = deploy.run_onnxruntime(path, images, sizes)
        assert [a.shape for a in got] == [(batch_size, 200), (batch_size, 200, 4), (batch_size, 200)]
        top100 = lambda outs: [a[:, :100] for a in outs]  # noqa: E731
        assert deploy.twin_fraction(top100(expected), top100(got)) >= 0.95, batch_size


def test_ground_truth_encoded_as_outputs_scores_ap_1_through_the_eval_path(tmp_path):
    """Box coding, label offset, matching, post-processing and COCO evaluation agree end to end: the
    val ground truth encoded as SSD outputs (each matched default box: its object's class and the
    box-coder offsets of its ground truth; the rest background) decodes to AP 1 and zero loc loss."""
    cfg = rtdetr_fine.load_config(DEMO, ["cross_layer=null", f"demo.root={tmp_path}", "demo.num_train=1",
                                         "demo.num_val=6", "val_dataloader.num_workers=0"])
    prepare_demo_data(cfg)
    loader, dataset, _ = build_val_loader(cfg)
    model = rtdetr_fine.build_model(cfg)
    criterion, postprocessor = rtdetr_fine.build_criterion(cfg), rtdetr_fine.build_postprocessor(cfg)
    map_sizes = (38, 19, 10, 5, 3, 1)                                  # the six prediction maps at 300 px
    detections, boxes_seen = [], 0
    for images, targets in loader:
        anchors = model.default_boxes(images, [torch.zeros(1, 1, s, s) for s in map_sizes])   # [8732, 4]
        logits = torch.zeros(len(targets), anchors.shape[0], NUM_CLASSES + 1)
        logits[..., 0] = 10.0                                          # background
        offsets = torch.zeros(len(targets), anchors.shape[0], 4)
        for b, t in enumerate(to_ssd_targets(targets)):
            matched = criterion.match(anchors, t["boxes"])
            positive = matched >= 0
            logits[b, positive] = 0.0
            logits[b, positive, t["labels"][matched[positive]]] = 10.0
            offsets[b, positive] = criterion.box_coder.encode_single(t["boxes"][matched[positive]], anchors[positive])
            boxes_seen += len(t["boxes"])
        outputs = {"cls_logits": logits, "bbox_regression": offsets, "anchors": anchors}
        assert criterion(outputs, targets)["loss_loc"] == 0
        sizes = torch.stack([t["orig_size"] for t in targets])
        for t, result in zip(targets, postprocessor(outputs, sizes)):
            detections += to_coco_results(int(t["image_id"]), result, dataset.label2category)
    assert boxes_seen > 0
    stats, _ = coco_bbox_eval(load_coco_gt(dataset.coco.dataset), detections, verbose=False)
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)


def test_the_voc_recipe_decays_every_parameter_as_its_config_says():
    """configs/ssd300.yml: one optimiser group, weight decay 5e-4 on every trainable parameter (biases and the
    conv4_3 L2Norm scale too), as its comment states."""
    from rtdetr_fine.engine.optim import build_optimizer
    cfg = rtdetr_fine.load_config(config_path("ssd300_cfsam.yml"), ["backbone.pretrained=null"])
    model = rtdetr_fine.build_model(cfg)
    groups = build_optimizer(model, cfg).param_groups
    assert len(groups) == 1 and groups[0]["weight_decay"] == 5e-4 and groups[0]["lr"] == 1e-3
    decayed = {id(p) for p in groups[0]["params"]}
    named = dict(model.named_parameters())
    assert decayed == {id(p) for p in named.values() if p.requires_grad}
    assert id(named["backbone.scale_weight"]) in decayed and id(named["head.regression_head.module_list.0.bias"]) in decayed
