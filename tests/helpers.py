"""Paths and runners shared by the tests (imported as `helpers`; conftest.py puts this folder on sys.path)."""
import json
import os
import runpy
import socket
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
# the shared conformance fixtures (README there), beside the repository as in CI: ../shared/conformance
CONFORMANCE = os.path.join(os.path.dirname(ROOT), "shared", "conformance")


def free_port() -> int:
    """A TCP port nobody listens on now, for torchrun's rendezvous: a fixed port fails when two test
    runs (two checkouts, or CI next to a developer's run) start 2-process jobs at the same time."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_path(name):
    return os.path.join(ROOT, "configs", name)


def run_script(script, argv):
    """Run a top-level script (e.g. "train.py") in this process as `python script argv...` would,
    without importing it as a module. Returns the exit code; a string passed to sys.exit is printed
    to stderr, as the interpreter does."""
    saved = sys.argv
    sys.argv = [script, *map(str, argv)]
    try:
        runpy.run_path(os.path.join(ROOT, script), run_name="__main__")
        return 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved


def write_custom_id_set(root, num_train=8, num_val=4, image_size=128):
    """The shapes set with category ids {3, 17, 90} instead of {1, 2, 3}, listed out of id order:
    circle = 90, square = 3, triangle = 17. Returns the make_shapes_dataset paths."""
    import json

    from rtdetr_fine.data import make_shapes_dataset
    paths = make_shapes_dataset(root, num_train=num_train, num_val=num_val, image_size=image_size, num_classes=3)
    new_ids = {1: 90, 2: 3, 3: 17}
    for split in ("train", "val"):
        with open(paths[f"{split}_ann_file"]) as f:
            data = json.load(f)
        data["categories"] = [dict(c, id=new_ids[c["id"]]) for c in data["categories"]]
        data["annotations"] = [dict(a, category_id=new_ids[a["category_id"]]) for a in data["annotations"]]
        with open(paths[f"{split}_ann_file"], "w") as f:
            json.dump(data, f)
    return paths


def tiny_demo_args(config, tmp_path, out, *extra):
    """train.py/eval.py arguments that shrink a shapes demo config to seconds: 8 train / 4 val images of 96 px."""
    return ["-c", config, "--device", "cpu", "-u", f"output_dir={out}", f"demo.root={tmp_path / 'shapes'}",
            "demo.num_train=8", "demo.num_val=4", "demo.image_size=96", "train_dataloader.image_size=96",
            "val_dataloader.image_size=96", "train_dataloader.batch_size=4", "train_dataloader.num_workers=0",
            "val_dataloader.num_workers=0", "decoder.num_queries=30", "postprocessor.num_top_queries=30",
            "decoder.num_denoising=20", *extra]


def read_log(out):
    """The records of a run's log.txt, one dict per epoch."""
    with open(os.path.join(out, "log.txt")) as f:
        return [json.loads(line) for line in f]


def table2_model(variant, *overrides):
    """R18 with the FINE paper's Table 2 module `variant` (fapn, adafpn, mgc), built from
    configs/ablation/rtdetr_r18_<variant>.yml without pretrained weights."""
    import rtdetr_fine
    cfg = rtdetr_fine.load_config(config_path(f"ablation/rtdetr_r18_{variant}.yml"),
                                  ["backbone.pretrained=null", *overrides])
    return rtdetr_fine.build_model(cfg)


def table2_authors_encoder(variant):
    """(the R18 + `variant` encoder in float64 eval mode with the module weights of the authors' fixture,
    the fixture): ../shared/conformance/t2_<variant>_seed0.pt and t2_<variant>_keys.tsv (README_t2.md)."""
    import torch
    from fill_weights import fill, read_keys
    fx = torch.load(os.path.join(CONFORMANCE, f"t2_{variant}_seed0.pt"), weights_only=False)
    module = fill(read_keys(os.path.join(CONFORMANCE, f"t2_{variant}_keys.tsv")), fx["weights_seed"])
    encoder = table2_model(variant).encoder.double().eval()
    unexpected = encoder.load_state_dict(module, strict=False).unexpected_keys
    assert not unexpected, f"names of the authors' module that the encoder does not have: {unexpected}"
    return encoder, fx


def assert_maps_close(ours, theirs, atol=1e-6):
    """Float64 maps (or lists of them, pair by pair) equal to `atol`."""
    import torch
    pairs = zip(ours, theirs, strict=True) if isinstance(ours, (list, tuple)) else [(ours, theirs)]
    for i, (a, b) in enumerate(pairs):
        torch.testing.assert_close(a, b, rtol=0, atol=atol, msg=lambda m, i=i: f"map {i}: {m}")
