"""The GPU run's report: section summaries, ordering checks, Markdown, the figure.

    python3 benchmarks/gpu/report.py report.json [--md report.md] [--png report.png]

re-renders the Markdown (and the figure) from a fetched ``report.json``. ``suite.py`` uses the
same functions while the run goes. Standard library only, except matplotlib for the figure.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Optional

REFERENCE = "resnet50_rgb"
#: The issue's accuracy ordering (RFA variants >= ResNet-50 >= UpSampling > DownSampling) on the
#: networks trained here: (better, relation, worse).
ISSUE_ORDER = (("upsampling_rfa", ">=", "resnet50_rgb"), ("late_concat_rfa_thinner", ">=", "resnet50_rgb"),
               ("resnet50_rgb", ">", "downsampling"))


# ------------------------------------------------------------------------------------------------
# Section summaries
# ------------------------------------------------------------------------------------------------


def summarize_inference(records: list[dict], models: dict) -> dict:
    """Per-network images/s and ratios to ``resnet50_rgb`` (plain and with the copy) beside the paper's."""
    start = next((r for r in records if r.get("kind") == "start"), {})
    nets = [r for r in records if r.get("kind") == "network" and not r.get("repeat")]
    repeat = next((r for r in records if r.get("kind") == "network" and r.get("repeat") and "error" not in r), None)
    ref = next((r for r in nets if r["name"] == REFERENCE and "error" not in r), None)
    ref_paper = (models.get(REFERENCE) or {}).get("paper_fps") or 208
    rows = []
    for r in nets:
        row = {"name": r["name"], "input_kind": r.get("input_kind"), "gmacs": (models.get(r["name"]) or {}).get("gmacs")}
        if "error" in r:
            row["error"] = r["error"]
        else:
            row["images_per_s"] = r["gpu_inputs_images_per_s"]
            row["with_copy_images_per_s"] = r["with_copy_images_per_s"]
            row["peak_memory_bytes"] = r.get("peak_memory_bytes")
            if ref is not None:
                row["ratio"] = r["gpu_inputs_images_per_s"] / ref["gpu_inputs_images_per_s"]
                row["with_copy_ratio"] = r["with_copy_images_per_s"] / ref["with_copy_images_per_s"]
        paper = r.get("paper_fps") or (models.get(r["name"]) or {}).get("paper_fps")
        row["paper_fps"] = paper
        row["paper_ratio"] = paper / ref_paper if paper else None
        rows.append(row)
    out = {"device_name": start.get("device_name"), "batch": start.get("batch"), "size": start.get("size"),
           "warmup": start.get("warmup"), "iters": start.get("iters"), "networks": rows,
           "copies": [{k: r[k] for k in ("what", "bytes", "median_s", "gb_per_s")} for r in records
                      if r.get("kind") == "copy"],
           "images_per_s": {r["name"]: r["images_per_s"] for r in rows if "images_per_s" in r}}
    if ref is not None and repeat is not None:
        a, b = ref["gpu_inputs_images_per_s"], repeat["gpu_inputs_images_per_s"]
        out["reference_spread"] = abs(a - b) / a
    for key in ("ratio", "with_copy_ratio"):
        pairs = [(r[key], r["paper_ratio"]) for r in rows if r.get(key) is not None and r.get("paper_ratio")]
        out[f"spearman_{key}_vs_paper"] = spearman(pairs) if len(pairs) >= 3 else None
    return out


def summarize_loader(records: list[dict]) -> dict:
    """Rows per (pipeline, threads), with the ratio to torchvision's pipeline at the same threads."""
    tv = {r["threads"]: r["per_s"] for r in records if r.get("mode") == "torchvision" and r.get("per_s")}
    rows = []
    for r in records:
        row = {k: r.get(k) for k in ("mode", "threads", "output", "layout", "batch", "per_s", "per_cpu_s",
                                     "samples", "seconds", "warmup_s", "skipped", "error", "device")}
        if r.get("per_s") and tv.get(r["threads"]) and r["mode"] != "torchvision":
            row["vs_torchvision"] = r["per_s"] / tv[r["threads"]]
        rows.append({k: v for k, v in row.items() if v is not None})
    return {"rows": rows}


def summarize_augment(records: list[dict], target: Optional[float]) -> dict:
    """Rows of benchmarks/device_augment.py, the best device figure and whether it meets ``target``
    (samples/s; None: no target, e.g. the dry run)."""
    rows = list(records)
    device = [r for r in rows if r.get("pipeline") == "device" and _finite(r.get("per_s"))]
    best = max((r["per_s"] for r in device), default=None)
    rec: dict = {"rows": rows, "best_per_s": best, "target_per_s": target}
    if target is not None and best is not None:
        rec["meets_target"] = best >= target
    return rec


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def training_row(run_dir: Path, wall_s: float, epochs: int) -> dict:
    """What one `jdct train` run achieved, from its metrics.jsonl (complete or cut short)."""
    path = Path(run_dir) / "metrics.jsonl"
    hist = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                hist.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    row: dict = {"epochs_planned": epochs, "epochs_done": len(hist), "wall_s": round(wall_s, 1)}
    if not hist:
        return row
    steady = hist[1:] or hist  # the first epoch includes cuDNN autotuning and warm-up
    row.update({
        "final_val_top1": hist[-1]["val_top1"], "final_val_top5": hist[-1]["val_top5"],
        "best_val_top1": max(m["val_top1"] for m in hist), "final_train_loss": hist[-1]["train_loss"],
        "val_samples": hist[-1]["val_samples"],
        "train_images_per_s": statistics.fmean(m["images_per_s"] for m in steady),
        "epoch_time_s": statistics.fmean(m["epoch_time_s"] for m in steady),
        "history": [{k: m.get(k) for k in ("epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1",
                                            "val_top5", "images_per_s", "epoch_time_s")} for m in hist],
    })
    return row


def summarize_training(rows: list[dict], models: dict, n_val: int) -> dict:
    """Speed ratios to the reference and the accuracy orderings (the issue's, and the paper's
    Table 1 order), each relation judged against the sampling noise of ``n_val`` val images."""
    done = {r["arch"]: r for r in rows if r.get("layout") == "crops" and r.get("epochs_done")
            and r["epochs_done"] == r["epochs_planned"]}
    ref = done.get(REFERENCE)
    for r in rows:
        if ref is not None and r.get("train_images_per_s"):
            r["speed_ratio"] = r["train_images_per_s"] / ref["train_images_per_s"]
    top1 = {a: r["final_val_top1"] for a, r in done.items()}
    n = (next(iter(done.values()))["val_samples"] if done else None) or n_val
    issue = [_relation(a, rel, b, top1, n) for a, rel, b in ISSUE_ORDER]
    paper_err = {a: (models.get(a) or {}).get("paper_top1_error") for a in top1}
    ranked = sorted((a for a in top1 if paper_err.get(a) is not None), key=lambda a: paper_err[a])
    paper = [_relation(a, ">=", b, top1, n) for i, a in enumerate(ranked) for b in ranked[i + 1:]]
    for rel in paper:
        rel["paper_top1_error"] = [paper_err[rel["better"]], paper_err[rel["worse"]]]
    out = {"issue_order": issue, "paper_order": paper, "val_samples": n,
           "measured_order": sorted(top1, key=lambda a: -top1[a])}
    if len(ranked) >= 3:
        out["kendall_tau_vs_paper"] = kendall([(top1[a], -paper_err[a]) for a in ranked])
    return out


def _relation(a: str, rel: str, b: str, top1: dict, n: int) -> dict:
    """Whether ``top1[a] rel top1[b]`` holds, and whether the difference exceeds 2 standard errors."""
    out = {"better": a, "relation": rel, "worse": b}
    if a not in top1 or b not in top1:
        out["verdict"] = "not measured"
        return out
    pa, pb = top1[a], top1[b]
    diff = pa - pb
    se = math.sqrt(max(pa * (1 - pa), 1e-12) / n + max(pb * (1 - pb), 1e-12) / n) if n else float("inf")
    holds = diff > 0 if rel == ">" else diff >= 0
    clear = abs(diff) > 2 * se
    out.update({"top1": [pa, pb], "difference": diff, "two_se": 2 * se,
                "verdict": ("holds" if holds else "reversed") + ("" if clear else " (within noise)")})
    return out


def spearman(pairs: list[tuple[float, float]]) -> Optional[float]:
    """Spearman's rank correlation of (x, y) pairs (average ranks for ties)."""
    if len(pairs) < 2:
        return None
    rx, ry = _ranks([p[0] for p in pairs]), _ranks([p[1] for p in pairs])
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx and vy else None


def kendall(pairs: list[tuple[float, float]]) -> Optional[float]:
    """Kendall's tau-a of (x, y) pairs."""
    n = len(pairs)
    if n < 2:
        return None
    s = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = pairs[i][0] - pairs[j][0], pairs[i][1] - pairs[j][1]
            s += int(dx * dy > 0) - int(dx * dy < 0)
    return s / (n * (n - 1) / 2)


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------


def _clean(obj):
    """JSON-safe: NaN and infinities become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: Path, report: dict) -> None:
    tmp = Path(path).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_clean(report), indent=1, default=str) + "\n")
    tmp.replace(path)


def _f(value, spec: str = ".1f", scale: float = 1.0, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value * scale:{spec}}{suffix}"


def render_markdown(report: dict) -> str:
    sec = report["sections"]
    m = report.get("machine") or {}
    gpu = m.get("gpu") or {}
    smi = m.get("nvidia_smi") or {}
    lines = [f"# jdct GPU run{' (dry run: CPU, tiny sizes)' if report.get('dry_run') else ''}", ""]
    lines += [f"- command: `{report.get('command')}` at commit `{(report.get('commit') or '?')[:10]}`"
              f"{' (uncommitted changes)' if report.get('dirty') else ''}, started {report.get('started_at')}, "
              f"{_f(report.get('elapsed_s'), '.0f')} s of a {_f(report.get('budget_s'), '.0f')} s budget",
              f"- device: {gpu.get('name') or 'CPU'}"
              + (f" (capability {gpu.get('capability')}, {_f(gpu.get('memory_bytes'), '.0f', 2 ** -30)} GiB, "
                 f"{gpu.get('multiprocessors')} SMs; driver {smi.get('driver_version')}, SM clock "
                 f"{smi.get('clocks.sm')} of {smi.get('clocks.max.sm')}, power limit {smi.get('power.limit')})"
                 if gpu else ""),
              f"- host: {m.get('cpu_count')} CPUs ({m.get('cpu_model')}), {_f(m.get('memory_bytes'), '.0f', 2 ** -30)} "
              f"GiB; Python {m.get('python')}, torch {m.get('torch')} (CUDA {m.get('torch_cuda')}, cuDNN "
              f"{m.get('cudnn')}, NCCL {m.get('nccl')}), libjpeg-turbo {m.get('libjpeg')}", ""]
    lines += ["| section | status | seconds | time box | note |", "|---|---|---:|---:|---|"]
    for name, s in sec.items():
        note = s.get("note") or s.get("error") or ""
        lines.append(f"| {name} | {s.get('status')} | {_f(s.get('seconds'), '.0f')} | {_f(s.get('box_s'), '.0f')} | "
                     f"{note[:200].replace('|', '/')} |")
    lines += ["", *_md_setup(sec.get("setup", {})), *_md_tests(sec.get("cuda_tests", {})),
              *_md_inference(sec.get("inference", {})), *_md_predict(sec.get("predict", {})),
              *_md_loader(sec.get("loader", {})), *_md_augment(sec.get("device_augment", {})),
              *_md_training(sec.get("training", {}))]
    if report.get("plot"):
        lines += ["", f"Figure: {report['plot']}"]
    return "\n".join(lines) + "\n"


def _md_setup(s: dict) -> list[str]:
    out = ["## Set-up", ""]
    carry = s.get("carry") or {}
    if carry:
        d = carry.get("data", {})
        out.append(f"Carried: {', '.join(carry.get('wheels', []))}; libjpeg-turbo {carry.get('libjpeg_turbo')}; "
                   f"{d.get('name')} ({d.get('files')}, {_f(d.get('bytes'), '.1f', 1e-6)} MB, {d.get('treatment')}).")
    for name, st in (s.get("steps") or {}).items():
        extra = ""
        if st.get("store"):
            splits = st["store"].get("splits") or {}
            extra = f"; store {_f(st['store'].get('bytes_on_disk'), '.1f', 1e-6)} MB, " + ", ".join(
                f"{name} {sp.get('views')} x {sp.get('num_samples')} samples" for name, sp in splits.items())
        out.append(f"- {name}: {'ok' if st.get('ok') else 'FAILED'} ({_f(st.get('seconds'), '.1f')} s){extra}"
                   + (f" via {st['route']}" if st.get("route") else "") + (f" - {st['note']}" if st.get("note") else ""))
    return out + [""]


def _md_tests(s: dict) -> list[str]:
    out = ["## 1. `pytest -m cuda`", ""]
    c = s.get("counts")
    if not c:
        return out + [f"No results ({s.get('status')}).", ""]
    out.append(f"{c['passed']} passed, {c['failed']} failed, {c['error']} errors, {c['skipped']} skipped.")
    bad = [t for t in s.get("tests", []) if t["outcome"] in ("failed", "error")]
    if bad:
        out += ["", "| test | outcome | message |", "|---|---|---|"]
        for t in bad:
            msg = (t.get("message") or "").strip().splitlines()
            out.append(f"| `{t['test']}` | {t['outcome']} | {(msg[0] if msg else '')[:300].replace('|', '/')} |")
    slow = sorted((t for t in s.get("tests", []) if t["outcome"] == "passed"), key=lambda t: -t["seconds"])[:5]
    if slow:
        out += ["", "Slowest passing: " + ", ".join(f"`{t['test'].split('::')[-1]}` {t['seconds']:.1f} s" for t in slow)]
    return out + [""]


def _md_inference(s: dict) -> list[str]:
    out = ["## 2. Inference speed (eval, bf16 autocast, channels_last)", ""]
    if not s.get("networks"):
        return out + [f"No results ({s.get('status')}).", ""]
    out.append(f"{s.get('device_name')}, batch {s.get('batch')}, {s.get('size')} px, {s.get('warmup')} warm-up + "
               f"{s.get('iters')} timed passes, median. Ratio = images/s / resnet50_rgb's in the same column; paper "
               "ratio = Table 1 FPS / 208 (batch 1024, one Pascal GPU).")
    out += ["", "| network | input | GMACs | img/s (inputs on GPU) | ratio | img/s (with H2D copy) | ratio | paper ratio |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in s["networks"]:
        if "error" in r:
            out.append(f"| {r['name']} | {r.get('input_kind') or '-'} | {_f(r.get('gmacs'), '.2f')} | "
                       f"error: {r['error'][:120]} | | | | {_f(r.get('paper_ratio'), '.2f')} |")
            continue
        out.append(f"| {r['name']} | {r['input_kind']} | {_f(r.get('gmacs'), '.2f')} | {_f(r['images_per_s'], '.0f')} | "
                   f"{_f(r.get('ratio'), '.2f')} | {_f(r['with_copy_images_per_s'], '.0f')} | "
                   f"{_f(r.get('with_copy_ratio'), '.2f')} | {_f(r.get('paper_ratio'), '.2f')} |")
    if s.get("copies"):
        out += ["", "Host-to-device copy of one batch from pinned memory: " + "; ".join(
            f"{c['what']} {_f(c['bytes'], '.1f', 1e-6)} MB in {_f(c['median_s'], '.2f', 1e3)} ms "
            f"({_f(c['gb_per_s'], '.1f')} GB/s)" for c in s["copies"])]
    out += ["", f"Spearman rank correlation with the paper's ratios: {_f(s.get('spearman_ratio_vs_paper'), '.2f')} "
                f"(inputs on the GPU), {_f(s.get('spearman_with_copy_ratio_vs_paper'), '.2f')} (with the copy). "
                f"resnet50_rgb measured first and last differs by {_f(s.get('reference_spread'), '.1f', 100, ' %')}."]
    return out + [""]


def _md_predict(s: dict) -> list[str]:
    rows = s.get("rows") or []
    if not rows:
        return []
    out = [f"## Predict: JPEG files to top-5 labels (batch {s.get('batch')})", "",
           "| network | reader threads | images/s | vs resnet50_rgb + Pillow | modes | batch-1 labels |",
           "|---|---:|---:|---:|---|---|"]
    for r in rows:
        modes = ", ".join(f"{k} {v}" for k, v in (r.get("modes") or {}).items())
        out.append(f"| {r['network']} | {r['threads']} | {_f(r.get('images_per_s'), '.1f')} | "
                   f"{_f(r.get('vs_resnet50_rgb_pillow'), '.2f', suffix='x')} | {modes} | "
                   f"{r.get('batch1_labels_identical')} |")
    return out + [""]


def _md_loader(s: dict) -> list[str]:
    out = ["## 3. Loader delivery (ready batches on the device)", ""]
    rows = s.get("rows") or []
    if not rows:
        return out + [f"No results ({s.get('status')}).", ""]
    out += ["| pipeline | threads | output | samples/s | samples/CPU-s | vs torchvision (same threads) |",
            "|---|---:|---|---:|---:|---:|"]
    names = {"dct": "DCTLoader", "torchvision": "torchvision ImageFolder + RandomResizedCrop (Pillow)",
             "nvjpeg": "torchvision.io.decode_jpeg on the GPU"}
    for r in rows:
        name = names.get(r.get("mode"), r.get("mode")) + (f" ({r['layout']} layout)" if r.get("layout") else "")
        if r.get("skipped") or r.get("error"):
            out.append(f"| {name} | {r.get('threads')} | | {'skipped: ' + r['skipped'] if r.get('skipped') else 'error: ' + r['error'][:150]} | | |")
            continue
        out.append(f"| {name} | {r.get('threads')} | {r.get('output')} | {_f(r.get('per_s'), '.0f')} | "
                   f"{_f(r.get('per_cpu_s'), '.0f')} | {_f(r.get('vs_torchvision'), '.2f', suffix='x')} |")
    return out + [""]


def _md_augment(s: dict) -> list[str]:
    out = ["## 4. Device augmentation (images layout: block rectangles -> re-encoded crops -> inputs)", ""]
    rows = s.get("rows") or []
    if not rows:
        return out + [f"No results ({s.get('status')}).", ""]
    out += ["| pipeline | device | batch | samples/s | vs CPU recipe (1 thread) |", "|---|---|---:|---:|---:|"]
    for r in rows:
        if r.get("error"):
            out.append(f"| {r.get('pipeline')} | | {r.get('batch')} | error: {r['error'][:150]} | |")
            continue
        name = "device math (benchmarks/device_augment.py)" if r.get("pipeline") == "device" else \
            "crops recipe on the CPU (decode + resize + forward DCT)"
        out.append(f"| {name} | {r.get('gpu') or r.get('device')} | {r.get('batch')} | {_f(r.get('per_s'), '.0f')} | "
                   f"{_f(r.get('ratio'), '.1f', suffix='x')} |")
    if s.get("target_per_s"):
        out += ["", f"Target {s['target_per_s']:,} samples/s: {'met' if s.get('meets_target') else 'NOT met'} "
                    f"(best {_f(s.get('best_per_s'), '.0f')})."]
    return out + [""]


def _md_training(s: dict) -> list[str]:
    out = ["## 5. Training comparison", ""]
    runs = s.get("runs") or []
    if not runs:
        return out + [f"No results ({s.get('status')}).", ""]
    out.append(f"{s.get('data')} ({s.get('train_images')} train / {s.get('val_images')} val images, {s.get('views')} "
               f"stored views), {s.get('size')} px, batch {s.get('batch_size')}, {s.get('epochs')} epoch(s) "
               f"({s.get('epochs_chosen_by')}), `jdct train` defaults otherwise (SGD 0.9, LR 0.1 x batch/256, "
               "x0.1 at 1/3, 2/3, 8/9), seed 0, bf16 + channels_last.")
    out += ["", "| network | layout | epochs | final val top-1 | best val top-1 | final top-5 | train img/s | "
                "speed ratio | wall s | status |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        out.append(f"| {r['arch']} | {r.get('layout')} | {r.get('epochs_done', 0)}/{r.get('epochs_planned', '-')} | "
                   f"{_f(r.get('final_val_top1'), '.2f', 100, '%')} | {_f(r.get('best_val_top1'), '.2f', 100, '%')} | "
                   f"{_f(r.get('final_val_top5'), '.2f', 100, '%')} | {_f(r.get('train_images_per_s'), '.0f')} | "
                   f"{_f(r.get('speed_ratio'), '.2f')} | {_f(r.get('wall_s'), '.0f')} | {r.get('status')} |")
    for key, title in (("issue_order", "The issue's ordering (RFA variants >= ResNet-50 >= UpSampling > DownSampling)"),
                       ("paper_order", "The paper's Table 1 order (by its top-1 error)")):
        rels = s.get(key) or []
        if rels:
            out += ["", f"{title}, difference vs 2 standard errors of {s.get('val_samples')} val images:"]
            for r in rels:
                if "top1" in r:
                    out.append(f"- {r['better']} {r['relation']} {r['worse']}: {r['verdict']} "
                               f"({100 * r['top1'][0]:.2f}% vs {100 * r['top1'][1]:.2f}%, difference "
                               f"{100 * r['difference']:+.2f} points, 2 SE {100 * r['two_se']:.2f})")
                else:
                    out.append(f"- {r['better']} {r['relation']} {r['worse']}: {r['verdict']}")
    if s.get("measured_order"):
        out += ["", "Measured order (final val top-1): " + " > ".join(s["measured_order"])
                + (f"; Kendall tau vs the paper's order {s['kendall_tau_vs_paper']:.2f}"
                   if s.get("kendall_tau_vs_paper") is not None else "")]
    return out + [""]


def summary_lines(report: dict) -> str:
    """A few lines for the end of the console output (the device tool returns the output's tail)."""
    out = ["", "== jdct GPU run summary =="]
    for name, s in report["sections"].items():
        out.append(f"{name:14s} {s.get('status', '?'):8s} {_f(s.get('seconds'), '.0f'):>5s} s  "
                   f"{(s.get('note') or s.get('error') or '')[:100]}")
    inf = report["sections"].get("inference", {})
    for r in inf.get("networks", [])[:30]:
        if "images_per_s" in r:
            out.append(f"  {r['name']:24s} {r['images_per_s']:9.0f} img/s  ratio {_f(r.get('ratio'), '.2f')}  "
                       f"with copy {_f(r.get('with_copy_ratio'), '.2f')}  paper {_f(r.get('paper_ratio'), '.2f')}")
    for r in report["sections"].get("predict", {}).get("rows", []):
        out.append(f"  predict {r['network']:22s} {_f(r.get('images_per_s'), '.0f'):>7s} img/s  "
                   f"x{_f(r.get('vs_resnet50_rgb_pillow'), '.2f')} of resnet50_rgb + Pillow")
    aug = report["sections"].get("device_augment", {})
    if aug.get("best_per_s") is not None:
        out.append(f"  device augmentation {aug['best_per_s']:9.0f} samples/s"
                   + (f" (target {aug['target_per_s']:,}: {'met' if aug.get('meets_target') else 'NOT met'})"
                      if aug.get("target_per_s") else ""))
    for r in report["sections"].get("training", {}).get("runs", []):
        out.append(f"  train {r['arch']:24s} top-1 {_f(r.get('final_val_top1'), '.2f', 100, '%')} "
                   f"{_f(r.get('train_images_per_s'), '.0f')} img/s  {r.get('status')}")
    return "\n".join(out)


def plot(report: dict, path: Path) -> str:
    """Three panels: inference ratios vs the paper's, val top-1 per epoch, loader samples/s by threads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sec = report["sections"]
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    nets = [r for r in sec.get("inference", {}).get("networks", []) if r.get("ratio") is not None]
    ax = axes[0]
    if nets:
        xs = range(len(nets))
        w = 0.28
        ax.bar([x - w for x in xs], [r["ratio"] for r in nets], w, label="measured, inputs on GPU")
        ax.bar(list(xs), [r.get("with_copy_ratio") or 0 for r in nets], w, label="measured, with H2D copy")
        ax.bar([x + w for x in xs], [r.get("paper_ratio") or 0 for r in nets], w, label="paper (Table 1)")
        ax.set_xticks(list(xs), [r["name"] for r in nets], rotation=75, fontsize=7)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.legend(fontsize=7)
    ax.set_title("inference speed / resnet50_rgb")
    ax = axes[1]
    for r in sec.get("training", {}).get("runs", []):
        hist = r.get("history") or []
        if hist:
            ax.plot([h["epoch"] for h in hist], [100 * h["val_top1"] for h in hist], marker="o", ms=3,
                    label=f"{r['arch']} ({r.get('layout')})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val top-1 %")
    ax.set_title("training comparison")
    if ax.lines:
        ax.legend(fontsize=7)
    ax = axes[2]
    rows = [r for r in sec.get("loader", {}).get("rows", []) if r.get("per_s")]
    for key in sorted({(r["mode"], r.get("output"), r.get("layout")) for r in rows}, key=str):
        pts = sorted((r["threads"], r["per_s"]) for r in rows if (r["mode"], r.get("output"), r.get("layout")) == key)
        mode, output, layout = key
        label = {"dct": f"DCTLoader {output}", "torchvision": "torchvision (Pillow)", "nvjpeg": "decode_jpeg on GPU"}
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                label=label.get(mode, mode) + (f" ({layout})" if layout else ""))
    ax.set_xlabel("CPU threads / workers")
    ax.set_ylabel("samples/s delivered")
    ax.set_title("loader delivery")
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path).name


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args(argv)
    report = json.loads(args.report.read_text())
    md = render_markdown(report)
    if args.md:
        args.md.write_text(md)
    else:
        print(md)
    if args.png:
        plot(report, args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
