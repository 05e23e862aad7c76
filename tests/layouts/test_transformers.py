"""transformers' RT-DETR layout (layouts/transformers.py): a randomly initialised RTDetrForObjectDetection
(built from its config, nothing downloaded), saved with save_pretrained and loaded through load_weights,
gives transformers' outputs, for the hub's R18vd and R50vd configurations; and the errors name the file."""
import contextlib
import io
import json
import os
import re
import shutil
import socket

import pytest
import torch
from fill_weights import fill, read_keys
from helpers import FIXTURES, config_path, run_script
from safetensors.torch import load_file, save_file

import rtdetr_fine
from rtdetr_fine.checkpoint import check_checkpoint_file, load_weights
from rtdetr_fine.layouts import to_our_layout
from rtdetr_fine.layouts import transformers as hf_layout

# the hub models' configurations (PekingU/rtdetr_r18vd, PekingU/rtdetr_r50vd), our configs and the
# official key lists they correspond to
ARCHS = {
    "r18vd": ({"num_labels": 80, "encoder_in_channels": [128, 256, 512], "hidden_expansion": 0.5, "decoder_layers": 3,
               "backbone": {"hidden_sizes": [64, 128, 256, 512], "depths": [2, 2, 2, 2], "layer_type": "basic"}},
              "rtdetr_r18.yml", "rtdetr_r18vd_keys.tsv"),
    "r50vd": ({"num_labels": 80}, "rtdetr_r50.yml", "rtdetr_r50vd_keys.tsv"),
}
SIZE = 640


@contextlib.contextmanager
def no_network():
    """Nothing here may download (a timm or ImageNet backbone, a config): any connection fails the test."""
    def refuse(sock, address, *args):
        raise AssertionError(f"network access attempted: {address}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", refuse)
        yield


def transformers_model(arch: str):
    """RTDetrForObjectDetection of the hub's configuration for `arch`, every tensor random (fill_weights,
    seed 0: the library's own init zeroes the box heads' last layers and the sampling offsets, and
    leaves the norm statistics at 0 and 1), float64, eval mode."""
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrResNetConfig
    kwargs = dict(ARCHS[arch][0])
    backbone = kwargs.pop("backbone", None)
    if backbone is not None:   # the default backbone config is R50vd's, feeding stages 2-4 to the encoder
        kwargs["backbone_config"] = RTDetrResNetConfig(**backbone, out_indices=[2, 3, 4])
    model = RTDetrForObjectDetection(RTDetrConfig(**kwargs)).eval()
    model.load_state_dict(fill({k: tuple(v.shape) for k, v in model.state_dict().items()}, seed=0))
    return model.double()


def image():
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """arch -> (save_pretrained folder, transformers' logits and boxes on image()), each built once."""
    made = {}

    def get(arch):
        if arch not in made:
            folder = tmp_path_factory.mktemp(f"hf_{arch}")
            with no_network(), torch.no_grad():
                model = transformers_model(arch)
                out = model(pixel_values=image())
                model.save_pretrained(folder)
            made[arch] = folder, out.logits, out.pred_boxes
        return made[arch]
    return get


@pytest.fixture
def r18_folder(saved):
    """The file-level checks need one architecture: R18vd's folder."""
    return saved("r18vd")[0]


def our_model(arch: str, *overrides):
    cfg = rtdetr_fine.load_config(config_path(ARCHS[arch][1]), ["backbone.pretrained=null", *overrides])
    return rtdetr_fine.build_model(cfg).double().eval()


@pytest.fixture(scope="module")
def refusing_r18():
    """Our R18 for the checks whose load_weights fails before it changes the model."""
    return our_model("r18vd")


@pytest.mark.parametrize("arch", ARCHS)
def test_save_pretrained_writes_the_files_this_layout_reads(saved, arch):
    folder = saved(arch)[0]
    assert {hf_layout.WEIGHTS_FILE, hf_layout.CONFIG_FILE} <= set(os.listdir(folder))
    with open(folder / hf_layout.CONFIG_FILE) as f:
        assert json.load(f)["architectures"] == [hf_layout.ARCHITECTURE]


@pytest.mark.parametrize("arch", ARCHS)
def test_mapped_names_and_shapes_are_the_official_ones(saved, arch):
    """Every tensor lands on an official name with the official shape, and nothing is left over:
    q/k/v fused into in_proj, R18's frozen norms given a num_batches_tracked, R50's left without."""
    folder = saved(arch)[0]
    ours, layout = to_our_layout(load_file(folder / hf_layout.WEIGHTS_FILE))
    assert layout == hf_layout.NAME
    assert {k: tuple(v.shape) for k, v in ours.items()} == read_keys(os.path.join(FIXTURES, ARCHS[arch][2]))


@pytest.mark.parametrize("arch", ARCHS)
def test_our_model_gives_the_outputs_of_transformers(saved, arch):
    """load_weights(model, folder), strict: logits and boxes within 1e-5 at 640x640 in float64.
    Measured here (transformers 5.25): max |diff| R18vd 1.2e-7 (logits) and 6.2e-8 (boxes), R50vd 1.0e-7
    and 4.4e-8, with mean |logit| 0.7 and box std 0.32. transformers builds the anchors and AIFI's
    position embedding in float64 where the official model (and ours) uses float32 constants."""
    folder, logits, boxes = saved(arch)
    model = our_model(arch)
    assert load_weights(model, str(folder)) == "state_dict"
    with torch.no_grad():
        out = model(image())
    assert logits.std() > 0.5 and boxes.std() > 0.1   # the random weights give varied outputs, not a constant
    torch.testing.assert_close(out["pred_logits"], logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(out["pred_boxes"], boxes, rtol=0, atol=1e-5)


def test_the_safetensors_file_alone_loads_the_same(r18_folder, tmp_path):
    from_folder, from_file, from_blob = our_model("r18vd"), our_model("r18vd"), our_model("r18vd")
    load_weights(from_folder, str(r18_folder))
    load_weights(from_file, str(r18_folder / hf_layout.WEIGHTS_FILE))
    blob = tmp_path / "3f9a0c"   # a hub cache blob: no extension, told by its header
    shutil.copy(r18_folder / hf_layout.WEIGHTS_FILE, blob)
    load_weights(from_blob, str(blob))
    reference = from_folder.state_dict()
    for model in (from_file, from_blob):
        assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


def test_hub_files_top_level_head_copies_are_checked_and_dropped(r18_folder):
    state = load_file(r18_folder / hf_layout.WEIGHTS_FILE)
    expected = hf_layout.to_ours(state)
    heads = [k for k in state if k.startswith(("model.decoder.class_embed.", "model.decoder.bbox_embed."))]
    copies = {k[len("model.decoder."):]: state[k].clone() for k in heads}
    without_heads = {k: v for k, v in state.items() if k not in heads}
    for mapped in (hf_layout.to_ours({**state, **copies}),           # both: the copies are dropped
                   hf_layout.to_ours({**without_heads, **copies})):   # the copies only: they take the heads' place
        assert mapped.keys() == expected.keys() and all(torch.equal(v, expected[k]) for k, v in mapped.items())
    copies["class_embed.1.bias"] += 1
    with pytest.raises(ValueError, match=r"class_embed\.1\.bias and model\.decoder\.class_embed\.1\.bias differ"):
        hf_layout.to_ours({**state, **copies})


def test_finetuning_from_transformers_weights_reinitialises_only_the_class_heads(r18_folder):
    said = []
    model = our_model("r18vd", "num_classes=3")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    load_weights(model, str(r18_folder), finetune=True, log=said.append)
    assert len(said) == 1 and "the checkpoint has 80 classes, the model 3" in said[0]
    state = model.state_dict()
    ours = to_our_layout(load_file(r18_folder / hf_layout.WEIGHTS_FILE))[0]
    assert torch.equal(state["backbone.conv1.conv1_1.conv.weight"], ours["backbone.conv1.conv1_1.conv.weight"])
    assert torch.equal(state["decoder.dec_score_head.0.weight"], before["decoder.dec_score_head.0.weight"])


def test_a_folder_without_weights_is_named_with_what_it_holds(r18_folder, refusing_r18, tmp_path):
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    shutil.copy(r18_folder / hf_layout.CONFIG_FILE, config_only)
    (config_only / "pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(FileNotFoundError) as e:
        load_weights(refusing_r18, str(config_only))
    assert f"transformers checkpoint {config_only} has no model.safetensors" in str(e.value)
    assert "config.json, pytorch_model.bin" in str(e.value)

    run_folder = tmp_path / "run"
    run_folder.mkdir()
    (run_folder / "last.pth").write_bytes(b"x")
    said = f"checkpoint {run_folder} is a directory, neither a .pth file nor a transformers checkpoint folder"
    with pytest.raises(IsADirectoryError, match=re.escape(said) + ".* it holds last.pth"):
        check_checkpoint_file(str(run_folder))


def test_a_transformers_model_of_another_architecture_is_named(r18_folder, refusing_r18, tmp_path):
    other = tmp_path / "rtdetr_v2"
    shutil.copytree(r18_folder, other)
    (other / "config.json").write_text(json.dumps({"architectures": ["RTDetrV2ForObjectDetection"],
                                                   "model_type": "rt_detr_v2"}))
    said = f"{other / 'config.json'} describes a transformers RTDetrV2ForObjectDetection (model_type 'rt_detr_v2'), "
    with pytest.raises(ValueError, match=re.escape(said + "not RT-DETR v1")):
        check_checkpoint_file(str(other))

    # the bare file of an RT-DETR v2 (its names are v1's plus the deformable attention's n_points_scale)
    state = load_file(r18_folder / hf_layout.WEIGHTS_FILE)
    state["model.decoder.layers.0.encoder_attn.n_points_scale"] = torch.ones(12)
    path = tmp_path / "v2.safetensors"
    save_file(state, path)
    said = f"checkpoint {path}: it holds RT-DETR v2 (RTDetrV2ForObjectDetection) weights"
    with pytest.raises(ValueError, match=re.escape(said)):
        load_weights(refusing_r18, str(path))

    # a transformers detector whose names are not RT-DETR's: described as load_weights describes any file
    path = tmp_path / "detr.safetensors"
    save_file({"model.backbone.conv_encoder.model.conv1.weight": torch.zeros(64, 3, 7, 7),
               "class_labels_classifier.weight": torch.zeros(92, 256)}, path)
    said = "looks like not a detector of this repo (2 tensors, e.g. class_labels_classifier.weight"
    with pytest.raises(ValueError, match=re.escape(said)):
        load_weights(refusing_r18, str(path))


@pytest.mark.parametrize("damage, reason", [
    ("cut_data", "is truncated or corrupt (Error while deserializing header"),
    ("cut_header", "is not a readable safetensors file: its header is truncated or corrupt"),
])
def test_a_broken_safetensors_file_is_named(r18_folder, refusing_r18, tmp_path, damage, reason):
    data = (r18_folder / hf_layout.WEIGHTS_FILE).read_bytes()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / hf_layout.WEIGHTS_FILE).write_bytes(data[:len(data) // 2] if damage == "cut_data" else data[:100])
    with pytest.raises(ValueError) as e:
        load_weights(refusing_r18, str(broken))
    assert str(broken / hf_layout.WEIGHTS_FILE) in str(e.value) and reason in str(e.value)


def test_eval_and_predict_take_a_transformers_folder(r18_folder, tmp_path):
    """eval.py -r FOLDER and predict.py -r FOLDER: the command lines' early checks and class set accept it."""
    from rtdetr_fine.data import make_shapes_dataset
    paths = make_shapes_dataset(tmp_path / "shapes", num_train=1, num_val=2, image_size=160, num_classes=3, seed=3)
    common = ["-c", config_path("rtdetr_r18.yml"), "-r", str(r18_folder), "--device", "cpu"]
    small = ["backbone.pretrained=null", "val_dataloader.image_size=320", "val_dataloader.num_workers=0"]
    report = tmp_path / "report.json"
    assert run_script("eval.py", [*common, "--output-json", str(report), "-u", *small,
                                  f"val_dataloader.dataset.img_folder={paths['val_img_folder']}",
                                  f"val_dataloader.dataset.ann_file={paths['val_ann_file']}"]) == 0
    with open(report) as f:
        result = json.load(f)
    assert result["weights"] == "state_dict" and result["images"] == 2

    picture = os.path.join(paths["val_img_folder"], sorted(os.listdir(paths["val_img_folder"]))[0])
    out = tmp_path / "predicted"
    with contextlib.redirect_stderr(io.StringIO()):   # the progress bar
        assert run_script("predict.py", [*common, picture, "-o", str(out),
                                         "--score-threshold", "0", "-u", *small]) == 0
    with open(out / "detections.json") as f:
        assert len(json.load(f)) == 300   # every query of the COCO model, on the one image
