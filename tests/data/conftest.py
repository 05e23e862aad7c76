import pytest
import torch

from rtdetr_fine.data import make_hygiene_dataset, make_shapes_dataset


@pytest.fixture(scope="session")
def hygiene(tmp_path_factory):
    """The hygiene set, written once per session; tests must not modify it."""
    return make_hygiene_dataset(tmp_path_factory.mktemp("hygiene"))


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """A small shapes set, written once per session; tests must not modify it."""
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=24, num_val=6, image_size=128)


@pytest.fixture(autouse=True)
def single_thread():
    """Per-sample transforms are tiny ops; OpenMP wake-ups dominate them on 2 cores.

    DataLoader workers run single-threaded too, so this matches real use.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
