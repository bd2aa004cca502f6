#!/usr/bin/env python3
"""Python side of the GPU measurement kit (scripts/gpu/run.sh); see docs/gpu.md.

Subcommands (each writes one JSON object on stdout, except `report`):

  unetr DEVICE SIDE BATCHES RUNS TRAIN_BATCH TRAIN_STEPS
        MONAI UNETR (the paper's baseline, ViT-B layout, 26 classes) in PyTorch on DEVICE
        (cuda or cpu) at SIDE^3: forward latency under FP16 autocast (cuda) or FP32 (cpu) at
        each batch in BATCHES (comma-separated), peak device memory, and TRAIN_STEPS training
        steps at TRAIN_BATCH (AdamW, cross-entropy, autocast + GradScaler on cuda): step time,
        the loss of each step, peak memory. Times on cuda are CUDA-event timed after a
        synchronising warm-up.
  report DIR
        Markdown tables (stdout) from the JSON files run.sh wrote in DIR.
"""

import json
import os
import sys
import time

SEED = 20261128


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def cmd_unetr(device, side, batches, runs, train_batch, train_steps):
    import torch
    from monai.networks.nets import UNETR

    cuda = device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("gpu_bench.py unetr: CUDA requested but torch.cuda.is_available() is False")
    dev = torch.device(device)
    torch.manual_seed(SEED)
    cfg = dict(in_channels=1, out_channels=26, img_size=(side, side, side), feature_size=16,
               hidden_size=768, mlp_dim=3072, num_heads=12, proj_type="conv",
               norm_name="instance", res_block=True, dropout_rate=0.0)
    net = UNETR(**cfg).to(dev)
    params = sum(p.numel() for p in net.parameters())

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def timed(fn):
        if cuda:
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            return a.elapsed_time(b) / 1000.0
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    out = {"device": device, "side": side, "params": params, "torch": torch.__version__,
           "precision": "fp16 autocast" if cuda else "fp32", "inference": []}
    if cuda:
        out["gpu"] = torch.cuda.get_device_name(0)
    net.eval()
    for b in batches:
        x = torch.randn(b, 1, side, side, side, device=dev)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = []
        with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.float16,
                                                   enabled=cuda):
            net(x)
            sync()
            for _ in range(runs):
                times.append(timed(lambda: net(x)))
        m = median(times)
        row = {"batch": b, "median_s": m, "min_s": min(times), "per_volume_s": m / b,
               "volumes_per_s": b / m, "runs_s": times}
        if cuda:
            row["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
        out["inference"].append(row)

    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-5)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    x = torch.randn(train_batch, 1, side, side, side, device=dev)
    y = torch.randint(0, 26, (train_batch, side, side, side), device=dev)
    loss_fn = torch.nn.CrossEntropyLoss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    losses, times = [], []

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=cuda):
            loss = loss_fn(net(x), y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss.detach()))

    step()  # warm-up (cuDNN autotuning, allocator)
    sync()
    for _ in range(train_steps):
        times.append(timed(step))
    out["train"] = {"batch": train_batch, "steps": train_steps, "median_step_s": median(times),
                    "steps_s": times, "losses": losses[1:]}
    if cuda:
        out["train"]["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    return out


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _gib(b):
    return f"{b / 2**30:.2f} GiB" if b is not None else "—"


def cmd_report(d):
    """Markdown from the files run.sh wrote (bench-*.json, unetr.json, turnaround-*.json,
    train.json, tensorrt.txt, env.json, mem-*.txt)."""
    env = _load(os.path.join(d, "env.json")) or {}
    lines = [f"GPU measurement kit — {env.get('mode', '?')} run on: {env.get('gpu', '?')} "
             f"(driver {env.get('driver', '?')}); ONNX Runtime {env.get('ort', '?')}; "
             f"torch {env.get('torch', '?')}", ""]

    def mem(tag):
        try:
            with open(os.path.join(d, f"mem-{tag}.txt")) as f:
                vals = [int(v) for v in f.read().split() if v.strip().isdigit()]
            base = env.get("gpu_memory_used_mib_idle", 0)
            return f"{max(vals) - base} MiB" if vals else "—"
        except OSError:
            return "—"

    lines += ["| bundle | precision | provider | batch 1: per window | best batch | "
              "windows/s at best | peak GPU memory | max abs diff vs CPU (logits / prob) |",
              "|---|---|---|---:|---|---:|---:|---|"]
    unetr = _load(os.path.join(d, "unetr.json"))
    best_ours = {}
    for f in sorted(os.listdir(d)):
        if not (f.startswith("bench-") and f.endswith(".json")):
            continue
        r = _load(os.path.join(d, f))
        if not r:
            continue
        tag = f[len("bench-"):-len(".json")]
        bs = r.get("batches") or []
        b1 = next((b for b in bs if b["batch"] == 1), None)
        best = max(bs, key=lambda b: b["windows_per_s"]) if bs else None
        cmp = (r.get("compare_cpu") or {}).get("max_abs_diff") or {}
        logit = max((v for k, v in cmp.items() if k != "foreground_probability"), default=None)
        prob = cmp.get("foreground_probability")
        best_ours[tag] = best
        lines.append(
            f"| {r.get('bundle')} | {r.get('precision')} | {r.get('provider')} | "
            f"{b1['median_s'] * 1000:.1f} ms | {best['batch'] if best else '—'} | "
            f"{best['windows_per_s']:.2f} | {mem(tag)} | "
            f"{'—' if logit is None else f'{logit:.2e} / {prob:.2e}'} |"
            if b1 and best else f"| {tag} | — | — | — | — | — | — | — |")
    if unetr:
        inf = unetr.get("inference") or []
        b1 = next((b for b in inf if b["batch"] == 1), None)
        best = max(inf, key=lambda b: b["volumes_per_s"]) if inf else None
        if b1 and best:
            lines.append(
                f"| MONAI UNETR (PyTorch {unetr.get('torch')}) | {unetr.get('precision')} | "
                f"{unetr.get('device')} | {b1['median_s'] * 1000:.1f} ms | {best['batch']} | "
                f"{best['volumes_per_s']:.2f} | {_gib(best.get('peak_memory_bytes'))} | — |")
            for tag, ours in best_ours.items():
                if tag.startswith("paper") and ours and unetr.get("side") == 128:
                    lines.append(f"\n{tag}: {ours['windows_per_s'] / best['volumes_per_s']:.2f}× "
                                 f"UNETR's volumes/s at {unetr['side']}³ (best batch each)")
    lines.append("")
    for f in sorted(os.listdir(d)):
        if f.startswith("turnaround-") and f.endswith(".json"):
            r = _load(os.path.join(d, f)) or {}
            t = r.get("timings_s") or {}
            if t:
                stages = ", ".join(f"{k} {v:.2f} s" for k, v in t.items() if k != "total")
                lines.append(f"Turnaround ({f[11:-5]}, provider {r.get('execution_provider')}): "
                             f"total {t.get('total', 0):.2f} s ({stages}); "
                             f"{r.get('windows')} windows")
    trt = os.path.join(d, "tensorrt.txt")
    if os.path.exists(trt):
        with open(trt) as f:
            lines.append(f"\nTensorRT: {f.read().strip()}")
    train = _load(os.path.join(d, "train.json"))
    if train:
        lines.append(f"\nBurn training ({train.get('backend')}, recipe {train.get('recipe')}): "
                     f"{train.get('steps')} steps, median step {train.get('median_step_s', 0):.3f} s, "
                     f"loss {train.get('first_loss')} → {train.get('last_loss')}, "
                     f"peak GPU memory {mem('train')}")
    if unetr and unetr.get("train"):
        t = unetr["train"]
        lines.append(f"PyTorch UNETR training step at batch {t['batch']}: median "
                     f"{t['median_step_s']:.3f} s, loss {t['losses'][0]:.3f} → "
                     f"{t['losses'][-1]:.3f}, peak memory {_gib(t.get('peak_memory_bytes'))}")
    return "\n".join(lines)


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    cmd, args = argv[0], argv[1:]
    if cmd == "unetr" and len(args) == 6:
        r = cmd_unetr(args[0], int(args[1]), [int(b) for b in args[2].split(",")],
                      int(args[3]), int(args[4]), int(args[5]))
        print(json.dumps(r))
    elif cmd == "report" and len(args) == 1:
        print(cmd_report(args[0]))
    else:
        raise SystemExit(f"gpu_bench.py: bad arguments {argv!r}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv[1:])
