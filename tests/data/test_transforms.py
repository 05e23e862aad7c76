import pytest
import torch
from PIL import Image, ImageDraw
from torchvision import tv_tensors

from rtdetr_fine.data import (CocoDetection, MultiScaleCollate, StopEpochTransforms, build_dataset,
                              build_train_transforms, build_val_transforms, collate)

SIZE = 160


def check_output(image, target, size=(SIZE, SIZE), image_id=None, orig_size=None):
    h, w = size
    assert image.shape == (3, h, w) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert set(target) == {"boxes", "labels", "image_id", "orig_size", "size"}
    boxes = target["boxes"]
    assert type(boxes) is torch.Tensor and boxes.dtype == torch.float32 and boxes.shape[-1] == 4
    assert target["labels"].dtype == torch.int64 and target["labels"].shape == (len(boxes),)
    assert target["size"].tolist() == [w, h]
    if image_id is not None:
        assert target["image_id"].item() == image_id
    if orig_size is not None:
        assert target["orig_size"].tolist() == list(orig_size)
    cx, cy, bw, bh = boxes.unbind(-1)
    eps = 1e-5
    assert ((bw > 0) & (bh > 0)).all()
    assert ((cx - bw / 2 >= -eps) & (cx + bw / 2 <= 1 + eps)).all()
    assert ((cy - bh / 2 >= -eps) & (cy + bh / 2 <= 1 + eps)).all()
    # SanitizeBoundingBoxes(min_size=1) in pixels of the output image
    assert (bw * w >= 1 - 1e-3).all() and (bh * h >= 1 - 1e-3).all()


@pytest.mark.parametrize("strong_aug", [True, False])
def test_train_transforms_keep_boxes_valid(hygiene, strong_aug):
    raw = CocoDetection(hygiene["img_folder"], hygiene["ann_file"], exif_transpose=True)
    transforms = build_train_transforms(SIZE, strong_aug=strong_aug)
    for seed in range(25):
        torch.manual_seed(seed)
        for i in range(len(raw)):
            image, target = raw[i]
            out_image, out = transforms(image, target)
            check_output(out_image, out, image_id=raw.ids[i], orig_size=target["orig_size"].tolist())
            assert set(out["labels"].tolist()) <= set(target["labels"].tolist())


def test_empty_target_survives_strong_aug(hygiene):
    raw = CocoDetection(hygiene["img_folder"], hygiene["ann_file"], exif_transpose=True)
    index = next(i for i in range(len(raw)) if len(raw[i][1]["boxes"]) == 0)
    transforms = build_train_transforms(SIZE, strong_aug=True)
    for seed in range(100):
        torch.manual_seed(seed)
        image, target = transforms(*raw[index])
        check_output(image, target)
        assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def white_squares_sample():
    """Black 200x160 image with white squares; boxes exactly on them."""
    image = Image.new("RGB", (200, 160), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    boxes = [[10, 10, 60, 60], [120, 30, 190, 100], [40, 100, 80, 140]]
    for x0, y0, x1, y1 in boxes:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=(255, 255, 255))
    target = {"boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32), format="XYXY",
                                                canvas_size=(160, 200)),
              "labels": torch.tensor([0, 1, 2]), "image_id": torch.tensor(3), "area": torch.ones(3),
              "iscrowd": torch.zeros(3, dtype=torch.int64), "orig_size": torch.tensor([200, 160])}
    return image, target


@pytest.mark.parametrize("strong_aug", [True, False])
def test_boxes_follow_the_pixels(strong_aug):
    """After flips / zoom-out / IoU crops / resize, each box centre still lies on its white square."""
    transforms = build_train_transforms(SIZE, strong_aug=strong_aug)
    checked = 0
    for seed in range(30):
        torch.manual_seed(seed)
        image, target = transforms(*white_squares_sample())
        check_output(image, target, image_id=3, orig_size=[200, 160])
        for cx, cy, w, h in target["boxes"].tolist():
            if w * SIZE < 4 or h * SIZE < 4:
                continue
            pixel = image[:, int(cy * SIZE), int(cx * SIZE)]
            assert pixel.mean() > 0.3, (seed, pixel)
            checked += 1
    assert checked > 30


def test_val_transforms_exact(hygiene):
    raw = CocoDetection(hygiene["img_folder"], hygiene["ann_file"], transforms=build_val_transforms((96, SIZE)))
    image, target = raw[0]                                 # boxes.jpg, 64 x 48
    check_output(image, target, size=(96, SIZE), image_id=raw.ids[0], orig_size=[64, 48])
    xyxy = torch.tensor([[4, 4, 24, 20], [50, 20, 64, 30], [0, 0, 10, 10]], dtype=torch.float32)
    xyxy /= torch.tensor([64, 48, 64, 48])
    expected = torch.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                            xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], dim=1)
    torch.testing.assert_close(target["boxes"], expected)
    assert target["labels"].tolist() == [0, 1, 0]


def test_stop_epoch_switches_to_plain_pipeline():
    transforms = StopEpochTransforms(SIZE, stop_epoch=3)
    transforms.set_epoch(2)
    assert transforms.strong_aug
    transforms.set_epoch(3)
    assert not transforms.strong_aug
    for seed in range(5):
        torch.manual_seed(seed)
        a_image, a = transforms(*white_squares_sample())
        torch.manual_seed(seed)
        b_image, b = build_train_transforms(SIZE, strong_aug=False)(*white_squares_sample())
        torch.testing.assert_close(a_image, b_image)
        torch.testing.assert_close(a["boxes"], b["boxes"])


def fake_batch(n=3, size=64):
    return [(torch.rand(3, size, size), {"boxes": torch.rand(2, 4), "labels": torch.tensor([0, 1]),
                                         "image_id": torch.tensor(i), "size": torch.tensor([size, size])})
            for i in range(n)]


def test_collate_stacks():
    images, targets = collate(fake_batch())
    assert images.shape == (3, 3, 64, 64) and [t["image_id"].item() for t in targets] == [0, 1, 2]


def draw_sizes(collate_fn, batches=40):
    sizes = []
    for _ in range(batches):
        images, targets = collate_fn(fake_batch())
        h, w = images.shape[-2:]
        assert all(t["size"].tolist() == [w, h] for t in targets)
        sizes.append((h, w))
    return sizes


def test_multiscale_picks_from_scales_and_is_reproducible():
    scales = [32, 48, 64, 80]
    sizes = draw_sizes(MultiScaleCollate(scales, seed=7))
    assert {h for h, _ in sizes} <= set(scales) and len(set(sizes)) >= 3
    assert all(h == w for h, w in sizes)
    assert draw_sizes(MultiScaleCollate(scales, seed=7)) == sizes
    other_epoch = MultiScaleCollate(scales, seed=7)
    other_epoch.set_epoch(1)
    assert draw_sizes(other_epoch) != sizes
    # global-RNG mode: reproducible under torch.manual_seed
    torch.manual_seed(0)
    first = draw_sizes(MultiScaleCollate(scales))
    torch.manual_seed(0)
    assert draw_sizes(MultiScaleCollate(scales)) == first


def test_multiscale_stops_at_stop_epoch():
    collate_fn = MultiScaleCollate([32, 48], stop_epoch=2, seed=0)
    collate_fn.set_epoch(1)
    assert {h for h, _ in draw_sizes(collate_fn, 20)} == {32, 48}
    collate_fn.set_epoch(2)
    assert set(draw_sizes(collate_fn, 5)) == {(64, 64)}


def test_multiscale_with_two_passes_draws_a_size_per_pass_and_leaves_the_images():
    """anydepth.independent_scales: the full and the min network each get their own size (the model resizes)."""
    from rtdetr_fine.data.collate import PASS_SIZES, pass_sizes, resize_batch
    collate_fn = MultiScaleCollate([32, 48, (48, 80)], seed=3, passes=2)
    drawn = []
    for _ in range(30):
        images, targets = collate_fn(fake_batch())
        assert images.shape[-2:] == (64, 64) and all(torch.equal(t[PASS_SIZES], targets[0][PASS_SIZES]) for t in targets)
        sizes = pass_sizes(targets, 2)
        assert set(sizes) <= {(32, 32), (48, 48), (48, 80)}
        drawn.append(tuple(sizes))
    assert any(a != b for a, b in drawn) and any(a == b for a, b in drawn)    # independent draws
    assert resize_batch(images, drawn[0][1]).shape[-2:] == drawn[0][1]
    assert pass_sizes([{"labels": torch.zeros(0)}], 2) is None                   # one size: as the batch comes
    with pytest.raises(ValueError, match="sizes for 2 passes, the model runs 3"):
        pass_sizes(targets, 3)
    collate_fn.set_epoch(1)
    collate_fn.stop_epoch = 1                                                    # multi-scale off: no sizes
    assert PASS_SIZES not in collate_fn(fake_batch())[1][0]


def test_multiscale_rectangular_scales():
    images, _ = MultiScaleCollate([(48, 80)], seed=0)(fake_batch())
    assert images.shape[-2:] == (48, 80)


def test_dataloader_end_to_end_with_workers(shapes):
    dataset = build_dataset(shapes["train_img_folder"], shapes["train_ann_file"], train=True, image_size=96,
                            num_classes=3)

    def run():
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True, num_workers=2,
                                             collate_fn=MultiScaleCollate([64, 96, 128], seed=1))
        return [(images.shape, [t["image_id"].item() for t in targets]) for images, targets in loader]

    first = run()
    assert len(first) == 6 and {s[-1] for s, _ in first} <= {64, 96, 128}
    assert run() == first


def test_iou_crop_skips_samples_without_boxes():
    from rtdetr_fine.data.transforms import RandomIoUCropNonEmpty
    image = Image.new("RGB", (50, 40))
    target = {"boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(40, 50)),
              "labels": torch.zeros(0, dtype=torch.int64)}
    out_image, out_target = RandomIoUCropNonEmpty()(image, target)
    assert out_image is image and out_target is target
    crops = set()
    for seed in range(20):                           # with boxes it still crops
        torch.manual_seed(seed)
        crops.add(RandomIoUCropNonEmpty()(*white_squares_sample())[0].size)
    assert len(crops) > 1
