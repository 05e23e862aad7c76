"""Data: COCO-format datasets, RT-DETR transforms, collation, synthetic sets."""
from .coco import CocoDetection, CocoFormatError, mscoco_category2label, mscoco_label2category
from .collate import MultiScaleCollate, collate
from .synthetic import make_hygiene_dataset, make_shapes_dataset
from .transforms import (StopEpochTransforms, build_train_transforms, build_val_image_transform,
                         build_val_transforms)


def build_dataset(img_folder, ann_file, train, image_size=640, remap_mscoco_category=False,
                  num_classes=None, stop_epoch=None, classes=None, exif_transpose=False):
    """CocoDetection with the RT-DETR train (strong augs until `stop_epoch`) or val transforms.

    image_size: int or (h, w). classes: the ClassSet to label with (e.g. the training set's);
    without it the class set comes from the file's categories under num_classes (int, checked
    against them, or "auto") and remap_mscoco_category (see rtdetr_fine/classes.py).
    exif_transpose: apply the EXIF orientation tag (off for COCO, whose boxes refer to the stored
    pixels, as torchvision's CocoDetection reads them).
    Call dataset.set_epoch(epoch) each epoch for the stop_epoch policy.
    """
    transforms = StopEpochTransforms(image_size, stop_epoch) if train else build_val_transforms(image_size)
    return CocoDetection(img_folder, ann_file, transforms, remap_mscoco_category=remap_mscoco_category,
                         num_classes=num_classes, classes=classes, exif_transpose=exif_transpose)


__all__ = [
    "CocoDetection", "CocoFormatError", "MultiScaleCollate", "StopEpochTransforms",
    "build_dataset", "build_train_transforms", "build_val_image_transform", "build_val_transforms", "collate",
    "make_hygiene_dataset", "make_shapes_dataset", "mscoco_category2label", "mscoco_label2category",
]
