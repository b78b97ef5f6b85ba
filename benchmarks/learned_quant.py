"""Learned JPEG quantization on imagenette-5k: J4D tables vs IJG tables, JPEG-DL, quality augmentation.

    python3 benchmarks/learned_quant.py [--work bench-quant] [--size 96] [--epochs 8]
        [--phases store,train,ijg,j4d,robust,rate,report] [--rate-weights 0.1,0.3,1,3]
        [--qualities 10,15,20,25,30,40,50,60,75,90] [--j4d-epochs 1] [--j4d-lr 0.02] [--j4d-hardness 8]

Every phase keeps its results in ``--work`` and is skipped when they are there, so the script can
be stopped and run again (the CPU runs take hours on 2 cores). Phases:

- ``store``: imagenette-5k (``../shared/data`` or ``$JDCT_SHARED_DATA``) converted at ``--size`` px,
  quality 100, 4 train views (``--work/in<size>.zarr``), as ``jdct convert ... --views 4``.
- ``train``: three runs of the same recipe (``jdct train`` defaults: SGD, LR 0.025 at batch 64,
  decays at 1/3, 2/3, 8/9; seed 0; ``--epochs``; ``late_concat_rfa_thinner``): ``base`` (plain),
  ``jpegdl`` (``--jpeg-layer learned``, tables from the data, Adam 0.01, hardness 0.7) and ``aug``
  (``--quality-augment 10:100``). One at a time; an interrupted run is resumed.
- ``ijg``: the base network on val requantized with libjpeg's tables at ``--qualities``
  (``jdct eval --requantize Q``): top-1, estimated bpp, real bpp of the JPEG files.
- ``j4d``: ``jdct learn-tables`` on the base network (train split, frozen network) at each rate
  weight, from the quality-50 tables; the tables go to ``benchmarks/learned_quant/j4d-<w>.json``
  and are evaluated the same way.
- ``robust``: base and aug networks on val requantized at qualities 10, 20, ..., 100.
- ``rate``: the rate estimate against real sizes on 100 val originals (224 px), IJG qualities
  10..95 and the learned tables: Spearman and relative errors (``--work/rate.json``).
- ``report``: the plot ``benchmarks/learned_quant/learned_quant.png`` (top-1 against real bpp:
  IJG vs J4D; the robustness curves), ``results.json`` beside it, and Markdown tables on stdout:
  for each J4D point the bits the IJG curve needs for the same top-1 (linear interpolation between
  its points, in bpp order, over the IJG curve's monotone upper envelope) and the saving.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
OUT = HERE / "learned_quant"

ARCH = "late_concat_rfa_thinner"


def shared_data() -> Path:
    return Path(os.environ.get("JDCT_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load(path: Path, default=None):
    return json.loads(path.read_text()) if path.is_file() else default


def save(path: Path, obj) -> None:
    from jdct_cli.fileio import atomic_write_json

    atomic_write_json(path, obj)


def phase_store(args) -> Path:
    from jdct_cli.convert import ConvertOptions, convert

    store = Path(args.work) / f"in{args.size}.zarr"
    src = shared_data() / "imagenette-5k"
    if not src.is_dir():
        raise SystemExit(f"imagenette-5k not found under {src.parent} (set JDCT_SHARED_DATA)")
    convert(src, store, options=ConvertOptions(size=args.size, quality=100, views=4), workers=2)
    return store


RUNS = {
    "base": {},
    "jpegdl": {"jpeg_layer": "learned"},
    "aug": {"quality_augment": "10:100"},
}


def run_dir(args, name: str) -> Path:
    return Path(args.work) / "runs" / name


def phase_train(args, store: Path) -> None:
    from jdct_cli.config import build_config
    from jdct_cli.train import train

    for name in args.runs:
        extra = RUNS[name]
        out = run_dir(args, name)
        metrics = out / "metrics.jsonl"
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= args.epochs:
            continue

        def progress(ev, name=name):
            if ev["event"] == "epoch_end":
                log(f"{name} epoch {ev['epoch']}: train loss {ev['train_loss']:.3f}, val top-1 "
                    f"{100 * ev['val_top1']:.1f}%, {ev['epoch_time_s']:.0f} s")

        log(f"training {name} ({extra or 'plain'})")
        if (out / "last.pt").is_file():
            result = train(None, resume=out, progress=progress)
        else:
            cfg = build_config(arch=ARCH, data=os.fspath(store), out=os.fspath(out), epochs=args.epochs, seed=0,
                               device="cpu", **extra)
            result = train(cfg, progress=progress)
        if result.interrupted:
            raise SystemExit(f"interrupted: run the same command again to resume {name}")


def evaluate_at(args, run: str, spec, store: Path) -> dict:
    from jdct_cli.evaluate import evaluate

    res = evaluate(run_dir(args, run) / "best.pt", store, batch_size=100, device="cpu", requantize=spec)
    r = res["requantize"]
    return {"top1": res["top1"], "loss": res["loss"], "estimated_bpp": r["estimated_bpp"], "real_bpp": r["real_bpp"],
            "quality": r["quality"], "tables": r["tables_file"]}


def phase_ijg(args, store: Path) -> None:
    path = Path(args.work) / "ijg.json"
    done = load(path, {})
    for q in args.qualities:
        if str(q) in done:
            continue
        done[str(q)] = evaluate_at(args, "base", q, store)
        log(f"IJG q{q}: top-1 {100 * done[str(q)]['top1']:.1f}%, real {done[str(q)]['real_bpp']:.3f} bpp")
        save(path, done)


def phase_j4d(args, store: Path) -> None:
    from jdct_cli.tables import learn_tables

    path = Path(args.work) / "j4d.json"
    done = load(path, {})
    OUT.mkdir(exist_ok=True)
    for w in args.rate_weights:
        key = f"{w:g}"
        if key in done:
            continue
        tables = OUT / f"j4d-{key}.json"
        log(f"learning tables, rate weight {key}")
        rep = learn_tables(run_dir(args, "base") / "best.pt", store, tables, rate_weight=w, epochs=args.j4d_epochs,
                           lr=args.j4d_lr, hardness=args.j4d_hardness, init=args.j4d_init, batch_size=64,
                           device="cpu", val_split=None)
        entry = evaluate_at(args, "base", os.fspath(tables), store)
        entry.update({"train_first": rep["train_first"], "train_last": rep["train_last"], "luma": rep["luma"],
                      "chroma": rep["chroma"], "estimated_quality": rep["estimated_quality"], "steps": rep["steps"]})
        done[key] = entry
        log(f"J4D w={key}: top-1 {100 * entry['top1']:.1f}%, real {entry['real_bpp']:.3f} bpp")
        save(path, done)


def phase_robust(args, store: Path) -> None:
    path = Path(args.work) / "robust.json"
    done = load(path, {})
    for run in ("base", "aug", "jpegdl"):
        if not (run_dir(args, run) / "best.pt").is_file():
            continue
        for q in range(10, 101, 10):
            key = f"{run}/{q}"
            if key in done:
                continue
            done[key] = evaluate_at(args, run, q, store)
            log(f"{run} at q{q}: top-1 {100 * done[key]['top1']:.1f}%")
            save(path, done)


def phase_rate(args) -> None:
    """How well the rate estimate tracks real sizes: the first 10 val images of each class (224 px
    originals), IJG qualities 10..95 and the learned tables of ``benchmarks/learned_quant``."""
    import numpy as np
    import torch
    from PIL import Image
    from scipy.stats import spearmanr

    from jdct_cli import _decoder
    from jdct_cli.jpegmath import learned
    from jdct_cli.jpegmath.quant import ijg_tables
    from jdct_cli.tables import encode_with_tables, entropy_coded_bytes, read_tables

    val = shared_data() / "imagenette-5k" / "val"
    images = [np.ascontiguousarray(np.asarray(Image.open(f).convert("RGB")))
              for c in sorted(d for d in val.iterdir() if d.is_dir()) for f in sorted(c.iterdir())[:10]]
    sets = [(f"q{q}", *ijg_tables(q)) for q in range(10, 100, 5)]
    sets += [(f.stem, *read_tables(f).arrays()) for f in sorted(OUT.glob("j4d-*.json"))]
    ones = np.ones(64, np.uint16)
    planes = []
    for rgb in images:
        y, cb, cr, _ = _decoder.forward_dct(rgb, ones, ones)
        planes.append([torch.as_tensor(np.moveaxis(p, -1, 0)[None].astype(np.float64)) for p in (y, cb, cr)])
    pixels = sum(r.shape[0] * r.shape[1] for r in images)
    rows, pairs = [], []
    for name, luma, chroma in sets:
        lq, cq = torch.as_tensor(luma.astype(np.float64)), torch.as_tensor(chroma.astype(np.float64))
        pooled = learned.IndexCounts()
        real = 0
        for rgb, p in zip(images, planes):
            pooled.add(p, lq, cq)
            bits = 8 * entropy_coded_bytes(encode_with_tables(rgb, luma, chroma))
            real += bits
            pairs.append((float(learned.estimate_bits(p, lq, cq)), bits))
        rows.append({"tables": name, "estimated_bpp": pooled.bits() / pixels, "real_bpp": real / pixels})
    est = [r["estimated_bpp"] for r in rows]
    real = [r["real_bpp"] for r in rows]
    per_image_rel = [(e - r) / r for e, r in pairs]
    out = {"images": len(images), "tables": rows,
           "spearman_tables": float(spearmanr(est, real).statistic),
           "spearman_pairs": float(spearmanr([e for e, _ in pairs], [r for _, r in pairs]).statistic),
           "mean_relative_error_pooled": float(np.mean([(e - r) / r for e, r in zip(est, real)])),
           "mean_abs_relative_error_pooled": float(np.mean([abs(e - r) / r for e, r in zip(est, real)])),
           "mean_relative_error_per_image": float(np.mean(per_image_rel)),
           "mean_abs_relative_error_per_image": float(np.mean(np.abs(per_image_rel)))}
    save(Path(args.work) / "rate.json", out)
    print("\n| tables | estimated bpp | real bpp | relative error |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['tables']} | {r['estimated_bpp']:.3f} | {r['real_bpp']:.3f} | "
              f"{100 * (r['estimated_bpp'] - r['real_bpp']) / r['real_bpp']:+.1f} % |")
    print(f"Spearman: per tables {out['spearman_tables']:.4f}, per (image, tables) {out['spearman_pairs']:.4f}; "
          f"mean relative error pooled {100 * out['mean_relative_error_pooled']:+.1f} % "
          f"(abs {100 * out['mean_abs_relative_error_pooled']:.1f} %), per image "
          f"{100 * out['mean_relative_error_per_image']:+.1f} % (abs {100 * out['mean_abs_relative_error_per_image']:.1f} %)")


def ijg_bpp_at(ijg: list[tuple[float, float]], top1: float):
    """Real bpp the IJG curve needs for ``top1``: its points in bpp order, each raised to the best
    top-1 at or below its rate (the monotone upper envelope: a higher quality never counts as worse),
    linearly interpolated; None when ``top1`` is outside the curve's range."""
    pts = sorted(ijg)
    env, best = [], -1.0
    for bpp, acc in pts:
        best = max(best, acc)
        env.append((bpp, best))
    if top1 <= env[0][1]:
        return env[0][0] if top1 == env[0][1] else None
    for (b0, a0), (b1, a1) in zip(env, env[1:]):
        if a0 < top1 <= a1:
            return b0 + (b1 - b0) * (top1 - a0) / (a1 - a0)
    return None


def phase_report(args) -> dict:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    work = Path(args.work)
    ijg, j4d, robust = load(work / "ijg.json", {}), load(work / "j4d.json", {}), load(work / "robust.json", {})
    metrics = {}
    for run in RUNS:
        path = run_dir(args, run) / "metrics.jsonl"
        if path.is_file():
            metrics[run] = [json.loads(line) for line in path.read_text().splitlines()]
    ijg_pts = [(v["real_bpp"], v["top1"]) for v in ijg.values()]
    rows = []
    for key, v in sorted(j4d.items(), key=lambda kv: kv[1]["real_bpp"]):
        need = ijg_bpp_at(ijg_pts, v["top1"]) if ijg_pts else None
        saving = None if need is None else 1 - v["real_bpp"] / need
        # outside the IJG curve's top-1 range: above its best point, or below its worst
        where = "within" if need is not None else (
            "above" if ijg_pts and v["top1"] > max(a for _, a in ijg_pts) else "below")
        rows.append({"rate_weight": float(key), **{k: v[k] for k in ("top1", "real_bpp", "estimated_bpp")},
                     "ijg_bpp_same_top1": need, "saving": saving, "top1_vs_ijg_range": where,
                     "estimated_quality": v["estimated_quality"]})
    # the rate estimate against the real files on this val split: one point per tables (IJG and J4D)
    points = [(v["estimated_bpp"], v["real_bpp"]) for v in [*ijg.values(), *j4d.values()]]
    if len(points) >= 3:
        from scipy.stats import spearmanr

        rel = [(e - r) / r for e, r in points]
        estimate = {"points": len(points), "spearman": float(spearmanr(*zip(*points)).statistic),
                    "mean_relative_error": float(sum(rel) / len(rel)),
                    "mean_abs_relative_error": float(sum(abs(x) for x in rel) / len(rel))}
    else:
        estimate = None
    results = {"size": args.size, "epochs": args.epochs, "arch": ARCH, "ijg": ijg, "j4d": j4d, "robust": robust,
               "comparison": rows, "rate_estimate_val": estimate,
               "runs": {k: {"final_val_top1": m[-1]["val_top1"], "best_val_top1": max(e["val_top1"] for e in m),
                            "epochs": len(m), "val_top1_by_epoch": [e["val_top1"] for e in m],
                            "epoch_time_s": [e["epoch_time_s"] for e in m]} for k, m in metrics.items()}}
    OUT.mkdir(exist_ok=True)
    save(OUT / "results.json", results)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    ax = axes[0]
    if ijg:
        pts = sorted((v["real_bpp"], 100 * v["top1"], q) for q, v in ijg.items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="tab:blue", label="IJG tables (quality Q)")
        for b, a, q in pts:
            ax.annotate(f"q{q}", (b, a), textcoords="offset points", xytext=(4, -10), fontsize=7, color="tab:blue")
    if j4d:
        pts = sorted((v["real_bpp"], 100 * v["top1"], k) for k, v in j4d.items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "s--", color="tab:red", label="J4D tables (rate weight)")
        for b, a, k in pts:
            ax.annotate(k, (b, a), textcoords="offset points", xytext=(4, 4), fontsize=7, color="tab:red")
    ax.set_xlabel("real bits per pixel (entropy-coded bytes of libjpeg's files, 4:2:0, optimized Huffman)")
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(f"{ARCH}, imagenette-5k val at {args.size} px: frozen network, requantized inputs", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    for run, style in (("base", "o-"), ("aug", "s-"), ("jpegdl", "^:")):
        pts = sorted((int(k.split("/")[1]), 100 * v["top1"]) for k, v in robust.items() if k.startswith(run + "/"))
        if pts:
            label = {"base": "plain training", "aug": "--quality-augment 10:100",
                     "jpegdl": "--jpeg-layer learned"}[run]
            if run in metrics:
                label += f" ({len(metrics[run])} epochs)"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
    ax.set_xlabel("IJG quality of the val inputs (requantized)")
    ax.set_ylabel("val top-1 (%)")
    ax.set_title("robustness to JPEG quality", fontsize=9)
    ax.grid(alpha=0.3)
    if robust:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "learned_quant.png", dpi=110)

    print("\n| tables | top-1 | real bpp | estimated bpp | IJG curve's bpp at this top-1 | saving |\n"
          "|---|---:|---:|---:|---:|---:|")
    for q, v in sorted(ijg.items(), key=lambda kv: int(kv[0])):
        print(f"| IJG q{q} | {100 * v['top1']:.1f} % | {v['real_bpp']:.3f} | {v['estimated_bpp']:.3f} | | |")
    for r in rows:
        need = (f"none ({r['top1_vs_ijg_range']} the curve's top-1 range)" if r["ijg_bpp_same_top1"] is None
                else f"{r['ijg_bpp_same_top1']:.3f}")
        save_txt = "-" if r["saving"] is None else f"{100 * r['saving']:+.1f} %"
        print(f"| J4D w={r['rate_weight']:g} (~q{r['estimated_quality']['luma']}) | {100 * r['top1']:.1f} % | "
              f"{r['real_bpp']:.3f} | {r['estimated_bpp']:.3f} | {need} | {save_txt} |")
    if estimate:
        print(f"\nrate estimate vs real bpp on val, {estimate['points']} tables: Spearman {estimate['spearman']:.4f}, "
              f"mean relative error {100 * estimate['mean_relative_error']:+.1f} % "
              f"(abs {100 * estimate['mean_abs_relative_error']:.1f} %)")
    if robust:
        runs = [r for r in ("base", "aug", "jpegdl") if any(k.startswith(r + "/") for k in robust)]
        print("\n| quality | " + " | ".join(runs) + " |\n|---:|" + "---:|" * len(runs))
        for q in range(10, 101, 10):
            cells = [f"{100 * robust[f'{r}/{q}']['top1']:.1f} %" if f"{r}/{q}" in robust else "-" for r in runs]
            print(f"| {q} | " + " | ".join(cells) + " |")
    for run, r in results["runs"].items():
        print(f"{run}: val top-1 by epoch {[round(100 * v, 1) for v in r['val_top1_by_epoch']]}")
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="bench-quant")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--phases", default="store,train,ijg,j4d,robust,rate,report")
    p.add_argument("--qualities", default="10,15,20,25,30,40,50,60,75,90")
    p.add_argument("--rate-weights", default="0.1,0.3,1,3")
    p.add_argument("--j4d-epochs", type=float, default=1.0)
    p.add_argument("--j4d-lr", type=float, default=0.02)
    p.add_argument("--j4d-hardness", type=float, default=8.0)
    p.add_argument("--j4d-init", default="q50")
    p.add_argument("--runs", default="base,jpegdl,aug",
                   help="the training runs of the train phase, in order (of base, jpegdl, aug)")
    p.add_argument("--torch-threads", type=int, default=2)
    args = p.parse_args()
    args.runs = [r for r in args.runs.split(",") if r]
    unknown = sorted(set(args.runs) - set(RUNS))
    if unknown:
        p.error(f"unknown --runs {', '.join(unknown)} (choose from {', '.join(RUNS)})")
    args.qualities = [int(q) for q in args.qualities.split(",")]
    args.rate_weights = [float(w) for w in args.rate_weights.split(",")]
    import torch

    torch.set_num_threads(args.torch_threads)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    phases = args.phases.split(",")
    store = Path(args.work) / f"in{args.size}.zarr"
    if "store" in phases:
        store = phase_store(args)
    if "train" in phases:
        phase_train(args, store)
    if "ijg" in phases:
        phase_ijg(args, store)
    if "j4d" in phases:
        phase_j4d(args, store)
    if "robust" in phases:
        phase_robust(args, store)
    if "rate" in phases:
        phase_rate(args)
    if "report" in phases:
        phase_report(args)


if __name__ == "__main__":
    main()
