#!/usr/bin/env bash
# The README's pictures, from the CPU demo. Run from the repository root:  bash docs/images/regenerate.sh
# Trains the demo first when output/demo_shapes/best.pth is missing (~15 min on 2 idle cores).
set -euo pipefail
CONFIG=configs/demo/rtdetr_r18_fine_shapes.yml
CKPT=output/demo_shapes/best.pth
IMAGE=data/demo_shapes/val/000005.jpg          # circle, two squares, triangle
[ -f "$CKPT" ] || nice -n 10 python3 train.py -c "$CONFIG"
tmp=$(mktemp -d)
python3 -c "from PIL import Image; Image.open('$IMAGE').save('$tmp/demo_val.png')"   # PNG in, PNG out
python3 predict.py -c "$CONFIG" -r "$CKPT" "$tmp/demo_val.png" -o "$tmp/predict"
cp "$tmp/predict/demo_val.png" docs/images/predict.png
python3 tools/visualize_fine.py -c "$CONFIG" -r "$CKPT" "$IMAGE" -o docs/images/fine_maps.png --dpi 60
python3 tools/plot_log.py output/demo_shapes/log.txt -o docs/images/curves.png --dpi 70
# eval.py --plots (no -c: the config the checkpoint records): the five evaluation pictures
python3 eval.py -r "$CKPT" --plots output/demo_shapes/plots
cp output/demo_shapes/plots/pr_curves.png docs/images/eval_pr_curves.png
cp output/demo_shapes/plots/false_positives.png docs/images/eval_false_positives.png
rm -r "$tmp"
ls -l docs/images/*.png
