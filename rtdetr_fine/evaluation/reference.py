"""The FINE authors' per-epoch COCO val AP of their own runs, for comparing curves (not measured here).

Source: the training logs of the FINE paper's authors, R18 1x (12 epochs) on COCO 2017; AP in % after
epochs 1..12. tools/plot_log.py overlays these curves; docs/training.md's reference table uses the same numbers.
"""

REFERENCE_CURVES = {
    "r18_1x": {
        "baseline (authors' RT-DETR R18)": [13.3, 22.7, 26.1, 28.6, 31.0, 32.9, 34.4, 35.7, 36.6, 37.5, 38.2, 38.6],
        "FINE quadratic (authors)": [13.4, 22.4, 26.0, 28.8, 31.2, 33.3, 34.9, 36.3, 37.2, 38.1, 38.8, 39.4],
        "FaPN (authors)": [13.4, 22.5, 25.9, 28.5, 31.1, 33.1, 34.6, 35.9, 36.9, 37.7, 38.4, 39.0],
    },
}


def reference_curves(name: str) -> dict:
    """{label: [AP % after epoch 1, 2, ...]} of reference `name`; ValueError lists the known names."""
    if name not in REFERENCE_CURVES:
        raise ValueError(f"unknown reference {name!r}; known: {', '.join(sorted(REFERENCE_CURVES))}")
    return REFERENCE_CURVES[name]
