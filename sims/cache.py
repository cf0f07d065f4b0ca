"""Where loaders may write: processed graphs, frozen-encoder embeddings.

The data root may be read-only (the project's shared datasets are), so derived files
go to ``$FLOWERBED_CACHE`` if set, else ``<data root>/.flowerbed-cache`` when the data
root is writable, else ``~/.cache/flowerbed/cache``.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "FLOWERBED_CACHE"


def writable_cache(data_root: Path) -> Path:
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        path = Path(chosen).expanduser()
    elif os.access(data_root, os.W_OK):
        path = data_root / ".flowerbed-cache"
    else:
        path = Path("~/.cache/flowerbed/cache").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
