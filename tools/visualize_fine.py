"""What FINE does to the feature pyramid on one image: P_l, its modulation map A_l and the modulated map.

    python tools/visualize_fine.py -c configs/rtdetr_r18_fine.yml -r output/rtdetr_r18_fine/best.pth photo.jpg
    python tools/visualize_fine.py -r output/rtdetr_r18_fine/best.pth photo.jpg    # the checkpoint's own config
    python tools/visualize_fine.py -c configs/demo/rtdetr_r18_fine_shapes.yml -r output/demo_shapes/best.pth \\
        data/demo_shapes/val/000000.png -o fine_maps.png

One row per FINE module (model.encoder.fine[j], coarse to fine as the top-down pass visits them),
each map drawn over the image as the model saw it (resized to val_dataloader.image_size):
  |P_l|       channel mean of |P_l|, the map FINE refines (the module's first input)
  A_l         channel mean of the modulation map (FINE.modulation_map: at P_l's size); diverging
              colours centred at 0: with the multiplicative modulation |A| < 1 suppresses P_l, |A| > 1
              enhances it, a negative A flips its sign
  A_l[c]      single channels of A_l: the --channels ones with the largest spatial standard deviation
              (the most selective)
  |P~_l|      channel mean of |FINE.modulate(P_l, A_l)|, what the fusion network receives instead of P_l
  gain        log2(|P~_l| / |P_l|) of the two channel means: > 0 where FINE enhances the map, < 0 where
              it suppresses it
The module inputs are captured with a forward hook during one normal forward pass.
Without -c the config a train.py checkpoint records is used (-u overrides apply on top).
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

import rtdetr_fine  # noqa: E402
from rtdetr_fine import cli  # noqa: E402
from rtdetr_fine.checkpoint import load_weights  # noqa: E402
from rtdetr_fine.checkpoint import config_for_checkpoint, inference_class_set  # noqa: E402
from rtdetr_fine.data.classes import apply_class_set  # noqa: E402
from rtdetr_fine.config import ConfigError, config_files  # noqa: E402
from rtdetr_fine.data import build_val_image_transform  # noqa: E402
from rtdetr_fine.data.image_io import load_rgb_image  # noqa: E402


class VisualizeError(cli.UserError):
    """A user-facing failure: printed without a traceback."""


def fine_modules(model):
    """The model's FINE modules (model.encoder.fine), or an empty list."""
    return list(getattr(model.encoder, "fine", None) or [])


@torch.no_grad()
def fine_maps(model, image):
    """Run `model` on image [1, 3, H, W]; per FINE module a dict of P_l [C, h, w], F_{l+1} [C_h, h', w'],
    A_l [C, h, w] (modulation_map) and P~_l [C, h, w] (modulate), plus the module's own output."""
    modules = fine_modules(model)
    captured = [None] * len(modules)

    def hook(j):
        def capture(module, inputs, output):
            captured[j] = (inputs[0], inputs[1], output)
        return capture

    handles = [m.register_forward_hook(hook(j)) for j, m in enumerate(modules)]
    try:
        model.eval()(image)
    finally:
        for h in handles:
            h.remove()
    maps = []
    for module, (low, high, output) in zip(modules, captured):
        a = module.modulation_map(low, high)                      # [1, C, h, w], P_l's size
        maps.append({"P": low[0], "F_high": high[0], "A": a[0], "modulated": module.modulate(low, a)[0],
                     "output": output[0]})
    return maps


def gain(p, modulated, eps=1e-12):
    """log2 of mean_c |P~| / mean_c |P| per position: [C, h, w] x 2 -> [h, w]."""
    return torch.log2((modulated.abs().mean(0) + eps) / (p.abs().mean(0) + eps))


def selective_channels(a, count):
    """Indices of the `count` channels of A [C, h, w] with the largest spatial standard deviation."""
    return a.flatten(1).std(dim=1).argsort(descending=True)[:count].tolist()


def plot_maps(image, maps, channels=3, title=""):
    """Figure: one row per module, columns image | |P| | A | A[c]... | |P~| | gain.
    image: float [3, H, W] in [0, 1] (the model's input)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = image.shape[-2:]
    grey = image.mean(0).cpu().numpy()          # grey under the heat maps, so their colours read true
    cols = 5 + channels
    fig, axes = plt.subplots(len(maps), cols, figsize=(2.6 * cols, 2.8 * len(maps)), squeeze=False)
    for j, (row, m) in enumerate(zip(axes, maps)):
        a, size = m["A"], m["P"].shape[-2:]
        panels = [(f"|P| (stride {height // size[0]}, {size[0]}x{size[1]})", m["P"].abs().mean(0), False),
                  ("A, channel mean", a.mean(0), True)]
        panels += [(f"A[{c}]", a[c], True) for c in selective_channels(a, channels)]
        panels += [("|P~| = |modulate(P, A)|", m["modulated"].abs().mean(0), False),
                   ("gain log2(|P~| / |P|)", gain(m["P"], m["modulated"]), True)]
        row[0].imshow(image.permute(1, 2, 0).cpu().numpy())
        row[0].set_title(f"FINE[{j}]", fontsize=8)
        for ax, (name, heat, signed) in zip(row[1:], panels):
            ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
            heat = heat.float().cpu().numpy()
            # signed maps centred at 0; magnitudes stretched over their own range (their spatial contrast)
            top = float(abs(heat).max()) or 1.0
            low, high = (-top, top) if signed else (float(heat.min()), float(heat.max()))
            shown = ax.imshow(heat, cmap="RdBu_r" if signed else "magma", vmin=low, vmax=max(high, low + 1e-12),
                              alpha=0.65, extent=(0, width, height, 0), interpolation="nearest")
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
            ax.set_title(name, fontsize=8)
        for ax in row:
            ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


MAX_CHANNELS, MAX_DPI = 16, 300


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", metavar="IMAGE", help="image file")
    p.add_argument("-c", "--config", help="YAML config with fine.enabled: true; default: the config the "
                                         "checkpoint records (train.py's checkpoints do)")
    p.add_argument("-r", "--resume", required=True, metavar="CKPT", help="checkpoint (EMA weights first)")
    p.add_argument("-o", "--output", default="fine_maps.png", help="PNG to write (default fine_maps.png)")
    p.add_argument("-u", "--update", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--channels", type=int, default=3, help="single channels of A to show (default 3)")
    p.add_argument("--dpi", type=int, default=100, help="PNG resolution (default 100)")
    return p.parse_args(argv)


def run(args, log=print):
    for what, path in (("image", args.image), ("checkpoint", args.resume)):
        if not os.path.isfile(path) and not (what == "checkpoint" and os.path.isdir(path)):   # or a transformers folder
            raise VisualizeError(f"{what} not found: {path}")
    # one 2.6-inch column per channel: 16 channels at 300 dpi is already a 16,000-pixel-wide PNG
    if not 0 <= args.channels <= MAX_CHANNELS:
        raise VisualizeError(f"--channels must be from 0 to {MAX_CHANNELS}, got {args.channels}")
    if not 1 <= args.dpi <= MAX_DPI:
        raise VisualizeError(f"--dpi must be from 1 to {MAX_DPI}, got {args.dpi}")
    cli.check_output_file(args.output, "-o")   # before the model runs
    cli.check_outputs_apart([("-o", args.output)], [("IMAGE", args.image), ("-r", args.resume),
                                                    *config_files(args.config)])
    cli.require({"matplotlib": "matplotlib"}, "visualize_fine.py")
    try:
        cfg, source = config_for_checkpoint(args.config, args.resume, args.update)
    except ConfigError as e:
        raise VisualizeError(f"config error: {e}") from None
    cfg["backbone"]["pretrained"] = None
    if not cfg["fine"]["enabled"]:
        raise VisualizeError(f"config {source} builds no FINE modules (fine.enabled is false): use a FINE config, "
                             "e.g. configs/rtdetr_r18_fine.yml, with a checkpoint trained with it")
    try:
        classes, _ = inference_class_set(cfg, args.resume)   # only the class count matters here
        apply_class_set(cfg, classes)
        model = rtdetr_fine.build_model(cfg)
        if not fine_modules(model):
            raise VisualizeError(f"{args.config}: the model has no FINE modules (model.encoder.fine)")
        which = load_weights(model, args.resume, prefer_ema=True, log=lambda *a: None)
        image, _ = load_rgb_image(args.image)
    except (ValueError, OSError) as e:
        raise VisualizeError(str(e)) from None
    size = cfg["val_dataloader"]["image_size"]
    tensor = build_val_image_transform(size)(image)
    maps = fine_maps(model, tensor[None])
    fig = plot_maps(tensor, maps, args.channels,
                    title=f"{os.path.basename(args.image)}: {which} weights of {args.resume}; "
                          f"fine.attention {cfg['fine']['attention']}, modulation {cfg['fine']['modulation']}")
    folder = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(args.output, dpi=args.dpi)
    log(f"wrote {args.output}: {len(maps)} FINE module(s)")
    return maps


def work(argv=None):
    """The command line's work; main() runs it behind the error boundary (rtdetr_fine/cli.py)."""
    run(parse_args(argv))


def main(argv=None) -> int:
    """Exit code 0 on success; a user error is one line on stderr and exit code 1."""
    return cli.run_main(work, argv, prog="visualize_fine.py")


if __name__ == "__main__":
    sys.exit(main())
