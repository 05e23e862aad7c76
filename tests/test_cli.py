"""rtdetr_fine/cli.py: the error boundary of the command lines and the output-path checks."""
import os

import pytest

from rtdetr_fine import cli
from rtdetr_fine.config import ConfigError

WORKER_ERROR = (
    "Caught OSError in DataLoader worker process 0.\n"
    "Original Traceback (most recent call last):\n"
    '  File "/x/torch/utils/data/_utils/worker.py", line 349, in _worker_loop\n'
    "    data = fetcher.fetch(index)\n"
    "OSError: cannot read image /data/val/000003.jpg (image id 3): image file is truncated\n")


def boundary(fn, capsys):
    """cli.run_main(fn) -> (exit code, stderr)."""
    capsys.readouterr()
    code = cli.run_main(lambda argv: fn(), [], prog="tool.py")
    return code, capsys.readouterr().err


@pytest.mark.parametrize("error", [ValueError("bad value in x.yml"), FileNotFoundError("nope.pth not found"),
                                   ConfigError("x.yml: epochs must be ..."), cli.UserError("--flag wrong")])
def test_user_errors_are_one_line_with_exit_code_1(capsys, error):
    def fail():
        raise error
    code, err = boundary(fail, capsys)
    assert code == cli.EXIT_ERROR
    assert err == f"tool.py: error: {error}\n"


def test_programming_errors_keep_their_traceback(capsys):
    def fail():
        raise KeyError("a bug")
    with pytest.raises(KeyError):
        boundary(fail, capsys)


def test_dataloader_worker_error_is_the_workers_message(capsys):
    def fail():
        raise OSError(WORKER_ERROR)      # torch re-raises the worker's OSError with this text
    code, err = boundary(fail, capsys)
    assert code == 1 and "Traceback" not in err and "DataLoader worker" not in err
    assert err.strip() == ("tool.py: error: cannot read image /data/val/000003.jpg (image id 3): "
                           "image file is truncated")

    def fail_wrapped():   # a worker exception torch could not rebuild comes as a RuntimeError
        raise RuntimeError(WORKER_ERROR.replace("Caught OSError", "Caught CocoFormatError")
                           .replace("OSError: cannot", "rtdetr_fine.data.coco.CocoFormatError: cannot"))
    code, err = boundary(fail_wrapped, capsys)
    assert code == 1 and err.startswith("tool.py: error: cannot read image /data/val/000003.jpg")


def test_ctrl_c_says_what_is_left_also_when_torch_wraps_it(capsys):
    def interrupted():
        cli.set_status("last complete checkpoint: out/last.pth (3 epochs)")
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:   # e.g. torch.save's zip writer failing while the interrupt unwinds
            raise RuntimeError("[enforce fail at inline_container.cc] . unexpected pos")
    code, err = boundary(interrupted, capsys)
    assert code == cli.EXIT_INTERRUPTED and "Traceback" not in err
    assert err == "tool.py: interrupted; last complete checkpoint: out/last.pth (3 epochs)\n"


def test_output_file_checks_fail_before_any_work(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        cli.check_output_file(str(tmp_path), "--output-json")
    with pytest.raises(NotADirectoryError, match="a_file is a file"):
        cli.check_output_file(str(tmp_path / "a_file" / "report.json"), "--output-json")
    with pytest.raises(NotADirectoryError, match="a_file is a file"):
        cli.check_output_dir(str(tmp_path / "a_file"), "-o")
    path = tmp_path / "new" / "deeper" / "report.json"
    assert cli.check_output_file(str(path)) == str(path)
    assert not (tmp_path / "new").exists()                 # checking creates nothing


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (a folder nobody can create files in)")
def test_unwritable_folder_is_named():
    with pytest.raises(PermissionError, match="/proc/self"):
        cli.check_output_file("/proc/self/report.json", "-o")


def test_write_text_atomic_leaves_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    cli.write_text_atomic(str(path), "old")

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        cli.write_text_atomic(str(path), "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["report.json"]   # no temp file left


# ---------------------------------------------------------------- the output guard (issue 25)

def test_an_output_that_is_holds_or_lies_in_an_input_is_refused_after_resolving_links(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes(b"x")
    (tmp_path / "link").symlink_to(images)
    inputs = [("INPUT", str(images / "a.jpg")), ("-c", str(tmp_path / "cfg.yml"))]
    cases = [(str(images / "a.jpg"), "is"), (str(tmp_path / "link" / "a.jpg"), "is"),   # the same file via a link
             (str(tmp_path), "contains"), (str(tmp_path / "link"), "contains"),
             (str(images / "a.jpg" / "x.png"), "lies inside")]
    for out, relation in cases:
        with pytest.raises(cli.UserError) as e:
            cli.check_outputs_apart([("-o", out)], inputs)
        assert f"-o {out} {relation} the input INPUT {images / 'a.jpg'}" in str(e.value)
    cli.check_outputs_apart([("-o", str(tmp_path / "out")), ("--x", None)], inputs + [("-r", None)])   # apart: fine


def _refused(script, argv, capsys, *named):
    """python SCRIPT ARGV fails with one message naming `named` (no traceback)."""
    from helpers import run_script
    capsys.readouterr()
    assert run_script(script, argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for text in named:
        assert text in err, err
    return err


def test_the_commands_refuse_to_write_over_their_inputs(tmp_path, capsys):
    """The issue's examples: predict DIR -o DIR, eval --save-detections <its val file>, eval --output-json
    <the checkpoint>, export_onnx -r ck -o ck, visualize_fine img -o img; nothing is changed."""
    from helpers import config_path
    import rtdetr_fine
    assert os.path.dirname(rtdetr_fine.__file__) == os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "rtdetr_fine")                              # this checkout's package
    demo = config_path("demo/rtdetr_r18_fine_shapes.yml")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "img.jpg").write_bytes(b"not looked at")
    ckpt = tmp_path / "ck.pth"
    ckpt.write_bytes(b"PK\x03\x04 weights")
    val = tmp_path / "shapes" / "annotations" / "instances_val.json"
    val.parent.mkdir(parents=True)
    val.write_text('{"images": []}')
    before = {p: p.read_bytes() for p in (photos / "img.jpg", ckpt, val)}
    common = ["-c", demo, "-r", str(ckpt), "-u", f"demo.root={tmp_path / 'shapes'}"]
    _refused("predict.py", [str(photos), "-o", str(photos), *common], capsys,
             f"-o {photos} is the input INPUT {photos}")
    _refused("eval.py", [*common, "--save-detections", str(val)], capsys,
             f"--save-detections {val} is the input val_dataloader.dataset.ann_file {val}")
    _refused("eval.py", [*common, "--output-json", str(ckpt)], capsys, f"--output-json {ckpt} is the input -r {ckpt}")
    _refused("export_onnx.py", ["-r", str(ckpt), "-o", str(ckpt)], capsys, f"-o {ckpt} is the input -r {ckpt}")
    _refused("tools/visualize_fine.py", [str(photos / "img.jpg"), "-r", str(ckpt), "-o", str(photos / "img.jpg")],
             capsys, f"-o {photos / 'img.jpg'} is the input IMAGE {photos / 'img.jpg'}")
    # variants: a folder of outputs inside the input folder; the config itself; via a symbolic link
    _refused("predict.py", [str(photos), "-o", str(photos / "drawn"), *common], capsys, "lies inside the input INPUT")
    _refused("eval.py", [*common, "--plots", str(tmp_path)], capsys, f"--plots {tmp_path} contains the input")
    _refused("predict.py", [str(photos / "img.jpg"), "-o", str(tmp_path), *common], capsys, "contains the input")
    (tmp_path / "curves.png").symlink_to(val)
    _refused("tools/plot_log.py", [str(val), "-o", str(tmp_path / "curves.png")], capsys,
             f"-o {tmp_path / 'curves.png'} is the input LOG {val}")
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(os.listdir(photos)) == ["img.jpg"]


def test_train_and_voc_to_coco_refuse_outputs_in_their_inputs(tmp_path, capsys):
    from helpers import config_path
    demo = config_path("demo/rtdetr_r18_fine_shapes.yml")
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "r18.pth").write_bytes(b"PK\x03\x04 weights")
    _refused("train.py", ["-c", demo, "-t", str(weights / "r18.pth"), "--device", "cpu",
                          "-u", f"output_dir={weights}", f"demo.root={tmp_path / 'shapes'}"], capsys,
             f"output_dir {weights} contains the input -t {weights / 'r18.pth'}")
    _refused("train.py", ["-c", demo, "--device", "cpu", "-u", f"output_dir={weights}", f"demo.root={tmp_path / 'shapes'}",
                          f"backbone.pretrained={weights / 'r18.pth'}"], capsys,
             f"output_dir {weights} contains the input backbone.pretrained {weights / 'r18.pth'}")
    _refused("train.py", ["-c", demo, "--device", "cpu", "-u", f"output_dir={tmp_path / 'shapes' / 'train' / 'run'}",
                          f"demo.root={tmp_path / 'shapes'}"], capsys, "lies inside the input train_dataloader.dataset.img_folder")
    assert not (tmp_path / "shapes").exists()
    annotations = tmp_path / "VOCdevkit" / "VOC2007" / "Annotations"
    annotations.mkdir(parents=True)
    _refused("tools/voc_to_coco.py", [str(tmp_path / "VOCdevkit"), "--sets", "2007/test", "-o",
                                      str(annotations / "000001.xml")], capsys, "lies inside the input --sets 2007/test")


def test_a_collective_failing_because_another_process_died_is_one_line(capsys):
    def fail():
        cli.set_status("last complete checkpoint: out/last.pth (2 epochs)")
        raise RuntimeError("[/x/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
                           "[127.0.0.1]:25776. This is typically caused by a remote worker crashing.")
    code, err = boundary(fail, capsys)
    assert code == 1 and "Traceback" not in err
    assert err.startswith("tool.py: error: another process of the distributed run ended or stopped answering (")
    assert err.endswith("its own message says why; last complete checkpoint: out/last.pth (2 epochs)\n")
