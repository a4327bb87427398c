"""Loss curves from the CSV files that `kerasllm.callbacks.TrainingLogger` writes."""

import csv
import math
import os


def _read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _series(rows, x_key, y_key):
    xs, ys = [], []
    for row in rows:
        try:
            x, y = float(row[x_key]), float(row[y_key])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(y):
            xs.append(x)
            ys.append(y)
    return xs, ys


def plot_history(csv_path, png_path, validation_path=None):
    """Draws training loss per step, validation loss per epoch and the learning rate into a PNG.

    Uses Matplotlib's Agg canvas directly, so it works without a display and leaves the global
    Matplotlib backend alone.

    Args:
        csv_path: str. Per-step history with columns `step`, `loss` and optionally `learning_rate`
            (`history.csv` from `kerasllm.callbacks.TrainingLogger`).
        png_path: str. Where to write the image.
        validation_path: str. Per-epoch CSV with columns `step` and `val_loss`. Defaults to `None`
            (`validation.csv` next to `csv_path`, if it exists).

    Returns:
        `png_path`.

    Example:

    >>> kerasllm.utils.plotting.plot_history("runs/gpt/history.csv", "runs/gpt/loss.png")
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = _read_rows(csv_path)
    if validation_path is None:
        candidate = os.path.join(os.path.dirname(os.path.abspath(csv_path)), "validation.csv")
        validation_path = candidate if os.path.exists(candidate) else None
    validation_rows = _read_rows(validation_path) if validation_path else []

    steps, losses = _series(rows, "step", "loss")
    val_steps, val_losses = _series(validation_rows, "step", "val_loss")
    lr_steps, lrs = _series(rows, "step", "learning_rate")

    figure = Figure(figsize=(8, 6 if lrs else 4))
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots(2 if lrs else 1, 1, sharex=True, squeeze=False)[:, 0]
    axes[0].plot(steps, losses, label="train loss", linewidth=1)
    if val_losses:
        axes[0].plot(val_steps, val_losses, "o-", label="validation loss")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    if lrs:
        axes[1].plot(lr_steps, lrs, color="tab:green", linewidth=1)
        axes[1].set_ylabel("learning rate")
        axes[1].grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    figure.tight_layout()
    canvas.print_png(png_path)
    return png_path
