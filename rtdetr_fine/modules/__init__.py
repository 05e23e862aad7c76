"""The papers' plug-in modules, each in one file that a builder wires into a detector family:
FINE (fine.py, in RT-DETR's hybrid encoder) and CFSAM (cfsam.py, between an extractor and a head).
A module never imports a detector family."""
