#!/usr/bin/env python3
"""Python side of scripts/bench-window.sh (per-window latency vs MONAI UNETR, achieved FLOP/s).

Subcommands (each prints one JSON object on stdout):

  inputs DIR             the shared input: a seeded standard-normal 1x1x128^3 float32 tensor
                         (DIR/input-128.f32, raw little-endian) and its 2x2x2 block mean
                         (DIR/input-64.f32): the same 128 mm field at 2 mm, the `cpu` window.
  flops MODEL.onnx       analytic FLOPs of one batch-1 run of an ONNX graph: 2 x MACs of
                         MatMul, Gemm, Conv and ConvTranspose, shapes from onnx.shape_inference.
  matmul-graph OUT N     a graph with one fp32 MatMul [N,N] x [N,N] (input "a", B a constant),
                         for measuring the GEMM ceiling through the same ONNX Runtime.
  numpy-gemm N RUNS      numpy's fp32 matmul (its BLAS, threads from OPENBLAS_NUM_THREADS).
  torch DIR THREADS WARMUP RUNS CLASSES
                         MONAI UNETR on DIR/input-128.f32 and torch.mm GEMM, in PyTorch eager.
  report DIR ROUNDS      Markdown tables from the JSON files bench-window.sh wrote in DIR.

`inputs`, `flops`, `matmul-graph`, `numpy-gemm` and `report` run in the test venv (numpy, onnx);
`torch` runs in the benchmark venv (torch, monai; scripts/requirements-bench.txt).
"""

import json
import sys
import time

SIDE = 128
SEED = 20261128


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def summary(times):
    return {"median_s": median(times), "min_s": min(times), "max_s": max(times), "runs_s": times}


def cmd_inputs(out_dir):
    import numpy as np

    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((1, 1, SIDE, SIDE, SIDE), dtype=np.float32)
    h = SIDE // 2
    x64 = x.reshape(1, 1, h, 2, h, 2, h, 2).mean(axis=(3, 5, 7), dtype=np.float32)
    x.astype("<f4").tofile(f"{out_dir}/input-128.f32")
    np.ascontiguousarray(x64).astype("<f4").tofile(f"{out_dir}/input-64.f32")
    return {"seed": SEED, "shape_128": list(x.shape), "shape_64": list(x64.shape),
            "mean_128": float(x.mean()), "std_128": float(x.std())}


def _dims(value_info):
    t = value_info.type.tensor_type
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def _prod(xs):
    p = 1
    for v in xs:
        p *= v
    return p


def _inline_constant_ifs(model):
    """Replaces each `If` whose condition follows from initializers (the main graph's
    `Greater(Size(domain_mix), 0)` with the empty default mix) by the branch that runs, so that
    shape inference sees static shapes. Fails on an `If` it cannot decide."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    values = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        ins = [values.get(i) for i in n.input]
        if n.op_type == "Constant":
            values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        elif n.op_type == "Size" and ins[0] is not None:
            values[n.output[0]] = np.array(ins[0].size, dtype=np.int64)
        elif n.op_type == "Greater" and all(v is not None for v in ins):
            values[n.output[0]] = np.greater(ins[0], ins[1])
    nodes = []
    for n in g.node:
        if n.op_type != "If":
            nodes.append(n)
            continue
        cond = values.get(n.input[0])
        if cond is None:
            raise SystemExit(f"flops: cannot decide the If node {n.name!r} statically")
        branch = helper.get_attribute_value(
            next(a for a in n.attribute if a.name == ("then_branch" if bool(cond) else "else_branch")))
        rename = {o.name: want for o, want in zip(branch.output, n.output)}
        for b in branch.node:
            b2 = helper.make_node(b.op_type, list(b.input), [rename.get(o, o) for o in b.output],
                                  name=b.name)
            b2.attribute.extend(b.attribute)
            nodes.append(b2)
    del g.node[:]
    g.node.extend(nodes)


def cmd_flops(path):
    import onnx
    from onnx import shape_inference

    model = onnx.load(path)
    # Batch 1: make every symbolic input dimension 1, except on inputs that have a default
    # (an initializer of the same name, e.g. the empty optional domain mix the product leaves).
    defaults = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in defaults:
            continue
        for d in inp.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.dim_value = 1
    _inline_constant_ifs(model)
    inferred = shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    g = inferred.graph
    shapes = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        shapes[vi.name] = _dims(vi)
    for init in g.initializer:
        shapes[init.name] = list(init.dims)

    def shape(name):
        s = shapes.get(name)
        if s is None or any(v is None for v in s):
            raise SystemExit(f"flops: no static shape for tensor {name!r} in {path}")
        return s

    by_op = {}
    counted_nodes = 0
    other = {}
    for n in g.node:
        op = n.op_type
        macs = None
        if op == "MatMul":
            a, b = shape(n.input[0]), shape(n.input[1])
            out = shape(n.output[0])
            k = a[-1] if len(a) > 1 else a[0]
            if (b[-2] if len(b) > 1 else b[0]) != k:
                raise SystemExit(f"flops: MatMul {n.name}: inner dimensions {a} x {b} disagree")
            macs = _prod(out) * k
        elif op == "Gemm":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            a = shape(n.input[0])
            k = a[0] if attrs.get("transA", 0) else a[1]
            macs = _prod(shape(n.output[0])) * k
        elif op in ("Conv", "ConvTranspose"):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            group = attrs.get("group", 1)
            w = shape(n.input[1])
            kvol = _prod(w[2:])
            if op == "Conv":
                # W = [Cout, Cin/group, k...]: every output element sums Cin/group * kvol products.
                macs = _prod(shape(n.output[0])) * w[1] * kvol
            else:
                # W = [Cin, Cout/group, k...]: every input element scatters to Cout/group * kvol.
                macs = _prod(shape(n.input[0])) * w[1] * kvol
        if macs is None:
            other[op] = other.get(op, 0) + 1
            continue
        counted_nodes += 1
        by_op[op] = by_op.get(op, 0) + 2 * macs
    total = sum(by_op.values())
    return {"model": path, "flops": total, "gflops": total / 1e9,
            "by_op_gflops": {k: v / 1e9 for k, v in sorted(by_op.items())},
            "counted_nodes": counted_nodes, "uncounted_ops": other}


def cmd_matmul_graph(out, n):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(SEED + 1)
    b = numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), name="b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
        initializer=[b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # onnx 1.23 writes IR 14 by default, which ONNX Runtime 1.31 refuses (max 13).
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, out)
    return {"graph": out, "n": n, "flops": 2 * n ** 3}


def cmd_numpy_gemm(n, runs):
    import numpy as np

    rng = np.random.default_rng(SEED + 2)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    s = summary(times)
    s["gflops_per_s"] = 2 * n ** 3 / s["median_s"] / 1e9
    s["n"] = n
    s["numpy"] = np.__version__
    return s


def cmd_torch(in_dir, threads, warmup, runs, classes):
    import numpy as np
    import torch
    import monai
    from monai.networks.nets import UNETR

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(SEED)
    x = np.fromfile(f"{in_dir}/input-128.f32", dtype="<f4").reshape(1, 1, SIDE, SIDE, SIDE)
    x = torch.from_numpy(x.copy())
    # MONAI's defaults (ViT-B/16 layout at 128^3): the UNETR of the paper's Tables 7-8.
    cfg = dict(in_channels=1, out_channels=classes, img_size=(SIDE, SIDE, SIDE), feature_size=16,
               hidden_size=768, mlp_dim=3072, num_heads=12, proj_type="conv", norm_name="instance",
               res_block=True, dropout_rate=0.0)
    net = UNETR(**cfg).eval()
    params = sum(p.numel() for p in net.parameters())
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            t = time.perf_counter()
            y = net(x)
            dt = time.perf_counter() - t
            if i >= warmup:
                times.append(dt)
        out_shape = list(y.shape)
        # FLOPs of one forward as PyTorch counts them (2 x MACs of convolutions, transposed
        # convolutions and matrix products, attention included): one extra, untimed forward.
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            net(x)
        flops = counter.get_total_flops()
        n = 2048
        g = torch.Generator().manual_seed(SEED + 3)
        a = torch.randn(n, n, generator=g)
        b = torch.randn(n, n, generator=g)
        torch.mm(a, b)
        mm = []
        for _ in range(5):
            t = time.perf_counter()
            torch.mm(a, b)
            mm.append(time.perf_counter() - t)
    s = summary(times)
    mms = summary(mm)
    s["gflops"] = flops / 1e9
    s["gflops_per_s"] = flops / s["median_s"] / 1e9
    return {"unetr": s, "params": params, "config": cfg | {"img_size": [SIDE] * 3},
            "output_shape": out_shape, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "monai": monai.__version__,
            "gemm": mms | {"n": n, "gflops_per_s": 2 * n ** 3 / mms["median_s"] / 1e9}}


def _load(path):
    with open(path) as f:
        return json.load(f)


def cmd_report(work, rounds):
    """Markdown tables from the JSON files of bench-window.sh's rounds: per quantity the
    median of the round medians and their range (min-max), ratios taken within each round."""
    rs = range(1, rounds + 1)
    cpu = [_load(f"{work}/cpu-{r}.json") for r in rs]
    paper = [_load(f"{work}/paper-{r}.json") for r in rs]
    unetr = [_load(f"{work}/unetr-{r}.json") for r in rs]
    nump = [_load(f"{work}/numpy-{r}.json") for r in rs]
    load = [open(f"{work}/load-{r}.txt").read().split() for r in rs]
    fl = {k: _load(f"{work}/flops-{k}.json")["gflops"]
          for k in ("cpu-main", "cpu-id", "paper-main", "paper-id")}

    def agg(xs, fmt="{:.3f}"):
        m = median(xs)
        return (fmt.format(m) if len(xs) == 1
                else f"{fmt.format(m)} [{fmt.format(min(xs))}–{fmt.format(max(xs))}]")

    fwd = {"cpu": [c["forward"]["median_s"] for c in cpu],
           "paper": [p["forward"]["median_s"] for p in paper]}
    idf = {"cpu": [c["identify"]["median_s"] for c in cpu],
           "paper": [p["identify"]["median_s"] for p in paper]}
    head = {"cpu": [c["id_head_only"]["median_s"] for c in cpu],
            "paper": [p["id_head_only"]["median_s"] for p in paper]}
    un = [u["unetr"]["median_s"] for u in unetr]
    un_gf = unetr[0]["unetr"]["gflops"]
    ort_gemm = [c["ort_gemm"]["gflops_per_s"] for c in cpu]
    np_gemm = [n["gflops_per_s"] for n in nump]
    th_gemm = [u["gemm"]["gflops_per_s"] for u in unetr]
    u0 = unetr[0]
    lines = []
    say = lines.append
    say(f"Rounds: {rounds}; load average (1/5/15 min) at the start of each round: "
        + "; ".join("/".join(x) for x in load) + ".")
    say(f"Ours: ONNX Runtime ({cpu[0]['library'].rsplit('/', 1)[-1]}), provider "
        f"{cpu[0]['provider']}, {cpu[0]['intra_threads']} intra-op threads, "
        f"{cpu[0]['forward']['runs_s'].__len__()} (cpu) / {len(paper[0]['forward']['runs_s'])} "
        f"(paper) timed windows per round after 1 warm-up. "
        f"MONAI {u0['monai']} UNETR on torch {u0['torch']} eager, {u0['threads']} threads, "
        f"{u0['params'] / 1e6:.2f} M parameters, {len(u0['unetr']['runs_s'])} timed runs per round "
        f"after 1 warm-up; config {json.dumps(u0['config'])}.")
    say("")
    say("(a) Per window, batch 1, fp32; seconds are the median of the round medians "
        "[min–max of the round medians]; ratios are taken within each round.")
    say("")
    say("| model | window (field) | GFLOPs / window | latency per window (s) | volumes/s "
        "(128 mm cube) | UNETR same rounds (s) | UNETR / ours |")
    say("|---|---|---:|---:|---:|---:|---:|")
    for key, label in (("cpu", "`cpu` bundle (trained demo)"),
                       ("paper", "`paper` bundle (random init)")):
        b = cpu[0] if key == "cpu" else paper[0]
        w = b["window"]
        ratio = [u / o for u, o in zip(un, fwd[key])]
        say(f"| {label} | {w[0]}³ at {b['spacing_mm']:g} mm ({w[0] * b['spacing_mm']:g} mm) | "
            f"{fl[key + '-main']:.1f} | {agg(fwd[key])} | {agg([1 / t for t in fwd[key]], '{:.3g}')} | "
            f"{agg(un)} | **{agg(ratio, '{:.2f}')}×** |")
    say(f"| MONAI UNETR (PyTorch) | 128³ at 1 mm (128 mm) | {un_gf:.1f} | {agg(un)} | "
        f"{agg([1 / t for t in un], '{:.3g}')} | — | 1 |")
    say("")
    say("Identification (per vertebra instance, not per window):")
    say("")
    say("| bundle | `identify()` per instance (s) | of which RoIAlign + `id_head.onnx` (s) | "
        "id head GFLOPs |")
    say("|---|---:|---:|---:|")
    for key in ("cpu", "paper"):
        say(f"| {key} | {agg(idf[key])} | {agg(head[key], '{:.5f}')} | {fl[key + '-id']:.4f} |")
    say("")
    say("(d) Achieved FLOP/s (FLOPs counted from the graph / median latency) against the "
        "2048³ fp32 GEMM measured in the same round:")
    say("")
    say("| graph | GFLOPs | achieved GFLOP/s | GEMM GFLOP/s (same runtime, same round) | "
        "fraction of GEMM |")
    say("|---|---:|---:|---:|---:|")
    for key in ("cpu", "paper"):
        ach = [fl[key + "-main"] / t for t in fwd[key]]
        frac = [a / g for a, g in zip(ach, ort_gemm)]
        say(f"| ours `{key}` model.onnx (ONNX Runtime) | {fl[key + '-main']:.1f} | "
            f"{agg(ach, '{:.1f}')} | ORT {agg(ort_gemm, '{:.1f}')} | **{agg(frac, '{:.2f}')}** |")
    ach = [un_gf / t for t in un]
    say(f"| MONAI UNETR (PyTorch eager) | {un_gf:.1f} | {agg(ach, '{:.1f}')} | torch "
        f"{agg(th_gemm, '{:.1f}')} | {agg([a / g for a, g in zip(ach, th_gemm)], '{:.2f}')} |")
    say(f"| GEMM references | | | ORT {agg(ort_gemm, '{:.1f}')}; numpy {nump[0]['numpy']} "
        f"{agg(np_gemm, '{:.1f}')}; torch {agg(th_gemm, '{:.1f}')} | |")
    return "\n".join(lines)


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    cmd, args = argv[0], argv[1:]
    if cmd == "inputs" and len(args) == 1:
        r = cmd_inputs(args[0])
    elif cmd == "flops" and len(args) == 1:
        r = cmd_flops(args[0])
    elif cmd == "matmul-graph" and len(args) == 2:
        r = cmd_matmul_graph(args[0], int(args[1]))
    elif cmd == "numpy-gemm" and len(args) == 2:
        r = cmd_numpy_gemm(int(args[0]), int(args[1]))
    elif cmd == "torch" and len(args) == 5:
        r = cmd_torch(args[0], *map(int, args[1:]))
    elif cmd == "report" and len(args) == 2:
        print(cmd_report(args[0], int(args[1])))
        return
    else:
        raise SystemExit(f"bench_window.py: bad arguments {argv!r}\n{__doc__}")
    print(json.dumps(r))


if __name__ == "__main__":
    main(sys.argv[1:])
