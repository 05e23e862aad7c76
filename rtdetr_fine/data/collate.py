"""Batch collation, with RT-DETR's per-batch multi-scale resize.

The strong training transform hands over uint8 images (fused_transforms.py): the batch is stacked as
bytes and converted to float32 in [0, 1] (to_float) before the multi-scale resize (torch's nearest
resize is faster on float32 than on uint8; it picks pixels, so the order does not change them).
"""
import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import to_dtype

from ..config import image_hw

PASS_SIZES = "pass_sizes"   # target key: the (h, w) of each training pass (MultiScaleCollate with passes > 1)


def to_float(images):
    """uint8 images -> float32 in [0, 1], as v2.ToDtype(float32, scale=True) converts them; float images
    are returned as they are."""
    return to_dtype(images, torch.float32, scale=True) if images.dtype == torch.uint8 else images


def collate(batch):
    """[(image [3, H, W], target), ...] -> (images float32 [B, 3, H, W], list of B targets)."""
    images = torch.stack([image for image, _ in batch])
    return to_float(images), [target for _, target in batch]


class MultiScaleCollate:
    """collate, then resize the whole batch to one size drawn from `scales` per batch.

    scales: list of ints (square sizes) or (h, w) pairs; repeats weight the draw, e.g.
    RT-DETR's [480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800].
    Boxes are normalised, so only the images (and target["size"]) change. From
    `stop_epoch` on (see set_epoch) batches keep the size the transforms produced.
    mode: F.interpolate mode; the official code uses the default, "nearest".

    passes > 1 (any-depth self-distillation with anydepth.independent_scales, whose full and min
    networks each see their own size, as in the authors' training): one size is drawn per pass, the
    images stay at the transforms' size, and every target gets PASS_SIZES, [passes, 2] (h, w); the
    model resizes the batch for each pass (resize_batch).

    Randomness: with seed=None the draw uses torch's global RNG (reproducible under
    torch.manual_seed; DataLoader seeds it per worker). With an int seed a private
    generator seeded from (seed, epoch, worker id) is used, so every epoch and worker
    has its own reproducible stream. DataLoader workers get a copy of this object when
    they start: call set_epoch before iterating and use non-persistent workers.
    """

    def __init__(self, scales, stop_epoch=None, seed=None, mode="nearest", passes=1):
        if not scales:
            raise ValueError("MultiScaleCollate needs a non-empty list of scales")
        self.scales = [image_hw(s) for s in scales]
        self.stop_epoch = stop_epoch
        self.seed = seed
        self.mode = mode
        self.passes = passes
        self.epoch = 0
        self._generator, self._generator_key = None, None

    def set_epoch(self, epoch):
        self.epoch = epoch

    @property
    def multi_scale(self):
        return self.stop_epoch is None or self.epoch < self.stop_epoch

    def _rng(self):
        if self.seed is None:
            return None
        worker = torch.utils.data.get_worker_info()
        key = (self.seed, self.epoch, worker.id if worker is not None else -1)
        if key != self._generator_key:
            seed = ((self.seed * 1_000_003 + self.epoch) * 257 + key[2] + 1) % (2 ** 63)
            self._generator = torch.Generator().manual_seed(seed)
            self._generator_key = key
        return self._generator

    def __call__(self, batch):
        images, targets = collate(batch)
        if not self.multi_scale:
            return images, targets
        drawn = [self.scales[int(i)] for i in torch.randint(len(self.scales), (self.passes,), generator=self._rng())]
        if self.passes > 1:
            sizes = torch.tensor(drawn, dtype=torch.int64)
            return images, [{**t, PASS_SIZES: sizes.clone()} for t in targets]
        h, w = drawn[0]
        images = resize_batch(images, (h, w), self.mode)
        size = torch.tensor([w, h], dtype=torch.int64)
        return images, [{**t, "size": size.clone()} for t in targets]

    def __repr__(self):
        return (f"{type(self).__name__}(scales={self.scales}, stop_epoch={self.stop_epoch}, "
                f"seed={self.seed}, mode={self.mode!r}, passes={self.passes})")


def resize_batch(images, size, mode="nearest"):
    """images [B, 3, H, W] -> [B, 3, h, w] for size (h, w) (as they are when already that size)."""
    size = tuple(int(s) for s in size)
    return images if size == tuple(images.shape[-2:]) else F.interpolate(images, size=size, mode=mode)


def pass_sizes(targets, passes):
    """The (h, w) of each of `passes` training passes that MultiScaleCollate drew for this batch, or None
    (one size for all passes: the batch as it comes)."""
    if not targets or PASS_SIZES not in targets[0]:
        return None
    sizes = targets[0][PASS_SIZES]
    if len(sizes) != passes:
        raise ValueError(f"the batch has sizes for {len(sizes)} passes, the model runs {passes}")
    return [tuple(int(v) for v in hw) for hw in sizes]
