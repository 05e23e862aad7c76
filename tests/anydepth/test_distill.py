"""Any-depth self-distillation (rtdetr_fine/anydepth/distill.py): the alignment terms, the pairing by ground
truth, one training step, DDP with an empty rank and exact resume through train.py."""
import glob
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from helpers import CONFORMANCE, ROOT, config_path, free_port, read_log, run_script, tiny_demo_args

import rtdetr_fine
from rtdetr_fine.anydepth import SwitchableNorm, get_depth, using_depth
from rtdetr_fine.anydepth.distill import (DISTILL_TERMS, FEATURE_MODULES, DistillationCriterion, FullAndMin,
                                          pair_by_ground_truth, pooled_feature_kl, recording_outputs)
from rtdetr_fine.engine import train_one_epoch
from rtdetr_fine.engine.optim import ModelEMA, build_optimizer

SMALL = ["backbone.pretrained=null", "num_classes=3", "decoder.num_queries=20", "postprocessor.num_top_queries=20",
         "decoder.num_denoising=10"]


def load(name="rtdetr_r18_anydepth.yml", *overrides):
    return rtdetr_fine.load_config(config_path(name), [*SMALL, *overrides])


def criterion_for(cfg):
    _, criterion = rtdetr_fine.build_training(cfg, rtdetr_fine.build_model(cfg), rtdetr_fine.build_criterion(cfg))
    assert isinstance(criterion, DistillationCriterion)
    return criterion


def targets_two_images():
    return [{"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]])},
            {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]


def toy_outputs(seed, queries=6, classes=3, requires_grad=False):
    """Final-layer outputs and two levels of backbone / encoder maps, like FullAndMin returns."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape):
        return torch.randn(*shape, generator=g).requires_grad_(requires_grad)

    return {"pred_logits": t(2, queries, classes), "pred_boxes": (0.2 + 0.6 * torch.rand(2, queries, 4, generator=g))
            .mul(torch.tensor([1, 1, 0.5, 0.5])).requires_grad_(requires_grad),
            "backbone_feats": [t(2, 4, 4, 4), t(2, 8, 2, 2)], "encoder_feats": [t(2, 5, 4, 4), t(2, 5, 2, 2)]}


def clone_outputs(outputs, requires_grad=True):
    def c(x):
        return [c(v) for v in x] if isinstance(x, list) else x.detach().clone().requires_grad_(requires_grad)
    return {k: c(v) for k, v in outputs.items()}


def alignment_terms(losses):
    return {k: v for k, v in losses.items() if k in DISTILL_TERMS}


def test_alignment_is_zero_when_the_student_equals_the_teacher():
    criterion = criterion_for(load())
    teacher = toy_outputs(0)
    same = alignment_terms(criterion({"full": teacher, "min": clone_outputs(teacher)}, targets_two_images()))
    assert set(same) == set(DISTILL_TERMS)
    for k, v in same.items():
        assert abs(v.item()) < 2e-5, k          # GIoU loss: eps in its denominators
    other = alignment_terms(criterion({"full": teacher, "min": toy_outputs(1)}, targets_two_images()))
    for k, v in other.items():
        assert v.item() > 1e-3, k          # the same terms do see a different student


def test_no_gradient_reaches_the_teacher_outputs():
    criterion = criterion_for(load())
    teacher, student = toy_outputs(0, requires_grad=True), toy_outputs(1, requires_grad=True)
    losses = criterion({"full": teacher, "min": student}, targets_two_images())
    sum(alignment_terms(losses).values()).backward()
    leaves = lambda o: [o["pred_logits"], o["pred_boxes"], *o["backbone_feats"], *o["encoder_feats"]]  # noqa: E731
    assert all(t.grad is None for t in leaves(teacher))
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in leaves(student))


def test_feature_kl_equals_a_hand_computation():
    # two levels: [1, 2, 2, 2] and [1, 1, 1, 2] -> pooled vectors of 3 channels per image
    s_maps = [torch.tensor([[[[1., 3.], [5., 7.]], [[0., 0.], [2., 2.]]]]), torch.tensor([[[[4., 0.]]]])]
    t_maps = [torch.tensor([[[[2., 2.], [2., 2.]], [[1., 2.], [3., 2.]]]]), torch.tensor([[[[1., 1.]]]])]
    s, t = [4.0, 1.0, 2.0], [2.0, 2.0, 1.0]      # global average pools, levels concatenated
    p = [math.exp(v) / sum(math.exp(u) for u in t) for v in t]
    q = [math.exp(v) / sum(math.exp(u) for u in s) for v in s]
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))       # KL(p_teacher || q_student), batch of 1
    assert pooled_feature_kl(s_maps, t_maps).item() == pytest.approx(expected, rel=1e-6)
    # a batch of two copies: batch mean, the same value
    two = pooled_feature_kl([torch.cat([m, m]) for m in s_maps], [torch.cat([m, m]) for m in t_maps])
    assert two.item() == pytest.approx(expected, rel=1e-6)


def outputs_predicting(targets, order, queries=8, classes=3):
    """Outputs whose query order[k] of each image predicts ground-truth box k exactly (confident
    class); the other queries are background far from every box."""
    logits = torch.full((len(targets), queries, classes), -8.0)
    boxes = torch.tensor([0.05, 0.05, 0.02, 0.02]).repeat(len(targets), queries, 1)
    for i, t in enumerate(targets):
        for k, (label, box) in enumerate(zip(t["labels"], t["boxes"])):
            logits[i, order[i][k], label] = 8.0
            boxes[i, order[i][k]] = box
    return {"pred_logits": logits, "pred_boxes": boxes}


def test_pairing_by_ground_truth_with_permuted_query_orders():
    criterion = criterion_for(load())
    targets = targets_two_images()
    teacher_order, student_order = [[5, 1], [3]], [[0, 6], [7]]
    teacher, student = outputs_predicting(targets, teacher_order), outputs_predicting(targets, student_order)
    pairs = pair_by_ground_truth(criterion.base.matcher(teacher, targets), criterion.base.matcher(student, targets),
                                 [len(t["labels"]) for t in targets])
    got = [sorted(zip(t.tolist(), s.tolist())) for t, s in pairs]
    assert got == [sorted([(5, 0), (1, 6)]), [(3, 7)]]
    terms = criterion.prediction_alignment(teacher, student, targets, num_boxes=3.0)
    assert all(v.item() == pytest.approx(0.0, abs=2e-5) for v in terms.values())   # same predictions, other slots
    swapped = outputs_predicting(targets, [[6, 0], [7]])                           # box 0 <-> box 1 in image 0
    assert criterion.prediction_alignment(teacher, swapped, targets, 3.0)["loss_kd_bbox"].item() == \
        pytest.approx(0.0, abs=2e-5)
    # a box that one matching leaves out (fewer queries than boxes there) has no pair
    teacher_idx = [(torch.tensor([4]), torch.tensor([1])), (torch.tensor([], dtype=torch.int64),) * 2]
    student_idx = [(torch.tensor([2, 9]), torch.tensor([0, 1])), (torch.tensor([], dtype=torch.int64),) * 2]
    pairs = pair_by_ground_truth(teacher_idx, student_idx, [2, 0])
    assert pairs[0][0].tolist() == [4] and pairs[0][1].tolist() == [9] and pairs[1][0].numel() == 0


def small_batch(seed=0, size=96):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(2, 3, size, size, generator=g), targets_two_images())]


def test_one_training_step_trains_main_and_switchable_norms_and_every_parameter():
    cfg = load()
    torch.manual_seed(0)
    model = rtdetr_fine.build_model(cfg)
    module, criterion = rtdetr_fine.build_training(cfg, model, rtdetr_fine.build_criterion(cfg))
    assert isinstance(module, FullAndMin) and module.detector is model
    norms = {n: m for n, m in model.named_modules() if isinstance(m, SwitchableNorm)}
    backbone_norm, neck_norm = norms["backbone.res_layers.1.blocks.0.branch2a.norm"], norms["encoder.input_proj.0.1"]
    skippable_conv = model.backbone.res_layers[1].blocks[1].branch2a.conv.weight
    watched = {"backbone main": backbone_norm.weight, "backbone twin": backbone_norm.skip.weight,
               "backbone twin mean": backbone_norm.skip.running_mean, "neck main": neck_norm.weight,
               "neck twin": neck_norm.skip.weight, "skippable block": skippable_conv}
    before = {k: v.detach().clone() for k, v in watched.items()}
    optimizer = build_optimizer(model, cfg)
    constant_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)   # no warm-up: a visible step
    stats, step = train_one_epoch(module, criterion, small_batch(), optimizer, constant_lr, torch.device("cpu"), 0,
                                  ema=ModelEMA(model, 0.99, 10))
    assert step == 1
    for k, v in watched.items():
        assert not torch.equal(before[k], v), f"{k} did not change"
    # full and min together use every parameter: nothing is left without a gradient by a skip
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    assert set(DISTILL_TERMS) <= set(stats) and "loss_vfl" in stats and "min_loss_vfl_aux_0" in stats
    assert "min_loss_vfl" not in stats          # min's final layer learns from the teacher only
    assert get_depth(model) == model.anydepth.full   # the pair leaves the model at full depth


def test_distill_false_trains_the_model_itself():
    cfg = load("rtdetr_r18_anydepth.yml", "anydepth.distill=false")
    model, criterion = rtdetr_fine.build_model(cfg), rtdetr_fine.build_criterion(cfg)
    assert rtdetr_fine.build_training(cfg, model, criterion) == (model, criterion)
    with pytest.raises(ValueError, match="loss_kd_typo"):
        DistillationCriterion(criterion, {"loss_kd_typo": 1.0})


def test_two_process_ddp_distillation_keeps_ranks_identical_with_an_empty_rank(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           os.path.join(ROOT, "tests", "ddp_worker.py"), str(tmp_path), "anydepth"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    info = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert info[0]["world"] == 2 and info[0]["steps"] == info[1]["steps"] == 3
    assert info[0]["distilled"] and info[0]["loss_kd_bbox"] == pytest.approx(info[1]["loss_kd_bbox"])
    assert torch.equal(r0, r1)                       # DDP kept the replicas identical (twins included)
    cfg = load("rtdetr_r18_fine_anydepth.yml")
    torch.manual_seed(0)
    init = torch.cat([p.detach().flatten() for p in rtdetr_fine.build_model(cfg).parameters()])
    assert init.shape == r0.shape and not torch.equal(init, r0)


DEMO = config_path("demo/rtdetr_r18_anydepth_shapes.yml")


def tiny_demo(tmp_path, out, *extra):
    return tiny_demo_args(DEMO, tmp_path, out, *extra)


def test_train_py_distills_logs_both_depths_and_resumes_exactly(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert run_script("train.py", tiny_demo(tmp_path, full, "epochs=2")) == 0
    assert run_script("train.py", tiny_demo(tmp_path, part, "epochs=1")) == 0
    assert run_script("train.py", tiny_demo(tmp_path, part, "epochs=2") + ["-r", str(part / "last.pth")]) == 0
    a, b = read_log(full), read_log(part)
    assert [r["epoch"] for r in a] == [0, 1] and [r["epoch"] for r in b] == [0, 1]
    for key in ("train_loss", "train_loss_vfl", "train_loss_kd_class", "train_loss_kd_feat_encoder",
                "train_min_loss_bbox_dn_0", "val_AP50", "val_min_AP50", "lr"):
        assert a[1][key] == pytest.approx(b[1][key], rel=1e-6, abs=1e-9), key
    assert a[1]["val_depth"].startswith("full") and a[1]["best_AP"] == max(r["val_AP"] for r in a)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(full / "tensorboard")).Reload()
    assert {"val/AP", "val_min/AP"} <= set(events.Tags()["scalars"])


# ---------------------------------------------------------------- the authors' distillation (issue 22)

AUTHORS_TERMS = {"loss_vfl_kd": "loss_kd_class", "loss_bbox_kd": "loss_kd_bbox", "loss_giou_kd": "loss_kd_giou",
                 "loss_features_backbone_kd": "loss_kd_feat_backbone", "loss_features_encoder_kd": "loss_kd_feat_encoder"}
ANYDEPTH_FIXTURES = sorted(glob.glob(os.path.join(CONFORMANCE, "anydepth_r50_seed*.pt")))


def as_our_outputs(outputs):
    """The authors' recorded outputs -> what FullAndMin returns (their feature lists under our names)."""
    return {"pred_logits": outputs["pred_logits"], "pred_boxes": outputs["pred_boxes"],
            "backbone_feats": outputs["intermediate_backbone"], "encoder_feats": outputs["intermediate_encoder"]}


@pytest.mark.parametrize("path", ANYDEPTH_FIXTURES, ids=os.path.basename)
def test_the_authors_config_distills_as_their_code(path):
    """build_training with configs/rtdetr_r50_adn_6x.yml on the recorded teacher / student outputs: their five
    weighted terms (measured on seed 0: within 2e-16 relative) and their pairs."""
    case = torch.load(path, weights_only=False)["distill"]
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r50_adn_6x.yml"), ["backbone.pretrained=null"])
    criterion = criterion_for(cfg)
    assert {AUTHORS_TERMS[k]: float(v) for k, v in case["weights"].items()} == criterion.weight_dict
    m = criterion.base.matcher
    assert (m.cost_class, m.cost_bbox, m.cost_giou, m.alpha, m.gamma) == \
        tuple(float(case["matcher"][k]) for k in ("cost_class", "cost_bbox", "cost_giou", "alpha", "gamma"))
    teacher, student = as_our_outputs(case["teacher"]), as_our_outputs(case["student"])
    losses = criterion({"full": teacher, "min": student}, case["targets"])
    for theirs, ours in AUTHORS_TERMS.items():
        assert losses[ours].item() == pytest.approx(case["losses"][theirs], rel=1e-6, abs=0), ours
    pairs = pair_by_ground_truth(criterion.base.matcher(teacher, case["targets"]),
                                 criterion.base.matcher(student, case["targets"]),
                                 [len(t["labels"]) for t in case["targets"]])
    for (t_query, s_query), recorded in zip(pairs, case["pairs"]):
        assert t_query.tolist() == recorded["teacher_query"].tolist()
        assert s_query.tolist() == recorded["student_query"].tolist()


def test_the_reductions_differ_where_the_authors_differ():
    """Class term: authors = (queries / classes) x plain; features: the same, but for one image the
    authors' squeeze makes their batch mean a mean over the channels."""
    teacher, student = toy_outputs(0, queries=6, classes=3), toy_outputs(1, queries=6, classes=3)
    plain = criterion_for(load("rtdetr_r18_anydepth.yml"))
    authors = criterion_for(load("rtdetr_r18_anydepth.yml", "anydepth.distill_reduction=authors"))
    targets = targets_two_images()
    a = alignment_terms(authors({"full": teacher, "min": student}, targets))
    p = alignment_terms(plain({"full": teacher, "min": student}, targets))
    assert a["loss_kd_class"].item() == pytest.approx(p["loss_kd_class"].item() * 6 / 3, rel=1e-6)
    for k in ("loss_kd_bbox", "loss_kd_giou", "loss_kd_feat_backbone", "loss_kd_feat_encoder"):
        assert a[k].item() == pytest.approx(p[k].item(), rel=1e-6), k
    one_s, one_t = [m[:1] for m in student["backbone_feats"]], [m[:1] for m in teacher["backbone_feats"]]
    channels = sum(m.shape[1] for m in one_s)
    assert pooled_feature_kl(one_s, one_t, "authors").item() == \
        pytest.approx(pooled_feature_kl(one_s, one_t).item() / channels, rel=1e-6)
    with pytest.raises(ValueError, match="anydepth.distill_reduction"):
        DistillationCriterion(plain.base, {}, "mean")


def test_one_backward_gives_the_gradients_of_the_authors_two_backward_passes():
    """The authors backpropagate the full network's loss, then run the min network and backpropagate its
    loss; we run both and backpropagate the sum once. Same gradients for every parameter (float64)."""
    cfg = load("rtdetr_r50_adn_6x.yml")
    torch.manual_seed(0)
    model = rtdetr_fine.build_model(cfg).double().train()
    module, criterion = rtdetr_fine.build_training(cfg, model, rtdetr_fine.build_criterion(cfg))
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    targets = [{k: v.double() if k == "boxes" else v for k, v in t.items()} for t in targets_two_images()]

    def gradients():
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return grads

    torch.manual_seed(2)                                   # the denoising queries' draw, the same in both runs
    sum(criterion(module(images, targets), targets).values()).backward()
    ours = gradients()

    torch.manual_seed(2)
    layout = model.anydepth
    with using_depth(model, layout.full), recording_outputs(model, FEATURE_MODULES) as feats:
        teacher = model(images, targets)
    teacher.update({f"{m}_feats": list(feats[m]) for m in FEATURE_MODULES})
    sum(criterion.base({k: v for k, v in teacher.items() if not k.endswith("_feats")}, targets).values()).backward()
    with using_depth(model, layout.min), recording_outputs(model, FEATURE_MODULES) as feats:
        student = model(images, targets)
    student.update({f"{m}_feats": list(feats[m]) for m in FEATURE_MODULES})
    detached = {k: [t.detach() for t in v] if isinstance(v, list) and k.endswith("_feats") else v
                for k, v in teacher.items()}
    student_terms = {k: v for k, v in criterion({"full": detached, "min": student}, targets).items()
                     if k in DISTILL_TERMS or k.startswith("min_")}
    sum(student_terms.values()).backward()
    theirs = gradients()

    assert ours.keys() == theirs.keys() and len(ours) > 100
    for name, grad in ours.items():
        torch.testing.assert_close(grad, theirs[name], rtol=1e-9, atol=1e-12, msg=name)


def test_independent_scales_run_each_pass_at_its_own_size():
    from rtdetr_fine.data.collate import PASS_SIZES
    cfg = load("rtdetr_r18_anydepth.yml", "anydepth.independent_scales=true")
    torch.manual_seed(0)
    module, _ = rtdetr_fine.build_training(cfg, rtdetr_fine.build_model(cfg), rtdetr_fine.build_criterion(cfg))
    seen = []
    module.detector.backbone.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    images = torch.rand(2, 3, 96, 96)
    sizes = torch.tensor([[64, 64], [128, 96]])
    targets = [{**t, PASS_SIZES: sizes} for t in targets_two_images()]
    outputs = module.train()(images, targets)
    assert seen == [(64, 64), (128, 96)]                    # the full pass, then the min pass
    assert outputs["full"]["backbone_feats"][0].shape[-2:] == (8, 8)
    assert outputs["min"]["backbone_feats"][0].shape[-2:] == (16, 12)
    seen.clear()
    module(images, targets_two_images())                    # no sizes drawn (multi-scale off): the batch as it is
    assert seen == [(96, 96), (96, 96)]


def test_train_py_with_independent_scales(tmp_path):
    out = tmp_path / "run"
    args = tiny_demo(tmp_path, out, "epochs=1", "anydepth.independent_scales=true", "anydepth.distill_reduction=authors",
                     "train_dataloader.no_aug_epochs=0", "train_dataloader.multi_scale=[64, 96]")
    assert run_script("train.py", args) == 0
    record = read_log(out)[0]
    assert record["train_loss_kd_class"] > 0 and math.isfinite(record["train_loss"])
