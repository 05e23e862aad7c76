"""The papers' plug-in modules, each in one file that a builder wires into a detector family:
FINE (fine.py, in RT-DETR's hybrid encoder) and CFSAM (cfsam.py, between an extractor and a head),
and the FINE paper's Table 2 baselines as its authors ran them in RT-DETR's hybrid encoder: FaPN
(fapn.py), AdaFPN (adafpn.py), MGC (mgc.py). A module never imports a detector family.

An alignment module of the hybrid encoder (build.build_alignment) is a plain object with
`attach(encoder)`, which converts a built HybridEncoder: it adds the module's layers under its
authors' names, deletes the official layers they replace and sets `encoder.alignment` to itself;
and `project(encoder, feats)` and/or `fuse(encoder, j, feat_high, feat_low)`, which the encoder's
hooks of the same names call instead of the official input projections / top-down fusion j."""
