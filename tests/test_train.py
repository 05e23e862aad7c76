"""train.py: distributed consistency, exact resume, data hygiene and the user-facing errors."""
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, config_path, free_port, read_log, run_script, tiny_demo_args

from rtdetr_fine.data import make_hygiene_dataset, make_shapes_dataset

DEMO = config_path("demo/rtdetr_r18_fine_shapes.yml")


def train(argv):
    """python train.py ARGV, in this process; a non-zero exit fails the calling test."""
    assert run_script("train.py", argv) == 0


def train_error(argv, capsys):
    """python train.py ARGV that must fail: its stderr (one message, no traceback)."""
    capsys.readouterr()
    assert run_script("train.py", argv) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def tiny_demo(tmp_path, out, *extra):
    return tiny_demo_args(DEMO, tmp_path, out, *extra)


def test_two_process_ddp_keeps_ranks_identical_with_an_empty_rank(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           os.path.join(ROOT, "tests", "ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    info = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert info[0]["world"] == 2 and info[0]["steps"] == info[1]["steps"] == 3
    assert torch.equal(r0, r1)                       # DDP kept the replicas identical
    init = _initial_params()
    assert not torch.equal(init, r0)                 # and they did train


def _initial_params():
    import rtdetr_fine
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18_fine.yml"), [
        "backbone.pretrained=null", "num_classes=3", "decoder.num_queries=20", "decoder.num_denoising=10",
        "postprocessor.num_top_queries=20"])
    torch.manual_seed(0)
    return torch.cat([p.detach().flatten() for p in rtdetr_fine.build_model(cfg).parameters()])


def test_resume_repeats_the_uninterrupted_run(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    train(tiny_demo(tmp_path, full, "epochs=2"))
    train(tiny_demo(tmp_path, part, "epochs=1"))
    assert (part / "last.pth").exists()
    train(tiny_demo(tmp_path, part, "epochs=2") + ["-r", str(part / "last.pth")])
    a, b = read_log(full), read_log(part)
    assert [r["epoch"] for r in a] == [0, 1] and [r["epoch"] for r in b] == [0, 1]
    for key in ("train_loss", "train_loss_vfl", "train_loss_bbox_dn_0", "val_AP50", "lr"):
        assert a[1][key] == pytest.approx(b[1][key], rel=1e-6, abs=1e-9), key
    ckpt = torch.load(part / "last.pth", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["iteration"] == 4 and ckpt["ema"]["updates"] == 4
    assert set(ckpt) >= {"model", "ema", "optimizer", "lr_scheduler", "scaler", "config"}


def test_hygiene_dataset_trains_one_epoch(tmp_path):
    h = make_hygiene_dataset(tmp_path / "hyg")
    out = tmp_path / "out"
    args = tiny_demo(tmp_path, out, "demo.enabled=false", "epochs=1", "num_classes=3",   # file has 2 categories
                     f"train_dataloader.dataset.img_folder={h['img_folder']}",
                     f"train_dataloader.dataset.ann_file={h['ann_file']}",
                     f"val_dataloader.dataset.img_folder={h['img_folder']}",
                     f"val_dataloader.dataset.ann_file={h['ann_file']}", "train_dataloader.batch_size=2",
                     "train_dataloader.dataset.exif_transpose=true", "val_dataloader.dataset.exif_transpose=true")
    train(args)
    log = read_log(out)
    assert len(log) == 1 and all(v == v for v in log[0].values() if isinstance(v, float))   # no NaN
    assert (out / "last.pth").exists()


def test_coco_config_on_any_small_coco_format_set(tmp_path):
    """The issue's command: the full R18+FINE config, only data paths and class count changed."""
    paths = make_shapes_dataset(tmp_path / "set", num_train=4, num_val=2, image_size=96, num_classes=3)
    out = tmp_path / "run"
    train(["-c", config_path("rtdetr_r18_fine.yml"), "-u",
                f"train_dataloader.dataset.img_folder={paths['train_img_folder']}",
                f"train_dataloader.dataset.ann_file={paths['train_ann_file']}",
                f"val_dataloader.dataset.img_folder={paths['val_img_folder']}",
                f"val_dataloader.dataset.ann_file={paths['val_ann_file']}",
                "num_classes=3", "remap_mscoco_category=False", "epochs=1", f"output_dir={out}",
                "backbone.pretrained=null",   # no network here; users keep the ImageNet download
                "train_dataloader.multi_scale=[480]", "train_dataloader.num_workers=0",
                "train_dataloader.total_batch_size=4", "val_dataloader.num_workers=0"])
    assert (out / "last.pth").exists() and len(read_log(out)) == 1


def test_missing_coco_stops_early_with_instructions(capsys):
    msg = train_error(["-c", config_path("rtdetr_r18_fine.yml"), "-u",
                       "train_dataloader.dataset.img_folder=/nonexistent/train2017"], capsys)
    assert "/nonexistent/train2017" in msg and "instances_train2017.json" in msg
    assert "python train.py -c configs/demo/rtdetr_r18_fine_shapes.yml" in msg


def test_broken_annotation_file_and_missing_image_are_named(tmp_path, capsys):
    paths = make_shapes_dataset(tmp_path / "set", num_train=4, num_val=2, image_size=64, num_classes=3)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [], "annotations": [')
    base = ["-c", DEMO, "--device", "cpu", "-u", "demo.enabled=false", f"output_dir={tmp_path / 'o'}",
            f"train_dataloader.dataset.img_folder={paths['train_img_folder']}",
            f"val_dataloader.dataset.img_folder={paths['val_img_folder']}",
            f"val_dataloader.dataset.ann_file={paths['val_ann_file']}", "train_dataloader.num_workers=0",
            "val_dataloader.num_workers=0", "epochs=1"]
    assert "broken.json" in train_error(base + [f"train_dataloader.dataset.ann_file={broken}"], capsys)

    ann = json.loads(open(paths["train_ann_file"]).read())
    missing_name = ann["images"][0]["file_name"]
    os.remove(os.path.join(paths["train_img_folder"], missing_name))
    assert missing_name in train_error(base + [f"train_dataloader.dataset.ann_file={paths['train_ann_file']}",
                                               "train_dataloader.batch_size=4"], capsys)


def test_unknown_override_key_is_named(capsys):
    assert "optimizer.learning_rate" in train_error(["-c", DEMO, "-u", "optimizer.learning_rate=1"], capsys)


def test_resume_on_data_with_another_class_set_names_both(tmp_path):
    from rtdetr_fine.data.classes import ClassSet
    from rtdetr_fine.engine.training_state import restore_training
    path = tmp_path / "last.pth"
    torch.save({"model": {}, "optimizer": {}, "lr_scheduler": {}, "epoch": 0,
                "classes": ClassSet(3, (3, 17, 90), ("a", "b", "c")).to_dict()}, path)
    with pytest.raises(ValueError, match=r"last\.pth was trained with category ids \[3, 17, 90\].*\[1, 2\]"):
        restore_training(str(path), None, None, None, None, None, ClassSet(2, (1, 2), ("x", "y")))


def test_anydepth_without_distillation_trains_at_full_depth_and_evaluates_the_given_depth(tmp_path, capsys):
    out = tmp_path / "out"   # anydepth.distill: false (the distillation: tests/test_distill.py)
    train(tiny_demo(tmp_path, out, "epochs=1", "anydepth.enabled=true", "anydepth.distill=false") + ["--depth", "min"])
    log = read_log(out)
    assert log[0]["val_depth"] == "min (backbone=1,1,1,1 neck=1 decoder=3)"
    state = torch.load(out / "last.pth", weights_only=True)["model"]
    # training ran at full depth: the main norms moved from their init (1), their twins (only used by
    # the evaluation at `min`, in eval mode) did not
    for norm in ("backbone.res_layers.0.blocks.0.branch2a.norm", "encoder.lateral_convs.0.norm"):
        assert not torch.equal(state[f"{norm}.weight"], torch.ones_like(state[f"{norm}.weight"])), norm
        assert torch.equal(state[f"{norm}.skip.weight"], torch.ones_like(state[f"{norm}.skip.weight"])), norm
    other = tmp_path / "other"   # `out` holds a run now: a new run there is refused before --depth is looked at
    assert "decoder=9, but the model has 3 decoder layers" in train_error(
        tiny_demo(tmp_path, other, "epochs=1", "anydepth.enabled=true") + ["--depth", "decoder=9"], capsys)
    assert "needs an any-depth config" in train_error(tiny_demo(tmp_path, other, "epochs=1") + ["--depth", "min"],
                                                      capsys)


# ---------------------------------------------------------------- hostile inputs (issue 16)

def test_rerun_without_resume_refuses_and_names_the_ways_on(custom_run, capsys):
    out, ckpt = custom_run["out_dir"], custom_run["ckpt"]
    stamp = os.stat(ckpt).st_mtime_ns
    msg = train_error(["-c", custom_run["config"], "--device", "cpu", "-u", f"output_dir={out}",
                       *custom_run["overrides"]], capsys)
    assert msg.count("\n") == 1 and msg.startswith("train.py: error: ")
    assert f"output_dir {out} already holds a run" in msg
    assert f"-r {ckpt}" in msg and "--overwrite" in msg
    assert os.stat(ckpt).st_mtime_ns == stamp                # nothing was touched


def test_resuming_a_finished_run_says_so(custom_run, capsys):
    capsys.readouterr()
    assert run_script("train.py", ["-c", custom_run["config"], "--device", "cpu", "-r", str(custom_run["ckpt"]),
                                   "-u", "epochs=1", f"output_dir={custom_run['out_dir']}",
                                   *custom_run["overrides"]]) == 0
    out = capsys.readouterr().out
    assert f"nothing to do: {custom_run['ckpt']} has completed 1 epochs and epochs=1" in out
    assert "-u epochs=N" in out


@pytest.mark.parametrize("override, named", [
    ("train_dataloader.image_size=100", "train_dataloader.image_size must be a multiple of 32"),
    ("val_dataloader.image_size=100", "val_dataloader.image_size must be a multiple of 32"),
    ("epochs=1.5", "epochs must be an integer >= 1"),
    ("epochs=-1", "epochs must be an integer >= 1"),
    ("fine.attention=bogus", "override 'fine.attention=bogus': fine.attention must be one of"),
])
def test_out_of_range_config_values_stop_before_any_work(tmp_path, capsys, override, named):
    msg = train_error(["-c", DEMO, "--device", "cpu", "-u", f"output_dir={tmp_path / 'o'}", override], capsys)
    assert named in msg
    assert not (tmp_path / "o").exists()


def test_bad_device_and_checkpoint_are_one_line(tmp_path, capsys):
    assert "--device 'gpu'" in train_error(["-c", DEMO, "--device", "gpu", "-u", f"output_dir={tmp_path / 'o'}"],
                                           capsys)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    msg = train_error(["-c", DEMO, "--device", "cpu", "-t", str(empty), "-u", f"output_dir={tmp_path / 'o'}"], capsys)
    assert f"checkpoint {empty} is empty (0 bytes)" in msg


def test_bad_image_in_a_dataloader_worker_is_one_message_naming_it(tmp_path, capsys):
    paths = make_shapes_dataset(tmp_path / "set", num_train=4, num_val=2, image_size=64, num_classes=3)
    name = json.loads(open(paths["train_ann_file"]).read())["images"][0]["file_name"]
    image = os.path.join(paths["train_img_folder"], name)
    with open(image, "r+b") as f:
        f.truncate(40)                                       # a truncated download
    msg = train_error(["-c", DEMO, "--device", "cpu", "-u", "demo.enabled=false", f"output_dir={tmp_path / 'o'}",
                       f"train_dataloader.dataset.img_folder={paths['train_img_folder']}",
                       f"train_dataloader.dataset.ann_file={paths['train_ann_file']}",
                       f"val_dataloader.dataset.img_folder={paths['val_img_folder']}",
                       f"val_dataloader.dataset.ann_file={paths['val_ann_file']}", "train_dataloader.num_workers=1",
                       "train_dataloader.batch_size=4", "train_dataloader.image_size=64",
                       "val_dataloader.image_size=64", "decoder.num_queries=30", "postprocessor.num_top_queries=30",
                       "epochs=1"], capsys).splitlines()[-1]    # after the progress bar
    assert msg.startswith("train.py: error: cannot decode image ") and image in msg
    assert "DataLoader worker" not in msg and "Original Traceback" not in msg


def test_ctrl_c_during_a_save_names_the_last_complete_checkpoint_and_stale_temps_go(tmp_path, capsys, monkeypatch):
    import rtdetr_fine.checkpoint as checkpoint
    out = tmp_path / "run"
    out.mkdir()
    stale = out / "last.pth.k1ll3d.tmp"                        # left by a save killed in an earlier run
    stale.write_bytes(b"\0" * 1024)
    real_save, saves = checkpoint.save_atomic, []

    def save_then_interrupt(obj, path):
        saves.append(path)
        if len(saves) == 1 or os.path.basename(path) == "best.pth" and len(saves) == 2:
            return real_save(obj, path)
        try:                                                  # Ctrl-C inside torch.save: torch's writer then
            raise KeyboardInterrupt                           # fails with its own error on the way out
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")
    monkeypatch.setattr(checkpoint, "save_atomic", save_then_interrupt)
    capsys.readouterr()
    code = run_script("train.py", tiny_demo(tmp_path, out, "epochs=2"))
    captured = capsys.readouterr()
    assert code == 130 and "Traceback" not in captured.err
    assert captured.err.splitlines()[-1] == f"train.py: interrupted; last complete checkpoint: {out / 'last.pth'} (1 epochs)"
    assert not stale.exists() and "last.pth.k1ll3d.tmp" in captured.out
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 0


def test_best_checkpoint_follows_the_configs_voc_metric_and_survives_a_resume(tmp_path, monkeypatch):
    """evaluator.metric: voc07 -> best.pth is the epoch with the best VOC07 mAP (log: val_voc07_mAP,
    val_voc07_per_class, best_voc07_mAP; no best_AP), and a resumed run keeps the best value it had.
    The mAP is set per epoch (0.2, 0.5, 0.3) so that the choice is not decided by ties at 0."""
    from rtdetr_fine.evaluation import metric
    real, values = metric.voc_eval, iter([0.2, 0.5, 0.3])
    monkeypatch.setattr(metric, "voc_eval", lambda *a, **k: real(*a, **k)._replace(mAP=next(values)))
    out = tmp_path / "run"
    train(tiny_demo(tmp_path, out, "epochs=2", "evaluator.metric=voc07"))
    train(tiny_demo(tmp_path, out, "epochs=3", "evaluator.metric=voc07") + ["-r", str(out / "last.pth")])
    log = read_log(out)
    assert [r["val_voc07_mAP"] for r in log] == [0.2, 0.5, 0.3]
    assert [r["best_voc07_mAP"] for r in log] == [0.2, 0.5, 0.5]
    assert all("best_AP" not in r and "val_AP" in r for r in log)                 # COCO numbers still logged
    assert list(log[0]["val_voc07_per_class"]) == ["circle", "square", "triangle"]
    best = torch.load(out / "best.pth", weights_only=True)
    assert best["epoch"] == 1 and best["best_voc07_mAP"] == 0.5
    assert torch.load(out / "last.pth", weights_only=True)["best_voc07_mAP"] == 0.5


def test_hostile_configs_and_seeds_end_as_one_message_in_seconds(tmp_path, capsys):
    """Issue 25: an alias bomb hung train.py (> 150 s), a self-reference was a RecursionError, seed=2**70 an
    OverflowError naming nothing; each is now a message naming the file / key / flag, before any work."""
    import threading
    bomb = tmp_path / "bomb.yml"
    bomb.write_text(f"__include__: {DEMO}\nx0: &x0 [a, a, a, a, a, a, a, a, a, a]\n" + "".join(
        f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]\n" for i in range(1, 10)))
    selfref = tmp_path / "self.yml"
    selfref.write_text(f"__include__: {DEMO}\nfine: &f {{attention: *f}}\n")
    out = ["--device", "cpu", "-u", f"output_dir={tmp_path / 'o'}"]
    cases = [(["-c", str(bomb), *out], "bomb.yml: the document expands (through its YAML aliases)"),
             (["-c", str(selfref), *out], "self.yml: key 'fine.attention' refers to itself"),
             (["-c", DEMO, *out, f"seed={2**70}"], f"override 'seed={2**70}': seed must be an integer >= 0 and <= "),
             (["-c", DEMO, "--seed", str(2**70), *out], f"--seed must be an integer >= 0 and <= {2**63 - 1}, got")]
    for argv, message in cases:
        capsys.readouterr()
        codes = []
        worker = threading.Thread(target=lambda: codes.append(run_script("train.py", argv)), daemon=True)
        worker.start()
        worker.join(60)
        assert codes == [1], f"train.py {argv} did not fail within 60 s"
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- run history and failed saves (issue 25)

def test_disk_full_keeps_the_last_pair_and_an_older_checkpoint_cannot_train_over_the_run(tmp_path, capsys,
                                                                                     monkeypatch):
    """Disk full at epoch 1's save: one message naming last.pth and the OS error, epoch 0's last.pth and
    log line kept, no temp file. Then (the run having gone on to epoch 1) -r of an epoch-0 copy is refused
    with both epochs named; --overwrite goes back on purpose and resumes, each epoch once in log.txt."""
    import errno
    import shutil

    import rtdetr_fine.checkpoint as checkpoint
    out = tmp_path / "run"
    real_save, saves = checkpoint.save_atomic, []

    def save_on_a_full_disk(obj, path):
        saves.append(path)
        if obj["epoch"] == 0:
            return real_save(obj, path)
        real_fsync = os.fsync

        def full(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.fsync = full                                          # torch.save succeeded; the disk is full
        try:
            return real_save(obj, path)
        finally:
            os.fsync = real_fsync
    monkeypatch.setattr(checkpoint, "save_atomic", save_on_a_full_disk)
    msg = train_error(tiny_demo(tmp_path, out, "epochs=2"), capsys).splitlines()[-1]
    monkeypatch.undo()
    assert msg == (f"train.py: error: cannot write {out / 'last.pth'}: No space left on device; the previous "
                   "last.pth is kept; the temporary file was removed")
    assert [r["epoch"] for r in read_log(out)] == [0]
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 0
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    shutil.copy(out / "last.pth", out / "epoch0.pth")
    later = torch.load(out / "last.pth", weights_only=True)        # the run went on to epoch 1 (cheaply: relabelled)
    later["epoch"] = 1
    torch.save(later, out / "last.pth")
    (out / "log.txt").write_text((out / "log.txt").read_text() + json.dumps({"epoch": 1, "old": True}) + "\n")

    stamp = os.stat(out / "last.pth").st_mtime_ns
    msg = train_error(tiny_demo(tmp_path, out, "epochs=2") + ["-r", str(out / "epoch0.pth")], capsys)
    assert f"-r {out / 'epoch0.pth'} is at epoch 0, but {out / 'last.pth'} of the same run is at epoch 1" in msg
    assert os.stat(out / "last.pth").st_mtime_ns == stamp and [r["epoch"] for r in read_log(out)] == [0, 1]
    train(tiny_demo(tmp_path, out, "epochs=2") + ["-r", str(out / "epoch0.pth"), "--overwrite"])   # resumes
    log = read_log(out)
    assert [r["epoch"] for r in log] == [0, 1] and "old" not in log[1]    # epoch 1 once: the new one
    assert [json.loads(line) for line in (out / "log.previous.txt").read_text().splitlines()] == [
        {"epoch": 1, "old": True}]
    assert torch.load(out / "last.previous.pth", weights_only=True)["epoch"] == 1
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 1


def _rank_pid(port, rank):
    """The pid of torchrun's worker of `rank` in the job rendezvousing on `port` (from /proc)."""
    import glob
    for environ in glob.glob("/proc/[0-9]*/environ"):
        try:
            with open(environ, "rb") as f:
                variables = f.read().split(b"\0")
        except OSError:
            continue
        if f"MASTER_PORT={port}".encode() in variables and f"RANK={rank}".encode() in variables:
            return int(environ.split("/")[2])
    return None


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds torchrun's workers in /proc")
def test_a_killed_rank_ends_the_distributed_run_and_last_pth_resumes(tmp_path):
    """Issue 25: 2-process CPU torchrun (gloo); rank 1 killed (SIGKILL) after the first checkpoint: the run
    ends within seconds (torchrun stops rank 0; RTDETR_DIST_TIMEOUT bounds a collective waiting for a
    process that is gone), last.pth is intact and -r resumes it."""
    import signal
    import time
    out, port = tmp_path / "run", free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", RTDETR_DIST_TIMEOUT="30")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           os.path.join(ROOT, "train.py"), *tiny_demo(tmp_path, out, "epochs=20", "train_dataloader.batch_size=2")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while not (out / "last.pth").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert (out / "last.pth").exists(), "no checkpoint within 240 s"
        os.kill(_rank_pid(port, 1), signal.SIGKILL)
        killed = time.time()
        _, err = proc.communicate(timeout=60)                      # a hang fails here
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0 and time.time() - killed < 60
    assert "local_rank: 1" in err and "Signal 9" in err            # torchrun names the killed rank
    epoch = torch.load(out / "last.pth", weights_only=True)["epoch"]   # intact: a complete torch.save file
    train(tiny_demo(tmp_path, out, f"epochs={epoch + 2}") + ["-r", str(out / "last.pth")])
    assert [r["epoch"] for r in read_log(out)] == list(range(epoch + 2))
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == epoch + 1
