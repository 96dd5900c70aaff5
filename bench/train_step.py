"""Benchmark: one training step (`Trainer.train_step`: G forward, D update, G update, EMA) on the CPU.

Times the real `colorizer.train.Trainer.train_step` on synthetic batches made directly as tensors (line
art, hints, mask, color of the right shapes and ranges), so the data pipeline is not measured (see
bench/data_pipeline.py for that). Each setting runs in a fresh subprocess of this script (`--one`), so
its peak resident memory (`ru_maxrss`) is its own: it includes torch itself and the models, and the
`RSS before` column (after building the Trainer, before the first step) shows how much of it that is.

Settings (torch.set_num_threads(2), train.device=cpu):

    pix2pix-128  G base 32, depth 7 (unet_128), max_width 256 (= pix2pix's ngf*8 cap); D 32/3; 128x128, batch 8
                 reference: pix2pix's own code, unet_128 ngf 32, basic D ndf 32, 5 input channels: ~500 ms/step
    pix2pix-256  G base 32, depth 8 (unet_256), max_width 256; D 32/3; 256x256, batch 4.  reference ~980 ms/step
    tiny         configs/cpu-tiny.yaml as is (32x48, batch 2)
    demo         configs/cpu-demo.yaml as is (128x128, batch 8)
    default      configs/default.yaml's architecture (G 64/7, D 64/3) at 256x256, batch 4 instead of 16
                 (a CPU step at 16 takes ~20 s); fewer steps: warmup 2, 5 timed

Architectures (`arch`): "ours" = the config's (instance norm, nearest resize + 3x3 conv, no dropout);
"pix2pix" = pix2pix's (batch norm in G and D, 4x4 transposed conv, dropout 0.5 in the 3 innermost
decoder levels); "transpose" and "batchnorm" change one of the two. Variants: fp32 (train.amp=off),
bf16 (train.amp=bf16 autocast), and either with train.channels_last=true ("+CL").

Each measurement: warmup 3 steps, then the median of 10 timed steps (to_device + train_step, as in
`Trainer.fit`); images/s = batch / median.

    .venv/bin/python bench/train_step.py                 # everything, ~12 min on 2 cores; the table goes
                                                         # to stdout and bench/results/train_step.txt
    .venv/bin/python bench/train_step.py --only pix2pix-128 pix2pix-256 --no-micro
    .venv/bin/python bench/train_step.py --micro-only    # optimizer / zero_grad / clip / EMA measurements
    .venv/bin/python bench/train_step.py --one pix2pix-128 --arch pix2pix --variant bf16   # one JSON line

The micro part (pix2pix-128, "ours", fp32 and bf16) times the pieces of a step on their own (Adam
foreach / for-loop / fused, clip_grad_norm_, EMA, zero_grad, to_device) and, interleaving step by step
so machine noise hits all alike, whole train_steps with one thing changed: fused Adam, the for-loop
Adam, zero_grad(set_to_none=False), no clip_grad_norm_, no EMA. It also splits a profiled step into
conv forward, conv backward, Adam and the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

THREADS = 2

P2P_G = ["model.G.base_width=32", "model.G.max_width=256", "model.D.base_width=32", "model.D.layers=3"]
SETTINGS: dict[str, dict] = {
    "pix2pix-128": {
        "config": "configs/cpu-demo.yaml",
        "overrides": [
            *P2P_G,
            "model.G.depth=7",
            "data.height_px=128",
            "data.width_px=128",
            "data.batch_size=8",
        ],
        "ref_ms": 500.0,
    },
    "pix2pix-256": {
        "config": "configs/cpu-demo.yaml",
        "overrides": [
            *P2P_G,
            "model.G.depth=8",
            "data.height_px=256",
            "data.width_px=256",
            "data.batch_size=4",
        ],
        "ref_ms": 980.0,
    },
    "tiny": {"config": "configs/cpu-tiny.yaml", "overrides": []},
    "demo": {"config": "configs/cpu-demo.yaml", "overrides": []},
    "default": {
        "config": "configs/default.yaml",
        "overrides": ["data.batch_size=2"],
        "warmup": 2,
        "steps": 4,
    },
}
ARCHS: dict[str, list[str]] = {
    "ours": [],
    "transpose": ["model.G.upsample=transpose"],
    "batchnorm": ["model.G.norm=batch", "model.D.norm=batch"],
    "pix2pix": [
        "model.G.upsample=transpose",
        "model.G.norm=batch",
        "model.D.norm=batch",
        "model.G.dropout=0.5",
    ],
}
# YAML reads a bare `off` as False: quote it.
VARIANTS: dict[str, list[str]] = {
    "fp32": ["train.amp='off'", "train.channels_last=false"],
    "bf16": ["train.amp=bf16", "train.channels_last=false"],
    "fp32+CL": ["train.amp='off'", "train.channels_last=true"],
    "bf16+CL": ["train.amp=bf16", "train.channels_last=true"],
}
ALL_VARIANTS = list(VARIANTS)
# (setting, arch, variants) in the order of the full run.
PLAN: list[tuple[str, str, list[str]]] = [
    ("pix2pix-128", "ours", ALL_VARIANTS),
    ("pix2pix-128", "pix2pix", ALL_VARIANTS),
    ("pix2pix-128", "transpose", ["fp32", "bf16"]),
    ("pix2pix-128", "batchnorm", ["fp32", "bf16"]),
    ("pix2pix-256", "ours", ALL_VARIANTS),
    ("pix2pix-256", "pix2pix", ALL_VARIANTS),
    ("tiny", "ours", ALL_VARIANTS),
    ("demo", "ours", ALL_VARIANTS),
    ("default", "ours", ALL_VARIANTS),
]


def machine_line() -> str:
    import torch

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = (
        ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags) or "?"
    )
    return (
        f"# {model}, {os.cpu_count()} cores ({isa}; AMX {'yes' if 'amx_bf16' in flags else 'no'}), "
        f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}, oneDNN "
        f"{'on' if torch.backends.mkldnn.is_available() else 'off'}), {THREADS} threads, Python {platform.python_version()}"
    )


# --------------------------------------------------------------------------------------------------
# In the subprocess


def make_trainer(setting: str, arch: str, variant: str, run_dir: str):
    import torch

    from colorizer.config import load_config
    from colorizer.train import Trainer

    torch.set_num_threads(THREADS)
    s = SETTINGS[setting]
    overrides = [
        *s["overrides"],
        *ARCHS[arch],
        *VARIANTS[variant],
        "train.device=cpu",
        "train.compile=false",
        f"run_dir={run_dir}",
        "name=bench",
        "tracking.wandb_mode=disabled",
    ]
    cfg = load_config(ROOT / s["config"], overrides)
    trainer = Trainer(cfg)
    trainer.G.train()
    trainer.D.train()
    return trainer


def synthetic_batch(cfg, seed: int = 0) -> dict:
    """A batch as the loader gives it: line/hints/color in [-1, 1], mask in [0, 1], float32, (B, C, H, W)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    b, h, w = cfg.data.batch_size, cfg.data.height_px, cfg.data.width_px
    mask = (torch.rand(b, 1, h, w, generator=g) < 0.05).float()
    return {
        "line": torch.rand(b, 1, h, w, generator=g) * 2 - 1,
        "hints": (torch.rand(b, 3, h, w, generator=g) * 2 - 1) * mask,
        "mask": mask,
        "color": torch.rand(b, 3, h, w, generator=g) * 2 - 1,
    }


def busy_cpu_s() -> float:
    """CPU seconds all processes (and the hypervisor, as steal) spent busy so far, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(setting: str, arch: str, variant: str, warmup: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(setting, arch, variant, tmp)
        cfg = trainer.cfg
        batch = synthetic_batch(cfg)
        rss_before = rss_mb()
        times = []
        for i in range(warmup + steps):
            if i == warmup:
                busy0, own0, wall0 = busy_cpu_s(), own_cpu_s(), time.perf_counter()
            t0 = time.perf_counter()
            trainer.train_step(trainer.to_device(batch))  # CPU: synchronous, no sync needed
            dt = time.perf_counter() - t0
            if i >= warmup:
                times.append(dt * 1000)
        wall = time.perf_counter() - wall0
        # CPU cores kept busy by everything else while the timed steps ran (other processes, steal).
        other_load = max(0.0, (busy_cpu_s() - busy0) - (own_cpu_s() - own0)) / wall
    med = statistics.median(times)
    return {
        "setting": setting,
        "arch": arch,
        "variant": variant,
        "batch": cfg.data.batch_size,
        "size": f"{cfg.data.height_px}x{cfg.data.width_px}",
        "G": f"{cfg.model.G.base_width}/{cfg.model.G.depth}/{cfg.model.G.max_width} {cfg.model.G.norm} {cfg.model.G.upsample}",
        "params_G_M": sum(p.numel() for p in trainer.G.parameters()) / 1e6,
        "params_D_M": sum(p.numel() for p in trainer.D.parameters()) / 1e6,
        "warmup": warmup,
        "steps": steps,
        "times_ms": times,
        "other_load": other_load,
        "median_ms": med,
        "min_ms": min(times),
        "max_ms": max(times),
        "images_per_s": cfg.data.batch_size / (med / 1000),
        "rss_before_mb": rss_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _best_ms(fn, repeats: int = 20, warmup: int = 3) -> float:
    """The fastest of `repeats` calls, in ms (as timeit: the least disturbed by other processes)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return min(times)


def micro(setting: str, arch: str, variant: str, rounds: int) -> dict:
    """Pieces of a step on their own, and whole steps with one thing changed (interleaved)."""
    import torch

    import colorizer.train as train_mod

    out: dict = {"setting": setting, "arch": arch, "variant": variant}
    with tempfile.TemporaryDirectory() as tmp:
        tr = make_trainer(setting, arch, variant, tmp)
        batch = synthetic_batch(tr.cfg)
        dev_batch = tr.to_device(batch)
        for _ in range(3):
            tr.train_step(dev_batch)  # grads and Adam state exist from here on
        o = tr.cfg.optim

        def adam(params, **kw):
            return torch.optim.Adam(params, lr=o.lr_G, betas=o.betas, weight_decay=o.weight_decay, **kw)

        g_params = [p for p in tr.G.parameters() if p.requires_grad]
        d_params = list(tr.D.parameters())
        flavours = {"foreach": {"foreach": True}, "for-loop": {"foreach": False}, "fused": {"fused": True}}
        optims = {}
        for name, kw in flavours.items():
            og, od = adam(g_params, **kw), adam(d_params, **kw)
            og.step()  # state allocated
            od.step()
            optims[name] = (og, od)
            out[f"adam_{name}_ms"] = _best_ms(lambda og=og, od=od: (og.step(), od.step()))
        out["clip_grad_norm_ms"] = _best_ms(
            lambda: (
                torch.nn.utils.clip_grad_norm_(g_params, 10.0),
                torch.nn.utils.clip_grad_norm_(d_params, 10.0),
            )
        )
        out["clip_grad_norm_foreach_ms"] = _best_ms(
            lambda: (
                torch.nn.utils.clip_grad_norm_(g_params, 10.0, foreach=True),
                torch.nn.utils.clip_grad_norm_(d_params, 10.0, foreach=True),
            )
        )
        out["ema_ms"] = _best_ms(lambda: train_mod.ema_update(tr.G_ema, tr.G, 0.999))
        out["sched_ms"] = _best_ms(lambda: (tr.sched_G.step(), tr.sched_D.step()))
        out["to_device_ms"] = _best_ms(lambda: tr.to_device(batch))
        out["to_channels_last_ms"] = _best_ms(
            lambda: {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
        )

        def zero_grad_fn(set_to_none):
            def fn():
                for p in g_params + d_params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                tr.opt_G.zero_grad(set_to_none=set_to_none)
                tr.opt_D.zero_grad(set_to_none=set_to_none)

            return fn

        out["zero_grad_none_ms"] = _best_ms(zero_grad_fn(True))  # includes re-making the grads
        out["zero_grad_zero_ms"] = _best_ms(zero_grad_fn(False))
        out["realloc_grads_ms"] = _best_ms(
            lambda: [setattr(p, "grad", torch.zeros_like(p)) for p in g_params + d_params]
        )

        # Whole steps, one change at a time, interleaved round by round.
        base_opt = (tr.opt_G, tr.opt_D)
        real_clip = torch.nn.utils.clip_grad_norm_
        real_ema = train_mod.ema_update
        zero = torch.zeros(())

        def set_opt(pair):
            tr.opt_G, tr.opt_D = pair

        def memset_zero_grad(opt):
            def zero_grad(set_to_none=True):
                torch.optim.Optimizer.zero_grad(opt, set_to_none=False)

            return zero_grad

        def set_to_none_false(on: bool):
            for opt in base_opt:
                if on:
                    opt.zero_grad = memset_zero_grad(opt)
                else:
                    opt.__dict__.pop("zero_grad", None)

        def no_clip(on: bool):
            torch.nn.utils.clip_grad_norm_ = (lambda params, max_norm, *a, **k: zero) if on else real_clip

        def no_ema(on: bool):
            train_mod.ema_update = (lambda *a, **k: None) if on else real_ema

        changes = {
            "as is (Trainer: Adam fused)": lambda on: None,
            "Adam foreach": lambda on: set_opt(optims["foreach"] if on else base_opt),
            "Adam for-loop": lambda on: set_opt(optims["for-loop"] if on else base_opt),
            "zero_grad(set_to_none=False)": set_to_none_false,
            "no clip_grad_norm_": no_clip,
            "no EMA update": no_ema,
        }
        times: dict[str, list[float]] = {k: [] for k in changes}
        busy0, own0, wall0 = busy_cpu_s(), own_cpu_s(), time.perf_counter()
        for _ in range(rounds):
            for name, change in changes.items():
                change(True)
                try:
                    t0 = time.perf_counter()
                    tr.train_step(tr.to_device(batch))
                    times[name].append((time.perf_counter() - t0) * 1000)
                finally:
                    change(False)
        wall = time.perf_counter() - wall0
        out["other_load"] = max(0.0, (busy_cpu_s() - busy0) - (own_cpu_s() - own0)) / wall
        out["step_ms"] = {k: statistics.median(v) for k, v in times.items()}
        base = times["as is (Trainer: Adam fused)"]
        # Paired: each round's step with the change minus the same round's unchanged step.
        out["step_diff_ms"] = {
            k: statistics.median(a - b for a, b in zip(v, base, strict=True)) for k, v in times.items()
        }

        # Where the time of a step goes (profiler; inclusive times of the top-level pieces).
        from torch.profiler import ProfilerActivity, profile

        n = 4
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(n):
                tr.train_step(dev_batch)
        total = {"conv forward": 0.0, "conv backward": 0.0, "Adam step": 0.0, "all ops": 0.0}
        for e in prof.key_averages():
            us = e.cpu_time_total
            if e.key == "aten::convolution":
                total["conv forward"] += us
            elif e.key.startswith(
                "autograd::engine::evaluate_function: ConvolutionBackward"
            ) or e.key.startswith("autograd::engine::evaluate_function: ConvolutionTransposeBackward"):
                total["conv backward"] += us
            elif e.key.startswith("Optimizer.step#"):
                total["Adam step"] += us
        total["all ops"] = sum(e.self_cpu_time_total for e in prof.key_averages())
        out["profile_ms"] = {k: v / 1000 / n for k, v in total.items()}
    return out


# --------------------------------------------------------------------------------------------------
# The driver


def spawn(args: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t0
    return out


def combine(all_runs: list[dict], quiet_load: float) -> dict:
    """One row from the runs of a setting: pooled median of the timed steps, best run's median.

    Only the quiet runs (other load <= quiet_load cores) count when there are any; `quiet` says so.
    """
    quiet = [run for run in all_runs if run["other_load"] <= quiet_load]
    runs = quiet or all_runs
    r = dict(runs[0])
    r["quiet"] = bool(quiet)
    r["dropped"] = len(all_runs) - len(runs)
    pooled = [t for run in runs for t in run["times_ms"]]
    r["median_ms"] = statistics.median(pooled)
    r["best_ms"] = min(run["median_ms"] for run in runs)
    r["run_medians_ms"] = [run["median_ms"] for run in runs]
    r["images_per_s"] = r["batch"] / (r["median_ms"] / 1000)
    r["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
    r["rss_before_mb"] = statistics.median(run["rss_before_mb"] for run in runs)
    r["other_load"] = [run["other_load"] for run in runs]
    del r["times_ms"]
    return r


def format_table(rows: list[dict]) -> str:
    lines = [
        "| setting | arch | variant | batch, HxW | G base/depth/max_width norm upsample | ms/step median "
        "| per-run medians | images/s | peak RSS MB | RSS before steps MB | other load (cores) "
        "| vs pix2pix ref: median (best run) |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ref = SETTINGS[r["setting"]].get("ref_ms")
        vs = f"{ref / r['median_ms']:.2f}x ({ref / r['best_ms']:.2f}x) of {ref:.0f} ms" if ref else ""
        steps = "" if r["steps"] >= 10 else f" ({r['warmup']}+{r['steps']} steps/run)"
        runs = ", ".join(f"{m:.0f}" for m in r["run_medians_ms"])
        if r["dropped"]:
            runs += f" ({r['dropped']} busier run(s) left out)"
        if not r["quiet"]:
            runs += " NOISY: no quiet run"
        load = ", ".join(f"{x:.1f}" for x in r["other_load"])
        lines.append(
            f"| {r['setting']} | {r['arch']} | {r['variant']} | {r['batch']}, {r['size']} | {r['G']} "
            f"| {r['median_ms']:.0f}{steps} | {runs} | {r['images_per_s']:.1f} "
            f"| {r['peak_rss_mb']:.0f} | {r['rss_before_mb']:.0f} | {load} | {vs} |"
        )
    return "\n".join(lines)


def format_micro(results: list[dict]) -> str:
    out = []
    for m in results:
        out.append(f"\nMicro-measurements: {m['setting']}, arch {m['arch']}, {m['variant']}\n")
        out.append("| piece, on its own (G + D) | best of 20, ms |\n|---|---:|")
        for key, label in [
            ("adam_foreach_ms", "Adam step, foreach=True (the Trainer's until fused won here)"),
            ("adam_for-loop_ms", "Adam step, foreach=False"),
            ("adam_fused_ms", "Adam step, fused=True"),
            ("clip_grad_norm_ms", "clip_grad_norm_ (default: per-tensor norms on CPU)"),
            ("clip_grad_norm_foreach_ms", "clip_grad_norm_(foreach=True)"),
            ("ema_ms", "EMA update (G_ema lerp)"),
            ("sched_ms", "2 LR scheduler steps"),
            ("to_device_ms", "to_device (contiguous, already on the CPU: no copy)"),
            ("to_channels_last_ms", "batch -> channels_last copy"),
            ("zero_grad_none_ms", "zero_grad(set_to_none=True) + re-allocating the grads"),
            ("zero_grad_zero_ms", "zero_grad(set_to_none=False) (memset)"),
        ]:
            out.append(f"| {label} | {m[key]:.2f} |")
        out.append(
            f"\n| whole train_step, {len(m['step_ms'])} kinds interleaved step by step "
            f"(other load {m['other_load']:.1f} cores) | median ms/step | median paired difference |"
            "\n|---|---:|---:|"
        )
        for k, v in m["step_ms"].items():
            out.append(f"| {k} | {v:.0f} | {m['step_diff_ms'][k]:+.0f} ms |")
        p = m["profile_ms"]
        out.append("\n| profiled step (4 steps, profiler overhead included) | ms/step |\n|---|---:|")
        rest = p["all ops"] - p["conv forward"] - p["conv backward"] - p["Adam step"]
        for k in ("conv forward", "conv backward", "Adam step"):
            out.append(f"| {k} | {p[k]:.0f} |")
        out.append(
            f"| everything else (norms, activations, upsample, cat, casts, losses, clip, EMA) | {rest:.0f} |"
        )
        out.append(f"| all ops | {p['all ops']:.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--one", choices=list(SETTINGS), help="measure one setting here and print one JSON line")
    p.add_argument("--arch", choices=list(ARCHS), default="ours")
    p.add_argument("--variant", choices=list(VARIANTS), default="fp32")
    p.add_argument("--warmup", type=int, default=None, help="warmup steps (default 3; default arch 2)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 10; default arch 4)")
    p.add_argument(
        "--repeats", type=int, default=2, help="fresh processes per row, in separate passes (default 2)"
    )
    p.add_argument(
        "--quiet-load", type=float, default=0.3,
        help="a run counts when everything else kept at most this many cores busy (default 0.3)",
    )  # fmt: skip
    p.add_argument(
        "--budget-s", type=float, default=840,
        help="rows without a quiet run are re-run while the whole run stays under this (default 840 s)",
    )  # fmt: skip
    p.add_argument("--only", nargs="+", choices=list(SETTINGS), help="full run restricted to these settings")
    p.add_argument("--no-micro", action="store_true", help="skip the micro-measurements")
    p.add_argument("--micro-only", action="store_true", help="only the micro-measurements")
    p.add_argument("--micro-one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=12, help="interleaved rounds in the micro part")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_step.txt")
    args = p.parse_args(argv)

    if args.one:
        s = SETTINGS[args.one]
        warmup = args.warmup if args.warmup is not None else s.get("warmup", 3)
        steps = args.steps if args.steps is not None else s.get("steps", 10)
        print(json.dumps(run_one(args.one, args.arch, args.variant, warmup, steps)))
        return 0
    if args.micro_one:
        import torch

        torch.set_num_threads(THREADS)
        print(json.dumps(micro("pix2pix-128", args.arch, args.variant, args.rounds)))
        return 0

    header = machine_line()
    print(header, flush=True)
    t_start = time.perf_counter()
    jobs = [
        (setting, arch, variant)
        for setting, arch, variants in PLAN
        if not args.only or setting in args.only
        for variant in variants
    ]
    runs: dict[tuple[str, str, str], list[dict]] = {job: [] for job in jobs}
    if not args.micro_only:
        extra = []
        if args.warmup is not None:
            extra += ["--warmup", str(args.warmup)]
        if args.steps is not None:
            extra += ["--steps", str(args.steps)]
        # Passes over all rows rather than repeats back to back: a burst of load elsewhere then spoils
        # one run of a row, not all of them.
        for rep in range(args.repeats):
            for setting, arch, variant in jobs:
                r = spawn(["--one", setting, "--arch", arch, "--variant", variant, *extra])
                runs[(setting, arch, variant)].append(r)
                print(
                    f"  pass {rep + 1}: {setting:12s} {arch:9s} {variant:8s} {r['median_ms']:7.0f} ms/step "
                    f"(min {r['min_ms']:.0f}, max {r['max_ms']:.0f})  {r['images_per_s']:6.1f} img/s  "
                    f"peak {r['peak_rss_mb']:.0f} MB  other load {r['other_load']:.1f}",
                    flush=True,
                )
        # Re-run rows with no quiet run yet, while the time budget lasts (the micro part needs ~90 s).
        reserve = 0 if args.no_micro else 90
        for _extra in range(3):
            for job in jobs:
                if any(run["other_load"] <= args.quiet_load for run in runs[job]):
                    continue
                cost = max(run["wall_s"] for run in runs[job])
                if time.perf_counter() - t_start + cost + reserve > args.budget_s:
                    continue
                setting, arch, variant = job
                r = spawn(["--one", setting, "--arch", arch, "--variant", variant, *extra])
                runs[job].append(r)
                print(
                    f"  re-run: {setting:12s} {arch:9s} {variant:8s} {r['median_ms']:7.0f} ms/step "
                    f"other load {r['other_load']:.1f}",
                    flush=True,
                )
    micro_results = []
    if not args.no_micro:
        for variant in ("fp32", "bf16"):
            micro_results.append(spawn(["--micro-one", "--variant", variant, "--rounds", str(args.rounds)]))
            print(f"  micro {variant} done", flush=True)

    text = header + "\n"
    if not args.micro_only:
        text += (
            f"# Trainer.train_step (+ to_device) on synthetic batches; {args.repeats} fresh process(es) per row "
            "in separate passes, each 3 warmup + 10 timed steps unless marked; 'ms/step median' pools the "
            "timed steps of all runs; peak RSS (ru_maxrss) is the largest over the runs and includes torch "
            "itself; 'other load' is the CPU cores everything else kept busy during each run\n"
        )
        text += f"# only runs during which other load stayed <= {args.quiet_load} cores count, where a row has any\n"
        text += "\n" + format_table([combine(runs[job], args.quiet_load) for job in jobs]) + "\n"
    if micro_results:
        text += format_micro(micro_results) + "\n"
    text += f"\n# whole run: {time.perf_counter() - t_start:.0f} s\n"
    print()
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
