"""Data: COCO-format datasets, RT-DETR transforms, collation, loaders, class sets, synthetic sets."""
from .coco import CocoDetection, CocoFormatError, mscoco_category2label, mscoco_label2category
from .classes import AUTO, ClassSet, apply_class_set, class_set_from_categories, coco_class_set
from .collate import MultiScaleCollate, collate
from .fused_transforms import FusedTrainTransform
from .loaders import build_dataset, build_train_loader, build_val_loader, check_data_paths, config_ann_file
from .synthetic import make_hygiene_dataset, make_shapes_dataset
from .transforms import (StopEpochTransforms, build_train_transforms, build_val_image_transform,
                         build_val_transforms)


__all__ = [
    "AUTO", "ClassSet", "apply_class_set", "build_train_loader", "build_val_loader", "check_data_paths",
    "class_set_from_categories", "coco_class_set", "config_ann_file",
    "CocoDetection", "CocoFormatError", "FusedTrainTransform", "MultiScaleCollate", "StopEpochTransforms",
    "build_dataset", "build_train_transforms", "build_val_image_transform", "build_val_transforms", "collate",
    "make_hygiene_dataset", "make_shapes_dataset", "mscoco_category2label", "mscoco_label2category",
]
