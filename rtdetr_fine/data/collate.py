"""Batch collation, with RT-DETR's per-batch multi-scale resize."""
import torch
import torch.nn.functional as F

from ..config import image_hw


def collate(batch):
    """[(image [3, H, W], target), ...] -> (images [B, 3, H, W], list of B targets)."""
    images = torch.stack([image for image, _ in batch])
    return images, [target for _, target in batch]


class MultiScaleCollate:
    """collate, then resize the whole batch to one size drawn from `scales` per batch.

    scales: list of ints (square sizes) or (h, w) pairs; repeats weight the draw, e.g.
    RT-DETR's [480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800].
    Boxes are normalised, so only the images (and target["size"]) change. From
    `stop_epoch` on (see set_epoch) batches keep the size the transforms produced.
    mode: F.interpolate mode; the official code uses the default, "nearest".

    Randomness: with seed=None the draw uses torch's global RNG (reproducible under
    torch.manual_seed; DataLoader seeds it per worker). With an int seed a private
    generator seeded from (seed, epoch, worker id) is used, so every epoch and worker
    has its own reproducible stream. DataLoader workers get a copy of this object when
    they start: call set_epoch before iterating and use non-persistent workers.
    """

    def __init__(self, scales, stop_epoch=None, seed=None, mode="nearest"):
        if not scales:
            raise ValueError("MultiScaleCollate needs a non-empty list of scales")
        self.scales = [image_hw(s) for s in scales]
        self.stop_epoch = stop_epoch
        self.seed = seed
        self.mode = mode
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
        h, w = self.scales[int(torch.randint(len(self.scales), (1,), generator=self._rng()))]
        if (h, w) != tuple(images.shape[-2:]):
            images = F.interpolate(images, size=(h, w), mode=self.mode)
        size = torch.tensor([w, h], dtype=torch.int64)
        return images, [{**t, "size": size.clone()} for t in targets]

    def __repr__(self):
        return (f"{type(self).__name__}(scales={self.scales}, stop_epoch={self.stop_epoch}, "
                f"seed={self.seed}, mode={self.mode!r})")
