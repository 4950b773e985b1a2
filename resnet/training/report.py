"""What a finished run leaves in --model_dir: metrics.json and two PNGs. Chief only.

metrics.json is written last and atomically, so its presence means the run finished.
"""

import os
from typing import Sequence

import numpy as np

from resnet.fileio import write_json_atomic

METRICS = "metrics.json"
CURVES_PNG = "training_curves.png"
CONFUSION_PNG = "confusion_matrix.png"


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # no display on a cluster node
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str) -> None:
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    os.replace(tmp, path)


def plot_curves(history: Sequence[dict], path: str) -> None:
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train"), ("test_loss", "test")):
        ax_loss.plot(epochs, [h.get(key) for h in history], marker="o", label=label)
    for key, label in (("train_accuracy", "train"), ("test_accuracy", "test")):
        ax_acc.plot(epochs, [h.get(key) for h in history], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)
    plt.close(fig)


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str],
                   path: str) -> None:
    """Counts in the cells up to 20 classes; beyond that (CIFAR-100) the cells are shaded by the
    share of each true class and the figure grows with the class count, so that all 100 names
    stay legible and a class's confusions show as a row."""
    plt = _pyplot()
    matrix = np.asarray(confusion)
    n = len(class_names)
    many = n > 20
    side = 7 if not many else min(6 + 0.18 * n, 30)
    fig, ax = plt.subplots(figsize=(side, side * 6 / 7))
    shown = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if many else matrix
    # Square-root shading beyond 20 classes: a 5% confusion stays visible beside a 90% diagonal.
    from matplotlib.colors import PowerNorm
    im = ax.imshow(shown, cmap="Blues", norm=PowerNorm(0.5, 0, 1) if many else None)
    font = 7 if not many else 6
    ax.set_xticks(range(n), class_names, rotation=45 if not many else 90, ha="right"
                  if not many else "center", fontsize=font)
    ax.set_yticks(range(n), class_names, fontsize=font)
    ax.set(xlabel="predicted", ylabel="true", title="Test confusion matrix" +
           (" (share of each true class)" if many else ""))
    if not many:
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v > matrix.max() / 2 else "black")
    fig.colorbar(im)
    _save(fig, path)
    plt.close(fig)


def write(model_dir: str, metrics: dict, class_names: Sequence[str]) -> str:
    if metrics.get("history"):
        plot_curves(metrics["history"], os.path.join(model_dir, CURVES_PNG))
    plot_confusion(metrics["confusion_matrix"], class_names,
                   os.path.join(model_dir, CONFUSION_PNG))
    path = os.path.join(model_dir, METRICS)
    write_json_atomic(path, metrics)
    return path
