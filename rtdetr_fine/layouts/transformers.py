"""transformers' RT-DETR v1, `RTDetrForObjectDetection` (the hub's PekingU/rtdetr_r18vd, _r50vd, ...: the
official v1 weights, converted): the names its files hold mapped onto the official names our model uses.

Its files (what `save_pretrained` writes, and what the hub holds) use transformers' 4.x names, also under
transformers 5, whose in-memory names differ (o_proj, mlp.fc1, encoder.aifi): only the file names are
mapped here. The mapping is a renaming of modules (RENAMES, PARTS), except for
- q/k/v: transformers' attention layers have separate q_proj, k_proj, v_proj; the official layers are
  nn.MultiheadAttention, whose in_proj_weight / in_proj_bias hold q, k, v concatenated on dim 0;
- num_batches_tracked: transformers' backbone norms are frozen and have none. The official R18/R34
  (basic blocks) train theirs, BatchNorm2d, which counts batches: filled with 0, a fresh norm's count.
  The official R50/R101 (bottleneck blocks) freeze theirs too, without counts, as here;
- hub files may also hold the decoder's heads a second time, as top-level class_embed.* / bbox_embed.*
  (tied to model.decoder.class_embed / bbox_embed): dropped once checked equal.
"""
import re

import torch

NAME = "transformers' RT-DETR (RTDetrForObjectDetection)"
ARCHITECTURE = "RTDetrForObjectDetection"   # what config.json's "architectures" lists
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"   # a save_pretrained folder, a hub download

# (their module, our module): the first whose module starts a name renames that start; `{}` is a number,
# carried over in order. Names no row matches stay as they are (load_weights reports them).
RENAMES = (
    # backbone: the official ResNet-vd (PResNet)
    ("model.backbone.model.embedder.embedder.0", "backbone.conv1.conv1_1"),
    ("model.backbone.model.embedder.embedder.1", "backbone.conv1.conv1_2"),
    ("model.backbone.model.embedder.embedder.2", "backbone.conv1.conv1_3"),
    ("model.backbone.model.encoder.stages.{}.layers.{}.layer.0", "backbone.res_layers.{}.blocks.{}.branch2a"),
    ("model.backbone.model.encoder.stages.{}.layers.{}.layer.1", "backbone.res_layers.{}.blocks.{}.branch2b"),
    ("model.backbone.model.encoder.stages.{}.layers.{}.layer.2", "backbone.res_layers.{}.blocks.{}.branch2c"),
    # -vd shortcut of a strided block: 0 is the average pool (no weights), 1 the 1x1 conv
    ("model.backbone.model.encoder.stages.{}.layers.{}.shortcut.1", "backbone.res_layers.{}.blocks.{}.short.conv"),
    ("model.backbone.model.encoder.stages.{}.layers.{}.shortcut", "backbone.res_layers.{}.blocks.{}.short"),
    # hybrid encoder: input projections, AIFI layers; the CCFM (lateral_convs, fpn_blocks, downsample_convs,
    # pan_blocks) and AIFI's self_attn have the official names
    ("model.encoder_input_proj", "encoder.input_proj"),
    ("model.encoder.encoder.{}.layers.{}.self_attn_layer_norm", "encoder.encoder.{}.layers.{}.norm1"),
    ("model.encoder.encoder.{}.layers.{}.fc1", "encoder.encoder.{}.layers.{}.linear1"),
    ("model.encoder.encoder.{}.layers.{}.fc2", "encoder.encoder.{}.layers.{}.linear2"),
    ("model.encoder.encoder.{}.layers.{}.final_layer_norm", "encoder.encoder.{}.layers.{}.norm2"),
    ("model.encoder", "encoder"),
    # decoder
    ("model.decoder_input_proj.{}.0", "decoder.input_proj.{}.conv"),
    ("model.decoder_input_proj.{}.1", "decoder.input_proj.{}.norm"),
    ("model.decoder.layers.{}.self_attn_layer_norm", "decoder.decoder.layers.{}.norm1"),
    ("model.decoder.layers.{}.encoder_attn_layer_norm", "decoder.decoder.layers.{}.norm2"),
    ("model.decoder.layers.{}.final_layer_norm", "decoder.decoder.layers.{}.norm3"),
    ("model.decoder.layers.{}.encoder_attn", "decoder.decoder.layers.{}.cross_attn"),
    ("model.decoder.layers.{}.fc1", "decoder.decoder.layers.{}.linear1"),
    ("model.decoder.layers.{}.fc2", "decoder.decoder.layers.{}.linear2"),
    ("model.decoder.layers", "decoder.decoder.layers"),
    ("model.decoder.class_embed", "decoder.dec_score_head"),
    ("model.decoder.bbox_embed", "decoder.dec_bbox_head"),
    ("model.decoder.query_pos_head", "decoder.query_pos_head"),
    ("model.denoising_class_embed", "decoder.denoising_class_embed"),
    ("model.enc_output", "decoder.enc_output"),
    ("model.enc_score_head", "decoder.enc_score_head"),
    ("model.enc_bbox_head", "decoder.enc_bbox_head"),
)
# inside a renamed module: transformers' ResNet calls the two parts of a conv + norm layer these
PARTS = {"convolution": "conv", "normalization": "norm"}
# nn.MultiheadAttention's in_proj stacks the projections on dim 0 in this order
QKV = ("q_proj", "k_proj", "v_proj")
# top-level copies of the decoder's heads in some hub files -> the decoder's names
TIED_COPIES = {"class_embed.": "model.decoder.class_embed.", "bbox_embed.": "model.decoder.bbox_embed."}
# names only a sibling transformers model has, whose other names are RT-DETR v1's
SIBLINGS = {".encoder_attn.n_points_scale": "RT-DETR v2 (RTDetrV2ForObjectDetection)"}
# first-level modules only transformers' RT-DETR family has: how a state dict in this layout is recognised
MARKERS = ("model.encoder_input_proj.", "model.decoder_input_proj.", "model.enc_score_head.")


def _pattern(module: str) -> re.Pattern:
    return re.compile(re.escape(module).replace(r"\{\}", r"(\d+)") + r"\.")


_RULES = tuple((_pattern(theirs), ours) for theirs, ours in RENAMES)


def matches(state: dict) -> bool:
    return any(k.startswith(MARKERS) for k in state)


def to_ours(state: dict) -> dict:
    """Their state dict -> ours. ValueError for a sibling model's weights or tied copies that differ."""
    refuse_siblings(state)
    state = {our_name(k): v for k, v in without_tied_copies(state).items()}
    return with_batch_counts(fuse_qkv(state))


def our_name(name: str) -> str:
    """e.g. model.backbone.model.encoder.stages.1.layers.0.shortcut.1.convolution.weight
    -> backbone.res_layers.1.blocks.0.short.conv.conv.weight"""
    for pattern, ours in _RULES:
        m = pattern.match(name)
        if m:
            rest = name[m.end():].split(".")
            rest[0] = PARTS.get(rest[0], rest[0])
            return ours.format(*m.groups()) + "." + ".".join(rest)
    return name


def refuse_siblings(state: dict) -> None:
    for k in state:
        for marker, model in SIBLINGS.items():
            if k.endswith(marker):
                raise ValueError(f"it holds {model} weights ({k}); this repo builds RT-DETR v1, "
                                 f"whose transformers weights are {ARCHITECTURE}'s")


def without_tied_copies(state: dict) -> dict:
    """Drop the top-level copies of the decoder's heads, after checking they equal the decoder's (a copy
    whose decoder tensor is absent takes its place)."""
    out = {}
    for k, v in state.items():
        copy_of = next((k.replace(top, dec, 1) for top, dec in TIED_COPIES.items() if k.startswith(top)), None)
        if copy_of is None:
            out[k] = v
        elif copy_of not in state:
            out[copy_of] = v
        elif not torch.equal(state[copy_of], v):
            raise ValueError(f"its {k} and {copy_of} differ, though transformers ties them (one head, saved twice)")
    return out


def fuse_qkv(state: dict) -> dict:
    """X.q_proj.weight, X.k_proj.weight, X.v_proj.weight -> X.in_proj_weight [3 * dim, dim] (and the biases),
    where all three are there; a partial set stays as it is."""
    out = {}
    for k, v in state.items():
        m = re.fullmatch(r"(.+)\.([qkv]_proj)\.(weight|bias)", k)
        parts = [f"{m[1]}.{p}.{m[3]}" for p in QKV] if m else []
        if not m or not all(p in state for p in parts):
            out[k] = v
        elif m[2] == QKV[0]:
            out[f"{m[1]}.in_proj_{m[3]}"] = torch.cat([state[p] for p in parts], dim=0)
    return out


def with_batch_counts(state: dict) -> dict:
    """A basic-block backbone (R18, R34): a num_batches_tracked of 0 beside each of its norms."""
    if any(k.startswith("backbone.") and ".branch2c." in k for k in state):   # bottleneck: frozen norms
        return state
    counts = {k[:-len("running_mean")] + "num_batches_tracked": torch.zeros((), dtype=torch.long)
              for k in state if k.startswith("backbone.") and k.endswith(".running_mean")}
    return {**state, **{k: v for k, v in counts.items() if k not in state}}
