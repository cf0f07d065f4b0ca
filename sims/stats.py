"""What a partition gave each client: counts, label histograms, domains, subgraph sizes;
printed by ``flowerbed data`` and logged to MLflow by ``flowerbed run``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flowerbed.sims.datasets import GraphDataset, load_dataset
from flowerbed.sims.partitions import scenario_partition


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / max(counts.sum(), 1)
    return float(-(p * np.log(p)).sum())


def client_stats(scenario) -> list[dict[str, Any]]:
    """One record per client: ``train`` / ``unlabeled`` / ``test`` counts and the
    training label histogram ``labels`` (graphs: ``nodes``, ``edges``, label entropy)."""
    data = load_dataset(scenario.dataset)
    partition = scenario_partition(scenario)
    records = []
    if isinstance(data, GraphDataset):
        from flowerbed.sims.graphs import induced
        import torch

        for k, split in enumerate(partition.clients):
            sub = induced(data.graph, torch.from_numpy(split.train))
            labels = np.bincount(sub.y.numpy(), minlength=data.num_classes)
            records.append({
                "client": k, "nodes": int(sub.num_nodes), "edges": int(sub.edge_index.shape[1] // 2),
                "train": int(sub.train.sum()), "val": int(sub.val.sum()), "test": int(sub.test.sum()),
                "label_entropy": round(_entropy(labels), 4), "labels": labels.tolist(),
                **({"community": split.community} if split.community is not None else {}),
            })
        return records
    for k, split in enumerate(partition.clients):
        labels = np.bincount(data.y_train[split.train], minlength=data.num_classes)
        record = {"client": k, "train": len(split.train), "unlabeled": len(split.unlabeled),
                  "test": len(split.test), "label_entropy": round(_entropy(labels), 4),
                  "labels": labels.tolist()}
        if split.domain is not None:
            record["domain"] = split.domain
        records.append(record)
    return records


def format_stats(records: list[dict[str, Any]], class_groups: dict[str, list[int]] | None = None) -> str:
    """A table, one line per client."""
    skip = {"client", "labels"}
    columns = [k for k in records[0] if k not in skip]
    lines = ["client " + " ".join(f"{c:>13}" for c in columns) + "  labels (per class)"]
    for r in records:
        lines.append(f"{r['client']:>6} " + " ".join(f"{str(r[c]):>13}" for c in columns)
                     + "  " + " ".join(map(str, r["labels"])))
    lines.append(summary_line(records))
    if class_groups:
        lines.append("classes: " + "; ".join(f"{g} {v}" for g, v in class_groups.items()))
    return "\n".join(lines)


def summary_line(records: list[dict[str, Any]]) -> str:
    """One line for a whole partition: clients, training samples per client, label entropy."""
    train = np.array([r["train"] for r in records])
    parts = [f"{len(records)} clients", f"{train.sum()} labelled training samples "
             f"(per client min {train.min()} / median {int(np.median(train))} / max {train.max()})"]
    if any(r.get("unlabeled") for r in records):
        parts.append(f"{sum(r['unlabeled'] for r in records)} unlabelled")
    if "nodes" in records[0]:
        parts.append(f"nodes per client {min(r['nodes'] for r in records)}-{max(r['nodes'] for r in records)}")
    parts.append(f"test per client median {int(np.median([r['test'] for r in records]))}")
    parts.append(f"mean label entropy {np.mean([r['label_entropy'] for r in records]):.2f}")
    return ", ".join(parts)


def group_columns(num_classes: int, class_groups: dict[str, list[int]] | None) -> tuple[list[int], list[tuple[str, int, int]]]:
    """The heatmap's column order and its group spans: classes grouped (head, middle,
    tail, each in class order) and ``(group, first column, end column)`` per non-empty
    group; without groups, classes in order and no spans."""
    if not class_groups:
        return list(range(num_classes)), []
    order, spans = [], []
    for name, classes in class_groups.items():
        if classes:
            spans.append((name, len(order), len(order) + len(classes)))
            order += sorted(classes)
    return order, spans


def heatmap(records: list[dict[str, Any]], path: Path, title: str = "",
            class_groups: dict[str, list[int]] | None = None) -> Path:
    """PNG heatmap of clients x classes (training samples; nodes for graphs). With class
    groups (long-tailed data) the colours are on a log scale, as a tail class's 0-30
    samples vanish on a linear one beside a head class's thousands, and the columns are
    grouped head / middle / tail with the groups marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import SymLogNorm

    counts = np.array([r["labels"] for r in records])
    order, spans = group_columns(counts.shape[1], class_groups)
    counts = counts[:, order]
    height = min(12, 1.5 + 0.18 * len(records))
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * counts.shape[1], height))
    norm = SymLogNorm(linthresh=1.0, vmin=0, vmax=max(int(counts.max()), 1)) if spans else None
    image = ax.imshow(counts, aspect="auto", cmap="viridis", interpolation="nearest", norm=norm)
    ax.set_xlabel("class")
    ax.set_ylabel("client")
    ax.set_xticks(range(counts.shape[1]), [str(c) for c in order])
    for name, start, end in spans:
        if start:
            ax.axvline(start - 0.5, color="white", linewidth=2)
        ax.text((start + end - 1) / 2, -0.8, name, ha="center", va="bottom", fontsize=8)
    if "domain" in records[0]:
        ax.set_yticks(range(len(records)), [f"{r['client']} {r['domain']}" for r in records])
    fig.colorbar(image, ax=ax, label="training samples" + (" (log scale)" if spans else ""))
    ax.set_title(title, fontsize=9, pad=20 if spans else 6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
