"""`colorizer` command line: `colorizer <command> --help` for each command."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from colorizer.config import ConfigError, check_values, load_config

# Exit codes of `colorizer train` (and `sweep`, `torchrun`): 0 the run reached its end (train.steps, the time
# budget, or an early stop); 1 an error (the message says which); 2 a config error (nothing was written);
# 75 interrupted (SIGINT/SIGTERM) after its checkpoint was written: run the same command to resume (EX_TEMPFAIL
# of sysexits.h: a temporary failure, try again); 130 a second Ctrl-C aborted without a checkpoint of that step.
EXIT_INTERRUPTED = 75
EXIT_CODES_HELP = (
    "exit codes: 0 the run reached its end (train.steps, time budget or early stop); 1 error; 2 config error "
    f"(nothing written); {EXIT_INTERRUPTED} interrupted by Ctrl-C/SIGTERM after writing its checkpoint (run the "
    "same command to resume); 130 aborted by a second Ctrl-C"
)

CONFIG_HELP = "YAML file of overrides (configs/*.yaml); key=value pairs after it override again"


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="e.g. data.source=DIR data.height_px=128"
    )


def cmd_inspect(args: argparse.Namespace) -> int:
    from colorizer.inspect_data import format_report, inspect_data

    cfg = load_config(args.config, args.overrides)
    report = inspect_data(cfg, args.out, samples=args.samples, split=args.split)
    print(format_report(report))
    return 0


def _rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def cmd_train(args: argparse.Namespace) -> int:
    from colorizer.train import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg)
    if _rank() > 0:  # under torchrun rank 0 speaks for the run
        return EXIT_INTERRUPTED if result.interrupted else 0
    if result.interrupted:
        print(
            f"stopped at step {result.step}; checkpoint {result.last_checkpoint}. Run the same command to resume "
            f"(exit code {EXIT_INTERRUPTED}: interrupted)."
        )
        return EXIT_INTERRUPTED
    print(f"run {result.run_dir}: step {result.step} (ended by {result.ended_by}); last checkpoint "
          f"{result.last_checkpoint}")  # fmt: skip
    print(
        f"export it for the app: colorizer export {result.run_dir / 'checkpoints' / 'last.pt'} --out weights/"
    )
    return 0


def cmd_wandb_sync(args: argparse.Namespace) -> int:
    from colorizer.tracking import rebuild_wandb_run

    folder, steps, images = rebuild_wandb_run(args.run_dir, run_id=args.id)
    print(f"wrote a wandb run of {steps} logged steps and {images} sample images from {args.run_dir}/metrics.jsonl "
          f"to {folder}")  # fmt: skip
    print(f"upload it: wandb sync {folder}")
    return 0


def cmd_torchrun(argv: list[str]) -> int:
    """`colorizer torchrun [torchrun options] train ...`: torchrun, with one line instead of its traceback when
    stopped by a signal, and the workers' exit code (75 when every rank stopped after its checkpoint)."""
    import signal
    import time

    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from colorizer.checkpoint import latest_checkpoint

    if "train" not in argv:
        print("colorizer torchrun: give torchrun's options, then the command: colorizer torchrun "
              "--nproc_per_node=2 train --config configs/X.yaml [key=value ...]", file=sys.stderr)  # fmt: skip
        return 2
    cut = argv.index("train")
    options, train_args = argv[:cut], argv[cut + 1 :]
    args = parse_args([*options, "-m", "colorizer", "train", *train_args])
    nodes = str(args.nnodes)
    world = (
        int(args.nproc_per_node) * int(nodes)
        if str(args.nproc_per_node).isdigit() and nodes.isdigit()
        else None
    )
    train_parser = argparse.ArgumentParser(prog="colorizer torchrun ... train")
    _add_config_args(train_parser)
    parsed = train_parser.parse_args(train_args)
    cfg = check_values(load_config(parsed.config, parsed.overrides), world_size=world)
    ckpt_dir = f"{cfg.run_dir}/{cfg.name}/checkpoints"
    # torchrun turns SIGTERM/SIGINT into an exception after its workers stopped (--shutdown-timeout, 30 s by
    # default, then SIGKILL): handle those two here, with the time, to tell a clean stop from a killed one.
    args.signals_to_handle = ",".join(
        name for name in str(args.signals_to_handle).split(",") if name.strip() not in ("SIGTERM", "SIGINT")
    )
    received: list[tuple[str, float]] = []

    def stop(signum: int, _frame: object) -> None:
        sig = signal.Signals(signum)
        received.append((sig.name, time.time()))
        if len(received) == 1:  # later ones: the workers already have theirs (and the shutdown timeout)
            raise SignalException(f"colorizer torchrun got {sig.name}", sigval=sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    try:
        run(args)
        return 0
    except SignalException:
        name, at = received[0] if received else ("a signal", time.time())
        newest = latest_checkpoint(ckpt_dir)
        if newest is not None and newest.stat().st_mtime >= at:
            print(f"colorizer torchrun: stopped by {name}; checkpoint {newest} written. Run the same command to "
                  f"resume (exit code {EXIT_INTERRUPTED}: interrupted).", file=sys.stderr)  # fmt: skip
            return EXIT_INTERRUPTED
        print(f"colorizer torchrun: stopped by {name} before the processes wrote a checkpoint (torchrun "
              f"--shutdown-timeout={args.shutdown_timeout} s); the newest checkpoint is {newest}. Run the same "
              "command to resume from it.", file=sys.stderr)  # fmt: skip
        return 1
    except ChildFailedError as e:
        codes = {f.exitcode for f in e.failures.values()}
        if codes == {EXIT_INTERRUPTED}:
            return EXIT_INTERRUPTED  # rank 0 said where its checkpoint is
        rank, failure = min(e.failures.items())
        print(f"colorizer torchrun: rank {rank} exited with code {failure.exitcode} (its message is above)",
              file=sys.stderr)  # fmt: skip
        return failure.exitcode if failure.exitcode > 0 else 1


def cmd_export(args: argparse.Namespace) -> int:
    from colorizer.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out, use_ema=not args.raw, half=args.half)
    print(f"exported {args.checkpoint} -> {out / 'model.safetensors'} + {out / 'model.json'}")
    return 0


def cmd_colorize(args: argparse.Namespace) -> int:
    from colorizer.batch import colorize_paths

    return colorize_paths(
        args.inputs,
        model_dirs=args.model,
        out_dir=args.out,
        hints=args.hints,
        resolution=args.resolution,
        lineart=args.lineart,
        overwrite=args.overwrite,
        keep_lines=not args.no_line_overlay,
        mode=args.mode,
        layers=args.layers,
        background=args.background,
        tta=args.tta,
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from colorizer.evaluate import evaluate, format_report

    counts = tuple(int(c) for c in args.hints.split(",")) if args.hints else (0, 4, 16, 64)
    report = evaluate(
        args.model,
        data=args.data,
        split=args.split,
        lineart_dir=args.lineart,
        out_dir=args.out,
        size_px=args.size,
        hint_counts=counts,
        seed=args.seed,
        limit=args.limit,
        fid_weights=args.fid_weights,
        baseline=args.baseline,
        mean_from=args.mean_from,
        mode=args.mode,
        resolution=args.resolution,
        placement=args.hint_placement,
        tta=args.tta,
    )
    print(format_report(report))
    print(f"report: {args.out}/report.json, grid: {args.out}/grid.png")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from colorizer.lr_find import lr_find

    cfg = load_config(args.config, args.overrides)
    r = lr_find(cfg, min_lr=args.min_lr, max_lr=args.max_lr, steps=args.steps)
    print(
        f"swept {len(r.lrs)} steps from {r.lrs[0]:.1e} to {r.lrs[-1]:.1e}{' (stopped: loss diverged)' if r.diverged else ''}"
    )
    print(f"suggested learning rate: {r.suggestion:.2e}   (plot: {r.plot_path})")
    ratio = cfg.optim.lr_D / cfg.optim.lr_G if cfg.optim.lr_G > 0 else 1.0  # the sweep kept this ratio
    print(f"train with it: colorizer train --config {args.config or 'CONFIG'} optim.lr_G={r.suggestion:.1e} "
          f"optim.lr_D={r.suggestion * ratio:.1e}")  # fmt: skip
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from colorizer.sweep import SweepInterrupted, run_sweep

    cfg = load_config(args.config, args.overrides)
    try:
        best, score, path = run_sweep(cfg, trials=args.trials, storage=args.storage, study_name=args.study,
                                      sampler=args.sampler)  # fmt: skip
    except SweepInterrupted as e:
        print(f"{e} (exit code {EXIT_INTERRUPTED}: interrupted)")
        return EXIT_INTERRUPTED
    print(f"best val/{cfg.train.val_metric}: {score:.4f}; its config: {path}")
    print(f"train it fully: colorizer train --config {path} train.steps=...")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colorizer",
        description="Line-art colorization: look at the training data, train, export, colorize.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "inspect",
        help="save a grid of samples exactly as the model receives them, and their value histogram",
        description="Save a grid (target | line art | hint map | mask) of samples as the model receives them "
        "and a histogram of every input channel: the first thing to look at before training.",
    )
    _add_config_args(p)
    p.add_argument(
        "--out", default="inspect.png", help="grid PNG; the histogram goes beside it (<name>.hist.png)"
    )
    p.add_argument("--samples", type=int, default=8, help="rows in the grid (default 8)")
    p.add_argument("--split", default=None, help="manifest split to look at (default: data.split)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "train",
        help="train (or resume) a run: runs/<name>/ gets checkpoints, samples, metrics.jsonl and a wandb run",
        description="Train the U-Net/PatchGAN colorizer. Re-running the same command resumes from the newest "
        "readable checkpoint (train.resume=auto). Ctrl-C or SIGTERM writes a checkpoint and stops cleanly.",
        epilog=EXIT_CODES_HELP,
    )
    _add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "torchrun",
        help="train under torchrun (DDP), with one line instead of a traceback when stopped by a signal",
        description="colorizer torchrun [torchrun options] train [--config X] [key=value ...]: torchrun's "
        "options (--nproc_per_node, --nnodes, --rdzv_endpoint ...) then the train command. The config is "
        "checked before any process starts; SIGTERM/Ctrl-C stop every rank after its checkpoint.",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument("torchrun_args", nargs=argparse.REMAINDER, help="torchrun's options, then train ...")
    p.set_defaults(func=lambda a: cmd_torchrun(a.torchrun_args))

    p = sub.add_parser(
        "wandb-sync",
        help="rebuild a run's wandb history from its metrics.jsonl (after kill -9, a crash, a full disk)",
        description="Write a complete offline wandb run from RUN_DIR/metrics.jsonl and RUN_DIR/samples/ into "
        "RUN_DIR/wandb-sync/ (replacing an earlier rebuild), and print the `wandb sync` command that uploads it. "
        "wandb's own files of a killed run hold only what its service had flushed; metrics.jsonl is written "
        "at every log interval.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, e.g. runs/default")
    p.add_argument("--id", default=None, help="wandb run id to write (default: a new one)")
    p.set_defaults(func=cmd_wandb_sync)

    p = sub.add_parser(
        "export",
        help="turn a training checkpoint into model.safetensors + model.json for the app and colorize",
        description="Export the EMA generator of a checkpoint as model.safetensors (no pickle) + model.json.",
    )
    p.add_argument("checkpoint", help="a .pt file from runs/<name>/checkpoints/ (e.g. last.pt or best.pt)")
    p.add_argument("--out", required=True, help="folder to write model.safetensors and model.json into")
    p.add_argument("--raw", action="store_true", help="export the raw generator instead of its EMA")
    p.add_argument("--half", action="store_true",
                   help="store the weights as float16: half the file, outputs within a few 1/1000 of float32")  # fmt: skip
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "colorize",
        help="color sketch files and folders with an exported model",
        description="Color every image given (folders are searched recursively) and write PNGs of the same "
        "size to --out, mirroring the folders. Existing outputs are skipped unless --overwrite. A file that "
        "cannot be read is reported and the rest go on; the exit code is 1 if any failed.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("--model", required=True, action="append", metavar="DIR",
                   help="exported model folder; repeat for an ensemble (outputs averaged)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--hints", help="an RGBA PNG of color hints for every input, or a folder of hint PNGs "
                   "named like the inputs (transparent where there is no hint)")  # fmt: skip
    p.add_argument("--mode", choices=["flat", "soft"], default="flat",
                   help="flat (default): one color per closed region of the line art, your hints exactly, the "
                   "paper white; soft: the network's own colors, shaded and blended")  # fmt: skip
    p.add_argument("--layers", action="store_true",
                   help="also write X.flats.png (colors, no lines) and X.lines.png (lines on transparency)")  # fmt: skip
    p.add_argument("--background", default=None, metavar="COLOR|hints",
                   help="flat mode: paint the paper this color (#rrggbb), or 'hints' to let a hint on the paper "
                   "color it (default: the paper stays white)")  # fmt: skip
    p.add_argument("--resolution", type=int, default=None,
                   help="longer side the network works at, px (default: the scale the model was trained at)")  # fmt: skip
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                   help="average the network over the scales it was trained at and their mirror images (default; "
                   "--no-tta: one view, 3-6x faster in the network)")  # fmt: skip
    p.add_argument("--lineart", choices=["auto", "as-is", "extract"], default="auto",
                   help="turn color inputs into line art first: auto (detect), extract (always), as-is (never)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    p.add_argument(
        "--no-line-overlay", action="store_true", help="do not lay the original lines over the colors"
    )
    p.set_defaults(func=cmd_colorize)

    p = sub.add_parser(
        "evaluate",
        help="PSNR, SSIM, Delta E 2000 at hints, colorfulness (and FID) at 0/4/16/64 hints; report + grid",
        description="Score one model (or an ensemble: repeat --model) on held-out images with fixed, repeatable "
        "hints; or, with --lineart, color a folder of real line art into a grid (no targets, no scores).",
    )
    p.add_argument("--model", action="append", default=[], metavar="DIR", help="exported model (repeatable)")
    p.add_argument("--baseline", choices=["lineart", "mean-color"],
                   help="score a yardstick instead of a model: the line art itself, or the mean training color")  # fmt: skip
    p.add_argument("--mean-from", metavar="SOURCE",
                   help="manifest or folder whose train images give the mean color (default: --data's train split)")  # fmt: skip
    p.add_argument("--data", help="manifest.jsonl or folder of color images (the targets)")
    p.add_argument("--split", default="test", help="manifest split (default test)")
    p.add_argument("--lineart", help="folder of real line art: alone, a grid only; with --data, the line art of "
                   "each target (paired by file name) instead of XDoG")  # fmt: skip
    p.add_argument("--out", default="eval", help="folder for report.json and grid.png (default eval/)")
    p.add_argument("--size", type=int, default=256, help="longer side of the evaluated images (default 256)")
    p.add_argument("--hints", default=None, help="hint counts, comma-separated (default 0,4,16,64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the hint positions (default 0)")
    p.add_argument("--limit", type=int, default=None, help="at most this many images")
    p.add_argument("--fid-weights", default=None, help="torchvision Inception-v3 state dict (.pth) for FID")
    p.add_argument(
        "--mode", choices=["flat", "soft"], default="flat", help="color mode scored (default flat)"
    )
    p.add_argument("--resolution", type=int, default=None,
                   help="longer side the network works at (default: the model's own scale, as colorize)")  # fmt: skip
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                   help="average the network over the scales it was trained at and their mirror images (default; "
                   "--no-tta: one view, 3-6x faster in the network)")  # fmt: skip
    p.add_argument("--hint-placement", choices=["colored", "uniform"], default="colored",
                   help="colored (default): hint dots on colored pixels off the lines, as a person places them; "
                   "uniform: anywhere, paper included")  # fmt: skip
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "lr-find",
        help="learning-rate range test: loss against an exponentially growing lr, a plot and a suggestion",
        description="Sweep the learning rate exponentially over a few hundred real training steps of a fresh "
        "model; save runs/<name>-lr-find/lr_find.png and print a suggested learning rate.",
    )
    _add_config_args(p)
    p.add_argument("--min-lr", type=float, default=1e-7)
    p.add_argument("--max-lr", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=200)
    p.set_defaults(func=cmd_lr_find)

    p = sub.add_parser(
        "sweep",
        help="random hyperparameter search with Optuna: short trials scored on validation, best config out",
        description="Random search (Optuna, embedded SQLite by default) over learning rates, loss weights, "
        "loss kind, width and the no-hint share. Each trial is a short training run; the best trial's "
        "config is written to runs/<study>/best.yaml. Re-running continues the study.",
    )
    _add_config_args(p)
    p.add_argument("--trials", type=int, required=True, help="trials to run now")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite in runs/<study>/)")
    p.add_argument("--study", default=None, help="study name (default <name>-sweep)")
    p.add_argument("--sampler", choices=["random", "tpe"], default="random")
    p.set_defaults(func=cmd_sweep)
    return parser


class _LogFormat(logging.Formatter):
    """`05:31:12 message`, the level named only from WARNING up: the time on every line of an overnight log."""

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname} " if record.levelno >= logging.WARNING else ""
        text = f"{self.formatTime(record, '%H:%M:%S')} {level}{record.getMessage()}"
        return text + ("\n" + self.formatException(record.exc_info) if record.exc_info else "")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["torchrun"] and "train" in argv:  # torchrun's own options pass through untouched
        command, verbose = "torchrun", False
        run_command = lambda: cmd_torchrun(argv[1:])  # noqa: E731
    else:
        args = parser.parse_args(argv)
        command, verbose = args.command, args.verbose
        run_command = lambda: args.func(args)  # noqa: E731
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormat())
    # Under torchrun the other ranks say only what goes wrong: rank 0 speaks for the run.
    level = logging.DEBUG if verbose else logging.INFO if _rank() == 0 else logging.ERROR
    logging.basicConfig(level=level, handlers=[handler])
    try:
        return run_command()
    except ConfigError as e:
        for line in str(e).splitlines():
            print(f"colorizer {command}: config error: {line}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as e:
        if verbose:
            raise
        print(f"colorizer {command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"colorizer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
