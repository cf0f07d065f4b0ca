"""Where loaders may write: processed graphs, frozen-encoder embeddings.

Never into the data root: it may be shared and read-only (the project's datasets are),
and a write permission check says nothing for root, who may write anywhere. Derived files
go to ``$FLOWERBED_CACHE`` if set, else ``$XDG_CACHE_HOME/flowerbed`` (default
``~/.cache/flowerbed``), in a folder per data root so two roots never share files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_ENV = "FLOWERBED_CACHE"


def writable_cache(data_root: Path) -> Path:
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        path = Path(chosen).expanduser()
    else:
        root = Path(data_root).expanduser().resolve()
        base = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "flowerbed"
        path = base / f"{root.name}-{hashlib.sha256(str(root).encode()).hexdigest()[:12]}"
    path.mkdir(parents=True, exist_ok=True)
    return path
