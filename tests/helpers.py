"""Paths shared by the tests (imported as `helpers`; conftest.py puts this folder on sys.path)."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def config_path(name):
    return os.path.join(ROOT, "configs", name)


def write_custom_id_set(root, num_train=8, num_val=4, image_size=128):
    """The shapes set with category ids {3, 17, 90} instead of {1, 2, 3}, listed out of id order:
    circle = 90, square = 3, triangle = 17. Returns the make_shapes_dataset paths."""
    import json

    from rtdetr_fine.data import make_shapes_dataset
    paths = make_shapes_dataset(root, num_train=num_train, num_val=num_val, image_size=image_size, num_classes=3)
    new_ids = {1: 90, 2: 3, 3: 17}
    for split in ("train", "val"):
        with open(paths[f"{split}_ann_file"]) as f:
            data = json.load(f)
        data["categories"] = [dict(c, id=new_ids[c["id"]]) for c in data["categories"]]
        data["annotations"] = [dict(a, category_id=new_ids[a["category_id"]]) for a in data["annotations"]]
        with open(paths[f"{split}_ann_file"], "w") as f:
            json.dump(data, f)
    return paths
