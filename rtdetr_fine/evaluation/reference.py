"""The FINE authors' per-epoch COCO val AP of their own runs, for comparing curves (not measured here).

Source: the training logs of the FINE paper's authors, R18 1x (12 epochs) on COCO 2017; AP in % after
epochs 1..12. tools/plot_log.py overlays these curves; docs/training.md's and docs/table2.md's reference
tables use the same numbers. The FINE paper's Table 2 baselines are the authors' re-implementations
(HyungseopLee/FINE-FPN, FINE_to_RT-DETR-PyTorch/output/coco/v1_r18vd_12e_coco_{FaPN,AdaFPN,MGC}/log.txt;
configs/ablation/rtdetr_r18_{fapn,adafpn,mgc}.yml). SNI's are the first 12 epochs of its 72-epoch run
(v1_r18vd_72e_coco_SNI, the same recipe: the lr schedule's one step, at epoch 1000, is never reached);
its RT-DETR code is not released, so this repository has no SNI model.
"""

REFERENCE_CURVES = {
    "r18_1x": {
        "baseline (authors' RT-DETR R18)": [13.3, 22.7, 26.1, 28.6, 31.0, 32.9, 34.4, 35.7, 36.6, 37.5, 38.2, 38.6],
        "FINE quadratic (authors)": [13.4, 22.4, 26.0, 28.8, 31.2, 33.3, 34.9, 36.3, 37.2, 38.1, 38.8, 39.4],
        "FaPN (authors)": [13.4, 22.5, 25.9, 28.5, 31.1, 33.1, 34.6, 35.9, 36.9, 37.7, 38.4, 39.0],
        "MGC (authors)": [13.1, 22.0, 25.4, 28.2, 30.7, 32.6, 34.3, 35.5, 36.5, 37.4, 38.0, 38.6],
        "AdaFPN (authors)": [13.0, 22.1, 25.5, 28.0, 30.6, 32.7, 34.1, 35.3, 36.2, 37.1, 37.7, 38.3],
        "SNI (authors, first 12 of 72 epochs)": [13.4, 22.1, 25.5, 28.1, 30.5, 32.5, 34.0, 35.4, 36.3, 37.2, 37.9,
                                                 38.5],
    },
}


def reference_curves(name: str) -> dict:
    """{label: [AP % after epoch 1, 2, ...]} of reference `name`; ValueError lists the known names."""
    if name not in REFERENCE_CURVES:
        raise ValueError(f"unknown reference {name!r}; known: {', '.join(sorted(REFERENCE_CURVES))}")
    return REFERENCE_CURVES[name]
