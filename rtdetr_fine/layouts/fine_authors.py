"""The FINE authors' RT-DETR (HyungseopLee/FINE-FPN, FINE_to_RT-DETR-PyTorch): the official RT-DETR
names, with the FINE modules of the hybrid encoder called `encoder.sa_cross_attn.{0,1}` where ours are
`encoder.fine.{0,1}`; inside a module the names are the same (their FeatureInteractionNEtowrk)."""
NAME = "the FINE authors' RT-DETR"
THEIRS, OURS = "encoder.sa_cross_attn.", "encoder.fine."


def matches(state: dict) -> bool:
    return any(k.startswith(THEIRS) for k in state)


def to_ours(state: dict) -> dict:
    return {(OURS + k[len(THEIRS):] if k.startswith(THEIRS) else k): v for k, v in state.items()}
