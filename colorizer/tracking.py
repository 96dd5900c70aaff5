"""Experiment tracking: wandb (offline by default, never asks for a login) and `metrics.jsonl`.

Every scalar logged goes to both: wandb for the dashboards, `runs/<name>/metrics.jsonl` (one JSON
object a line, `{"step": ..., "time": ..., key: value, ...}`) for scripts, tests and people without
wandb. Images go to wandb and to `runs/<name>/samples/`.

Modes (`tracking.wandb_mode`):
- `offline` (default): wandb writes under `runs/<name>/wandb/`; `wandb sync runs/<name>/wandb/offline-run-*`
  uploads it later. No network, no login.
- `online`: needs `WANDB_API_KEY` (or `wandb login`); a missing key is a clear error at start, not a prompt.
- `disabled`: metrics.jsonl and sample PNGs only.

Resume: the wandb run id is stored in the checkpoint; a resumed run logs into the same run, and
metrics.jsonl drops the rows logged after the checkpoint it resumes from, so no step appears twice.

A run killed with `kill -9` keeps in wandb's files only what its service had flushed; metrics.jsonl is
appended at every log interval, and `colorizer wandb-sync RUN_DIR` (`rebuild_wandb_run`) turns it and the
sample PNGs into a complete offline wandb run.

`Console` is the operator's view on stderr: progress, ETA and end time, losses, validations.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)


class TrackingError(RuntimeError):
    """wandb could not start as configured; the message says what to change."""


class Tracker:
    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        mode: str = "offline",
        project: str = "lineart-colorizer",
        name: str = "run",
        config: dict | None = None,
        run_id: str | None = None,
        resume_step: int | None = None,
        enabled: bool = True,
    ):
        self.run_dir = Path(run_dir)
        self.enabled = enabled  # False on DDP ranks other than 0: nothing is written
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.samples_dir = self.run_dir / "samples"
        self.run = None
        self.run_id = run_id
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self._truncate_metrics(resume_step)
        if mode != "disabled":
            self.run = self._start_wandb(mode, project, name, config or {}, run_id)
            self.run_id = self.run.id

    def _start_wandb(self, mode: str, project: str, name: str, config: dict, run_id: str | None):
        if mode == "online" and not (os.environ.get("WANDB_API_KEY") or _netrc_has_wandb()):
            raise TrackingError(
                "tracking.wandb_mode=online needs a wandb API key: set WANDB_API_KEY or run `wandb login` "
                "first, or use tracking.wandb_mode=offline (the default) and `wandb sync` later"
            )
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        try:
            return wandb.init(
                project=project,
                name=name,
                dir=str(self.run_dir),
                mode=mode,
                id=run_id,
                resume="allow" if run_id else None,
                config=config,
                settings=wandb.Settings(console="off", x_disable_stats=True),
            )
        except Exception as e:  # noqa: BLE001 - wandb raises its own error types; all mean "could not start"
            raise TrackingError(
                f"wandb could not start in {mode} mode ({type(e).__name__}: {e}); "
                "use tracking.wandb_mode=offline or tracking.wandb_mode=disabled"
            ) from None

    def _truncate_metrics(self, step: int) -> None:
        if not self.metrics_path.is_file():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write
        tmp = self.metrics_path.with_name(self.metrics_path.name + ".tmp")
        tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        os.replace(tmp, self.metrics_path)

    def log(self, values: dict[str, Any], step: int) -> None:
        """Scalars (and lists/dicts of plain values) at `step`, to wandb and metrics.jsonl."""
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.time(), 3), **{k: _plain(v) for k, v in values.items()}}
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.run is not None:
            self.run.log(values, step=step)

    def log_histograms(self, hists: dict[str, Any], step: int) -> None:
        """`{name: Histogram}` (see colorizer.diagnostics) to wandb (as histograms) and metrics.jsonl (as
        `{"counts": [...], "low": x, "high": y}`)."""
        if not self.enabled or not hists:
            return
        row = {"step": step, "time": round(time.time(), 3), **{k: h.to_json() for k, h in hists.items()}}
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.run is not None:
            import numpy as np
            import wandb

            self.run.log(
                {
                    k: wandb.Histogram(np_histogram=(np.asarray(h.counts), np.asarray(h.edges())))
                    for k, h in hists.items()
                },
                step=step,
            )

    def log_image(self, key: str, image: Image.Image, step: int, caption: str = "") -> Path | None:
        """Save `samples/<key>_<step>.png` and log it to wandb."""
        if not self.enabled:
            return None
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        path = self.samples_dir / f"{key.replace('/', '_')}_{step:07d}.png"
        tmp = path.with_name(path.stem + ".tmp.png")
        try:
            image.save(tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # nothing half-written stays (a full disk, a kill mid-save)
            raise
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Image(image, caption=caption)}, step=step)
        return path

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = _plain(v)

    def finish(self, exit_code: int = 0) -> None:
        """Close the wandb run. Never raises: on a full disk or a dead wandb service, a failure here must not
        hide the error that ended the run (metrics.jsonl holds every value; `colorizer wandb-sync` rebuilds it)."""
        if self.run is not None:
            run, self.run = self.run, None
            try:
                import wandb

                run.finish(exit_code=exit_code)
                # Flush the service so the run file is complete when train() returns (a reader in the same
                # process could otherwise find the last records missing).
                wandb.teardown()
            except Exception as e:  # noqa: BLE001 - whatever wandb raises, the run's own outcome comes first
                log.warning(
                    "wandb could not close its run (%s: %s); metrics.jsonl holds every logged value: "
                    "`colorizer wandb-sync %s` rebuilds the wandb run from it",
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "", self.run_dir,
                )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# The console: what a person reads of a run that runs overnight


def _clock(seconds: float) -> str:
    """`H:MM:SS` (hours unbounded)."""
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _ends(now: float, left_s: float) -> str:
    """Wall-clock time `left_s` from `now`: `06:39`, with the weekday when it is not today."""
    end, today = time.localtime(now + left_s), time.localtime(now)
    same_day = (end.tm_year, end.tm_yday) == (today.tm_year, today.tm_yday)
    return time.strftime("%H:%M" if same_day else "%a %H:%M", end)


def _losses(values: dict[str, Any]) -> str:
    """`G 12.35  G_l1 0.1234 ... D 1.02 ...`: G's total then its terms, then D's."""
    names = sorted(
        (k.split("/", 1)[1] for k in values if k.startswith("loss/")), key=lambda n: (n[0] != "G", n)
    )
    return "  ".join(f"{n} {values['loss/' + n]:.4g}" for n in names)


class Console:
    """The operator's view of a training run, on the log (stderr).

    One line per log interval: the progress by steps or by time budget (whichever ends the run first), the
    training time so far, what is left and the wall-clock time it ends, the losses and img/s; one line per
    validation, saying whether it is the best so far. Where stderr is a terminal a tqdm bar below the lines
    moves every step; in a file (`nohup`, `tee`) only the lines. `enabled=False` (DDP ranks other than 0)
    prints nothing. Times come from the caller (`elapsed_s`: training seconds of the run, resumes included).
    """

    def __init__(self, *, steps: int, budget_s: float = 0.0, enabled: bool = True, bar: bool | None = None):
        self.steps, self.budget_s, self.enabled = steps, budget_s, enabled
        self.use_bar = enabled and (bar if bar is not None else _is_terminal(sys.stderr))
        self._bar: Any = None
        self._stack = contextlib.ExitStack()
        self._start: tuple[int, float] | None = None  # (step, elapsed_s) after the session's first step
        self._shown = 0.0

    # ---------------------------------------------------------------- progress

    def progress(self, step: int, elapsed_s: float) -> tuple[str, float, float | None]:
        """`(what ends the run, fraction done, seconds left or None)`: "steps" or "time"."""
        left_steps = None
        if self._start is not None and step > self._start[0] and elapsed_s > self._start[1]:
            rate = (step - self._start[0]) / (elapsed_s - self._start[1])
            left_steps = (self.steps - step) / rate
        if self.budget_s > 0:
            left_time = max(0.0, self.budget_s - elapsed_s)
            if left_steps is None or left_time < left_steps:
                return "time", min(1.0, elapsed_s / self.budget_s), left_time
        return "steps", min(1.0, step / max(1, self.steps)), left_steps

    def status(self, step: int, elapsed_s: float) -> str:
        """`step 1200/8000  15.0% of the steps  elapsed 0:12:03  left 1:08:10, ends 06:39`."""
        by, done, left = self.progress(step, elapsed_s)
        of = "of the steps" if by == "steps" else f"of the {self.budget_s / 60:g} min budget"
        when = f"left {_clock(left)}, ends {_ends(time.time(), left)}" if left is not None else "left ?"
        return f"step {step}/{self.steps}  {100 * done:.1f}% {of}  elapsed {_clock(elapsed_s)}  {when}"

    # ---------------------------------------------------------------- events

    def begin(self) -> None:
        """Start the bar (terminal only); log lines go above it until `close`."""
        if not self.use_bar or self._bar is not None:
            return
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._bar = self._stack.enter_context(
            tqdm(total=100.0, bar_format="{percentage:3.0f}%|{bar}| {desc}", file=sys.stderr,
                 dynamic_ncols=True, leave=False)
        )  # fmt: skip
        self._stack.enter_context(logging_redirect_tqdm())

    def step(self, step: int, elapsed_s: float, first: bool = False) -> None:
        """After every optimizer step (cheap): the session's rate starts after its first step (start-up and
        the first step's warm-up are not what the rest will cost); the bar moves at most twice a second."""
        if first or self._start is None:
            self._start = (step, elapsed_s)
        if self._bar is not None and (first or time.monotonic() - self._shown >= 0.5):
            self._shown = time.monotonic()
            self._bar.n = 100.0 * self.progress(step, elapsed_s)[1]
            self._bar.set_description_str(self.status(step, elapsed_s), refresh=False)
            self._bar.refresh()

    def interval(self, step: int, elapsed_s: float, values: dict[str, Any]) -> str:
        """The log interval's line: progress, losses (means over the interval), img/s."""
        line = f"{self.status(step, elapsed_s)}  {_losses(values)}  {values.get('throughput/images_per_s', 0):.1f} img/s"
        if self.enabled:
            log.info("%s", line)
        return line

    def validation(self, step: int, metrics: dict[str, float], metric: str, *, best: bool, best_value: float,
                   best_step: int) -> str:  # fmt: skip
        """`validation at step 2000: psnr 18.23 (best so far)  ssim 0.612 ...` (the selection metric first)."""
        key = f"val/{metric}"
        verdict = "best so far" if best else f"best {best_value:.4g} at step {best_step}"
        rest = "  ".join(f"{k.split('/', 1)[1]} {v:.4g}" for k, v in metrics.items() if k != key)
        line = f"validation at step {step}: {metric} {metrics[key]:.4g} ({verdict})  {rest}"
        if self.enabled:
            log.info("%s", line)
        return line

    def close(self) -> None:
        self._stack.close()
        self._bar = None


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _plain(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep them readable
    return v


def _netrc_has_wandb() -> bool:
    netrc = Path.home() / ".netrc"
    try:
        return "api.wandb.ai" in netrc.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of `run_dir/metrics.jsonl` (skipping a line cut short by a kill)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def read_wandb_records(path: str | os.PathLike) -> list[Any]:
    """Records of an offline wandb run file (`run-<id>.wandb`), as `wandb_internal_pb2.Record`s.

    The file is a LevelDB-style log: a 7-byte header (`:W&B`, magic, version), then 32 KiB blocks of
    chunks `<crc u32><length u16><type u8><data>` (types FULL=1, FIRST=2, MIDDLE=3, LAST=4). wandb
    ships no reader for it; this one lets a test or a person check what a run recorded, offline.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a wandb run file")
    block, header = 32768, 7
    pos, records, parts = header, [], []
    while pos + header <= len(data):
        left_in_block = block - pos % block
        if left_in_block < header:  # padding at the end of a block
            pos += left_in_block
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        if kind == 0 and length == 0:
            pos += left_in_block
            continue
        chunk = data[pos + header : pos + header + length]
        pos += header + length
        if kind in (1, 2):
            parts = [chunk]
        elif kind in (3, 4):
            parts.append(chunk)
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(b"".join(parts))
            records.append(rec)
            parts = []
    return records


def read_wandb_history(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The logged rows (`{"_step": ..., key: value}`) of an offline wandb run file."""
    rows = []
    for rec in read_wandb_records(path):
        if rec.WhichOneof("record_type") == "history":
            rows.append(
                {
                    (item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                    for item in rec.history.item
                }
            )
    return rows


# --------------------------------------------------------------------------------------------------
# metrics.jsonl -> a wandb run (what a killed run's wandb files may lack)

SAMPLE_FILE = re.compile(r"^(?P<key>.+)_(?P<step>\d{7})\.png$")


def rebuild_wandb_run(run_dir: str | os.PathLike, *, run_id: str | None = None) -> tuple[Path, int, int]:
    """Write a complete offline wandb run from `run_dir/metrics.jsonl` and `run_dir/samples/*.png`.

    wandb's own files of a run killed with `kill -9` hold what its service had flushed, which can be nothing;
    metrics.jsonl is appended at every log interval. The new run (a fresh id unless `run_id` is given, the run's
    name and config) goes to `run_dir/wandb-sync/wandb/offline-run-*`, replacing an earlier rebuild; upload it
    with `wandb sync`. Returns (that folder, rows logged, images logged).
    """
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    if not rows:
        raise ValueError(
            f"{run_dir}: no metrics.jsonl rows to sync; give the folder of a `colorizer train` run"
        )
    config: dict = {}
    if (run_dir / "config.yaml").is_file():
        import yaml

        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    by_step: dict[int, dict[str, Any]] = {}
    for row in rows:
        values = {k: v for k, v in row.items() if k not in ("step", "time")}
        if "time" in row:
            values.setdefault("_timestamp", row["time"])  # when it was logged, not when it is synced
        by_step.setdefault(int(row["step"]), {}).update(values)
    images = 0
    for png in sorted((run_dir / "samples").glob("*.png")) if (run_dir / "samples").is_dir() else []:
        if m := SAMPLE_FILE.match(png.name):
            by_step.setdefault(int(m.group("step")), {})[m.group("key")] = png
            images += 1

    os.environ.setdefault("WANDB_SILENT", "true")
    import numpy as np
    import wandb

    final, tmp = run_dir / "wandb-sync", run_dir / "wandb-sync.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    run = wandb.init(
        project=(config.get("tracking") or {}).get("project", "lineart-colorizer"),
        name=config.get("name", run_dir.name),
        dir=str(tmp),
        mode="offline",
        id=run_id,
        config=config,
        settings=wandb.Settings(console="off", x_disable_stats=True),
    )
    try:
        for step in sorted(by_step):
            logged: dict[str, Any] = {}
            for k, v in by_step[step].items():
                if isinstance(v, Path):
                    logged[k] = wandb.Image(str(v), caption="line | hints | output | target")
                elif isinstance(v, dict) and {"counts", "low", "high"} <= v.keys():
                    n = len(v["counts"])
                    edges = [v["low"] + (v["high"] - v["low"]) * i / n for i in range(n + 1)]
                    logged[k] = wandb.Histogram(np_histogram=(np.asarray(v["counts"]), np.asarray(edges)))
                elif isinstance(v, str) and v in ("nan", "inf", "-inf"):
                    logged[k] = float(v)
                else:
                    logged[k] = v
            run.log(logged, step=step)
        run.finish()
        wandb.teardown()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    folders = sorted((final / "wandb").glob("offline-run-*"))
    return folders[-1], len(by_step), images
