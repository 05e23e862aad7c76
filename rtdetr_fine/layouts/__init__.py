"""Foreign weight layouts: other code bases' names for the weights of our models, mapped onto ours.

One file per layout, each a name mapping checked by a fixture of that code base's model (tests/layouts/):
`matches(state)` says whether a state dict is in that layout, `to_ours(state)` renames (and where a
layout fuses or splits tensors, reshapes) it into this repo's names. `load_weights` (checkpoint.py)
applies the first layout that matches; a state dict in our own names matches none and is left as it is.
"""
from . import anydepth_authors, fine_authors, transformers

LAYOUTS = (fine_authors, anydepth_authors, transformers)


def to_our_layout(state: dict) -> tuple:
    """(state dict in our names, the name of the layout it came in or None for ours)."""
    for layout in LAYOUTS:
        if layout.matches(state):
            return layout.to_ours(state), layout.NAME
    return state, None
