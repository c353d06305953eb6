"""Training curves of several runs in one picture (loss and validation AP against steps).

  python scripts/plot_runs.py docs/movenet_paf_curves.png runs/movenet_paf:shipped runs/other:label ...

Each run folder is a trainer ``train.out_dir``; its history comes from ``history.json`` (finished
runs) or ``state.pt`` (runs stopped or still going).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def history(folder: Path) -> dict:
    if (folder / "history.json").is_file():
        return json.loads((folder / "history.json").read_text())
    if (folder / "state.pt").is_file():
        import torch

        return json.loads(torch.load(folder / "state.pt", map_location="cpu", weights_only=True)["history"])
    raise FileNotFoundError(f"{folder}: no history.json or state.pt (not a training run folder?)")


def smooth(values: list[float], k: int = 9) -> list[float]:
    out = []
    for i in range(len(values)):
        w = values[max(0, i - k + 1): i + 1]
        out.append(sum(w) / len(w))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="PNG to write")
    p.add_argument("runs", nargs="+", metavar="FOLDER[:LABEL]")
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for spec in args.runs:
        folder, _, label = spec.partition(":")
        try:
            h = history(Path(folder))
        except FileNotFoundError as e:
            print(f"plot_runs: error: {e}", file=sys.stderr)
            return 2
        label = label or Path(folder).name
        line, = ax[0].plot(h["step"], smooth(h["loss"]), lw=1.2, label=label)
        if h["eval_step"]:
            ax[1].plot(h["eval_step"], h["AP"], marker="o", color=line.get_color(), label=label)
    ax[0].set_xlabel("step (batch 16)")
    ax[0].set_ylabel("training loss per image (moving mean of 9 logs)")
    ax[0].set_yscale("log")
    ax[1].set_xlabel("step (batch 16)")
    ax[1].set_ylabel("AP, coco-mini/val2017 (79 images)")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
