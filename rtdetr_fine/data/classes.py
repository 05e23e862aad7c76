"""Class sets: what each contiguous label 0..num_classes-1 of the model stands for.

The model predicts labels 0..num_classes-1; annotation files and COCO result files use
category ids (any integers). A ClassSet fixes the mapping between the two and the names,
decided once from the training annotation file and stored in every checkpoint, so that
eval.py and predict.py map labels back to the ids and names the model was trained with.

How `num_classes` and `remap_mscoco_category` decide it (see `class_set_from_categories`):

  remap_mscoco_category  num_classes  labels
  false                  auto         0..K-1 for the file's K categories, in ascending id order
  false                  N (int)      the same, with N >= K (labels K..N-1 stand for no category)
  true                   auto         COCO's official 80: label i <-> COCO_LABEL_TO_CATEGORY[i] (N = 80)
  true                   N (int)      the same, with every COCO label the file uses < N

With remap, an annotation whose category is not one of COCO's 80 ids is an error; use it for
COCO (and subsets of COCO's ids) only, so that official checkpoints keep their label order.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import MAX_CLASSES
from .coco_ids import COCO_LABEL_TO_CATEGORY, COCO_NAMES

AUTO = "auto"


@dataclass(frozen=True)
class ClassSet:
    """num_classes model outputs; label i < len(category_ids) is category category_ids[i], named names[i]."""
    num_classes: int
    category_ids: tuple
    names: tuple
    remap_mscoco_category: bool = False

    def __post_init__(self):
        if len(self.category_ids) != len(self.names) or len(self.category_ids) > self.num_classes:
            raise ValueError(f"class set: {len(self.category_ids)} category ids, {len(self.names)} names, "
                             f"{self.num_classes} classes")
        if len(set(self.category_ids)) != len(self.category_ids):
            raise ValueError(f"class set: duplicate category ids in {list(self.category_ids)}")

    @property
    def label2category(self) -> dict:
        return dict(enumerate(self.category_ids))

    @property
    def category2label(self) -> dict:
        return {c: i for i, c in enumerate(self.category_ids)}

    @property
    def category2name(self) -> dict:
        return dict(zip(self.category_ids, self.names))

    def to_dict(self) -> dict:
        """Plain types only, so checkpoints holding it load with torch.load(weights_only=True)."""
        return {"num_classes": self.num_classes, "category_ids": list(self.category_ids),
                "names": list(self.names), "remap_mscoco_category": self.remap_mscoco_category}

    @classmethod
    def from_dict(cls, d: dict, where: str = "checkpoint") -> "ClassSet":
        try:
            classes = cls(int(d["num_classes"]), tuple(int(c) for c in d["category_ids"]),
                          tuple(str(n) for n in d["names"]), bool(d.get("remap_mscoco_category", False)))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: unreadable class set {str(d)[:200]} ({e})") from None
        if not 1 <= classes.num_classes <= MAX_CLASSES:   # the num_classes rule's range (config.py)
            raise ValueError(f"{where}: its class set has num_classes={classes.num_classes}, outside 1..{MAX_CLASSES}")
        return classes

    def same_labels(self, other: "ClassSet") -> bool:
        """The same outputs for the same category ids (names may differ)."""
        return (self.num_classes, self.category_ids) == (other.num_classes, other.category_ids)

    def describe(self, shown: int = 8) -> str:
        """One log line: class count and the first `shown` id=name pairs."""
        pairs = [f"{c}={n}" for c, n in zip(self.category_ids, self.names)]
        listed = ", ".join(pairs[:shown]) + (f", ... ({len(pairs)} categories)" if len(pairs) > shown else "")
        return (f"classes: {self.num_classes} model outputs; category id=name: {listed}"
                + (" (COCO's label order: remap_mscoco_category)" if self.remap_mscoco_category else ""))

    def coco_categories(self) -> list:
        """The COCO 'categories' list of this set."""
        return [{"id": c, "name": n} for c, n in zip(self.category_ids, self.names)]


def coco_class_set(num_classes: int = 80) -> ClassSet:
    """COCO's 80 categories with their official ids and names (labels >= 80 stand for none)."""
    n = min(num_classes, 80)
    return ClassSet(num_classes, tuple(COCO_LABEL_TO_CATEGORY[:n]), tuple(COCO_NAMES[:n]), True)


def class_set_from_categories(categories: list, num_classes, remap_mscoco_category: bool,
                              source: str) -> ClassSet:
    """The class set of an annotation file's 'categories' under the config keys (table above).

    categories: [{"id": int, "name": str}, ...] (any order); num_classes: int or "auto";
    source: the file, named in errors.
    """
    names = {c["id"]: str(c.get("name", c["id"])) for c in categories}
    if num_classes != AUTO and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer or 'auto', got {num_classes!r}")
    if remap_mscoco_category:
        labels = [i for i, c in enumerate(COCO_LABEL_TO_CATEGORY) if c in names]
        needed = max(labels) + 1 if labels else 0
        n = 80 if num_classes == AUTO else num_classes
        if needed > n:
            raise ValueError(f"{source} needs {needed} classes (COCO labels 0..{needed - 1} with "
                             f"remap_mscoco_category) but num_classes={n}; raise the config key `num_classes` "
                             "or set it to auto")
        kept = COCO_LABEL_TO_CATEGORY[:min(n, 80)]
        return ClassSet(n, tuple(kept), tuple(names.get(c, COCO_NAMES[i]) for i, c in enumerate(kept)), True)
    ids = sorted(names)
    if num_classes == AUTO:
        if not ids:
            raise ValueError(f"{source} has no 'categories', so num_classes: auto cannot count them; "
                             "list the categories or set num_classes")
        n = len(ids)
        if n > MAX_CLASSES:   # the num_classes rule's bound (config.py): a model this wide is a broken file
            raise ValueError(f"{source} has {n} categories, more than the {MAX_CLASSES} num_classes may be")
    else:
        n = num_classes
        if len(ids) > n:
            raise ValueError(f"{source} needs {len(ids)} classes (labels 0..{len(ids) - 1}) but num_classes={n}; "
                             "raise the config key `num_classes` or set it to auto")
    return ClassSet(n, tuple(ids), tuple(names[c] for c in ids), False)


def class_set_from_checkpoint(ckpt: dict, path: str) -> ClassSet | None:
    """The class set a train.py checkpoint records, or None (older or official checkpoints)."""
    d = ckpt.get("classes") if isinstance(ckpt, dict) else None
    return ClassSet.from_dict(d, f"checkpoint {path}") if d is not None else None


def apply_class_set(cfg: dict, classes: ClassSet) -> None:
    """Fix the config's class keys to the class set (resolves num_classes: auto) before building."""
    cfg["num_classes"] = classes.num_classes
    cfg["remap_mscoco_category"] = classes.remap_mscoco_category
