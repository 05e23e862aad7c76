"""The fused strong augmentation (rtdetr_fine/data/fused_transforms.py) against the sequential
torchvision v2 pipeline it replaces (transforms.build_train_transforms): the same random draws, the
same boxes, the same image up to the resize's rounding.

The image bound: the sequential pipeline resizes with PIL, the fused one with torch's uint8
antialiased bilinear kernel (through torchvision's resize) on the same pixels; the two round
differently by at most one level of 255 (and agree exactly when enlarging). Every other step gives
the same bytes. So |fused / 255 - sequential| <= 1 / 255 for every pixel."""
import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from rtdetr_fine.data import (CocoDetection, MultiScaleCollate, StopEpochTransforms, build_dataset,
                              build_train_transforms)
from rtdetr_fine.data.fused_transforms import FusedTrainTransform, kept_part, photometric_split, sample_iou_crop

SIZE = 96
IMAGE_BOUND = 1 / 255 + 1e-6       # one level of 255: resize rounding (module docstring)
BOX_BOUND = 1e-3                   # pixels of the output image


def photo(width, height, seed):
    """A photo-like RGB image: a smooth random colour field with grain."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (max(height // 8, 2), max(width // 8, 2), 3), dtype=np.uint8))
    pixels = np.asarray(field.resize((width, height), Image.BICUBIC), dtype=np.float32)
    return Image.fromarray(np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8))


def sample(image, boxes, labels=None):
    """(image, target) as CocoDetection hands them to the transforms."""
    w, h = image.size
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = torch.arange(len(boxes)) if labels is None else torch.tensor(labels)
    return image, {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
                   "labels": labels, "image_id": torch.tensor(7), "area": torch.ones(len(boxes)),
                   "iscrowd": torch.zeros(len(boxes), dtype=torch.int64), "orig_size": torch.tensor([w, h])}


def both(fused, image, target, seed):
    """Run the fused and the sequential pipeline from the same seed; also the generator states after."""
    torch.manual_seed(seed)
    fused_out = fused(image, target)
    fused_state = torch.get_rng_state()
    torch.manual_seed(seed)
    sequential_out = fused.sequential(image, target)
    return fused_out, sequential_out, torch.equal(fused_state, torch.get_rng_state())


def assert_same(fused_out, sequential_out, size=(SIZE, SIZE), where=""):
    (image, target), (ref_image, ref) = fused_out, sequential_out
    h, w = size
    assert image.dtype == torch.uint8 and image.shape == (3, h, w) and image.is_contiguous(), where
    assert ref_image.dtype == torch.float32
    diff = (image.float() / 255 - ref_image).abs().max().item()
    assert diff <= IMAGE_BOUND, f"{where}: image differs by {diff * 255:.2f} levels"
    assert target["labels"].tolist() == ref["labels"].tolist(), where
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    torch.testing.assert_close(target["boxes"] * scale, ref["boxes"] * scale, atol=BOX_BOUND, rtol=0, msg=where)
    assert target["size"].tolist() == ref["size"].tolist() == [w, h]
    for key in ("image_id", "orig_size"):
        assert torch.equal(target[key], ref[key]), where


def cases(fused, image, target, seed):
    """Which branches a draw takes (to check that a test covers them all)."""
    torch.manual_seed(seed)
    params = fused.draw(image, target["boxes"].as_subclass(torch.Tensor))
    photometric = params["photometric"]
    return {"zoom_out" if any(params["padding"]) else "no_zoom_out", "crop" if params["crop"] else "no_crop",
            "flip" if params["flip"] else "no_flip",
            "contrast_before" if photometric["contrast_before"] else "contrast_after",
            "contrast" if photometric["contrast_factor"] is not None else "no_contrast",
            "hue" if photometric["hue_factor"] is not None else "no_hue",
            "permutation" if photometric["channel_permutation"] is not None else "no_permutation"}


def test_same_draws_and_outputs_as_the_sequential_pipeline():
    """Photo-like images of several sizes and box counts: for each seed the generator ends in the same
    state, and boxes, labels and image agree within the stated bounds; every branch is exercised."""
    fused = FusedTrainTransform(SIZE)
    rng = np.random.default_rng(0)
    seen = set()
    for i, (w, h, n) in enumerate([(160, 120, 6), (120, 160, 1), (96, 96, 3), (200, 80, 12), (64, 48, 2)]):
        image = photo(w, h, i)
        x0, y0 = rng.uniform(0, w - 8, n), rng.uniform(0, h - 8, n)
        boxes = np.stack([x0, y0, x0 + rng.uniform(2, w - x0), y0 + rng.uniform(2, h - y0)], 1)
        image, target = sample(image, boxes)
        for seed in range(40):
            fused_out, sequential_out, same_state = both(fused, image, target, seed)
            assert same_state, f"image {i}, seed {seed}: the fused transform drew other random numbers"
            assert_same(fused_out, sequential_out, where=f"image {i}, seed {seed}")
            seen |= cases(fused, image, target, seed)
    assert len(seen) == 14, f"branches never taken: {seen}"


def test_coco_images_of_every_kind(hygiene, shapes):
    """Through CocoDetection: greyscale, RGBA, palette, CMYK, EXIF-rotated and box-less images (the
    hygiene set) and the shapes set's JPEGs, at a rectangular output size."""
    fused = FusedTrainTransform((64, 80))
    for folder, ann_file, exif in ((hygiene["img_folder"], hygiene["ann_file"], True),
                                   (shapes["train_img_folder"], shapes["train_ann_file"], False)):
        raw = CocoDetection(folder, ann_file, exif_transpose=exif)
        for index in range(len(raw)):
            image, target = raw[index]
            for seed in range(8):
                fused_out, sequential_out, same_state = both(fused, image, target, seed)
                assert same_state
                assert_same(fused_out, sequential_out, size=(64, 80), where=f"{raw.ids[index]}, seed {seed}")


def test_sanitisation_keeps_the_same_boxes():
    """Boxes that leave the crop, shrink below one pixel or touch the border are dropped or kept exactly
    as the sequential pipeline's SanitizeBoundingBoxes(min_size=1) and IoU-crop marking do."""
    fused = FusedTrainTransform(SIZE)
    image = photo(400, 300, 3)
    boxes = [[0, 0, 2, 2], [398, 297, 400, 300], [10, 10, 11.5, 300], [100, 100, 101, 101.5], [50, 60, 250, 200],
             [0, 150, 400, 152], [300, 0, 399, 30], [120.25, 80.5, 121.75, 82.25]]
    image, target = sample(image, boxes)
    dropped = 0
    for seed in range(120):
        fused_out, sequential_out, same_state = both(fused, image, target, seed)
        assert same_state
        assert_same(fused_out, sequential_out, where=f"seed {seed}")
        dropped += len(fused_out[1]["labels"]) < len(boxes)
    assert dropped > 60        # most draws drop some of these boxes: the test exercises sanitisation


def test_without_boxes_no_crop_is_drawn():
    fused = FusedTrainTransform(SIZE)
    image, target = sample(photo(80, 60, 1), [])
    for seed in range(30):
        fused_out, sequential_out, same_state = both(fused, image, target, seed)
        assert same_state and not cases(fused, image, target, seed) & {"crop"}
        assert_same(fused_out, sequential_out)
        assert fused_out[1]["boxes"].shape == (0, 4)


@pytest.mark.parametrize("options", [None, [0.0, 0.9]])   # (0.0: an option every box set can pass)
def test_iou_crop_sampler_is_torchvisions_loop(options, monkeypatch):
    """sample_iou_crop returns what v2.RandomIoUCrop.make_params returns and leaves the generator where
    the loop leaves it, also when a threshold exhausts its 40 trials and another one is drawn."""
    crop = v2.RandomIoUCrop(sampler_options=options)
    rng = np.random.default_rng(1)
    thresholds_drawn = []
    randint = torch.randint

    def counted_randint(*args, **kwargs):
        thresholds_drawn[-1] += 1
        return randint(*args, **kwargs)

    for trial in range(150):
        h = int(rng.integers(20, 900))                 # aspect ratios a crop can match (without a "leave
        w = int(h * rng.uniform(0.4, 2.5))              # as is" option the loop would never end)
        n = int(rng.integers(1, 10))
        x0, y0 = rng.uniform(0, w - 2, n), rng.uniform(0, h - 2, n)
        boxes = torch.tensor(np.stack([x0, y0, rng.uniform(x0 + 1, w), rng.uniform(y0 + 1, h)], 1),
                             dtype=torch.float32)
        torch.manual_seed(trial)
        thresholds_drawn.append(0)
        with monkeypatch.context() as patch:
            patch.setattr(torch, "randint", counted_randint)
            expected = crop.make_params([tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w))])
        expected_state = torch.get_rng_state()
        torch.manual_seed(trial)
        got = sample_iou_crop(crop, boxes, (h, w))
        assert torch.equal(torch.get_rng_state(), expected_state), trial
        assert got.keys() == expected.keys(), trial
        for key, value in expected.items():
            assert (torch.equal(got[key], value) if key == "is_within_crop_area" else got[key] == value), (trial, key)
    assert max(thresholds_drawn) > 1        # some thresholds ran out of trials


@pytest.mark.parametrize("applied", list(itertools.product([False, True], repeat=6)))
def test_photometric_split_equals_the_whole_op(applied):
    """The ops that need the whole image on it, the rest on a crop: the crop of the whole op, exactly."""
    brightness, contrast, saturation, hue, before, permute = applied
    distort = v2.RandomPhotometricDistort()
    params = {"brightness_factor": 1.3 if brightness else None, "contrast_factor": 0.7 if contrast else None,
              "saturation_factor": 1.4 if saturation else None, "hue_factor": -0.04 if hue else None,
              "contrast_before": before, "channel_permutation": torch.tensor([2, 0, 1]) if permute else None}
    image, box = photo(50, 40, 2), (7, 5, 31, 29)
    expected = np.asarray(distort.transform(image, params).crop(box))
    whole, part, permutation = photometric_split(params)
    got = np.asarray(distort.transform(distort.transform(image, whole).crop(box), part))
    if permutation is not None:
        got = got[..., permutation.tolist()]
    np.testing.assert_array_equal(got, expected)


def test_kept_part_geometry():
    # window inside the image (no zoom-out): the crop itself, at the window's origin
    assert kept_part((10, 20, 30, 40), [0, 0, 0, 0], (100, 80), flip=False) == ((20, 10, 60, 40), (0, 0))
    # a zoomed-out canvas, the window covering the image's right part and padding right of it
    assert kept_part((0, 60, 100, 90), [50, 5, 50, 15], (100, 80), flip=False) == ((10, 0, 100, 80), (5, 0))
    assert kept_part((0, 60, 100, 90), [50, 5, 50, 15], (100, 80), flip=True) == ((10, 0, 100, 80), (5, 0))
    assert kept_part((0, 0, 40, 40), [50, 5, 50, 15], (100, 80), flip=True) == (None, None)   # padding only
    assert kept_part((0, 40, 20, 50), [50, 0, 0, 0], (100, 80), flip=True) == ((0, 0, 40, 20), (0, 0))


def test_dataset_uses_it_until_stop_epoch_then_the_unchanged_plain_pipeline(shapes):
    """build_dataset: fused (uint8) in the strong epochs; from stop_epoch on, exactly the plain
    sequential pipeline (float32), as before."""
    dataset = build_dataset(shapes["train_img_folder"], shapes["train_ann_file"], train=True, image_size=SIZE,
                            num_classes=3, stop_epoch=2)
    assert isinstance(dataset.transforms.strong, FusedTrainTransform)
    dataset.set_epoch(1)
    assert dataset[0][0].dtype == torch.uint8
    dataset.set_epoch(2)
    plain = build_train_transforms(SIZE, strong_aug=False)
    raw = CocoDetection(shapes["train_img_folder"], shapes["train_ann_file"], num_classes=3)
    for index in range(4):
        torch.manual_seed(index)
        image, target = dataset[index]
        torch.manual_seed(index)
        ref_image, ref = plain(*raw[index])
        assert image.dtype == torch.float32 and torch.equal(image, ref_image)
        assert torch.equal(target["boxes"], ref["boxes"]) and torch.equal(target["labels"], ref["labels"])


def test_loader_batches_match_the_sequential_pipelines(shapes):
    """A DataLoader over the fused dataset and one over the same dataset with the sequential strong
    pipeline: same sampler, same seeds -> the same float batches within the bounds, contiguous."""
    def batches(strong):
        dataset = build_dataset(shapes["train_img_folder"], shapes["train_ann_file"], train=True, image_size=SIZE,
                                num_classes=3)
        if strong is not None:
            dataset.transforms = StopEpochTransforms(SIZE, strong=strong)
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True, num_workers=0,
                                             collate_fn=MultiScaleCollate([64, 96, 128], seed=1))
        return list(loader)

    fused, sequential = batches(None), batches(build_train_transforms(SIZE))
    assert len(fused) == len(sequential) == 6
    for (images, targets), (ref_images, refs) in zip(fused, sequential):
        assert images.dtype == torch.float32 and images.is_contiguous() and images.shape == ref_images.shape
        assert (images - ref_images).abs().max() <= IMAGE_BOUND
        size = images.shape[-1]
        for target, ref in zip(targets, refs):
            assert target["labels"].tolist() == ref["labels"].tolist()
            torch.testing.assert_close(target["boxes"] * size, ref["boxes"] * size, atol=BOX_BOUND, rtol=0)


def test_rejects_what_it_cannot_fuse():
    with pytest.raises(TypeError, match="PIL RGB"):
        FusedTrainTransform(SIZE)(torch.zeros(3, 8, 8, dtype=torch.uint8), sample(photo(8, 8, 0), [])[1])
    with pytest.raises(TypeError, match="PIL RGB"):
        FusedTrainTransform(SIZE)(*sample(photo(8, 8, 0).convert("L"), []))
