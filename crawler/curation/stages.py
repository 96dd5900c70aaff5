"""The curation run as named stages, in order (`STAGES`); `curate` runs them.

measure (each distinct file once, cached) -> exact_duplicates (same md5: one record that remembers
every folder) -> rules (size, aspect, tags, colour, photo) -> tagging (Illustration2Vec, optional) ->
near_duplicates (pHash copies out, look-alikes share a split) -> caps (per folder) -> split (by a
hash of the md5: adding images never reshuffles) -> write (images hard-linked into DEST/images,
manifest.jsonl, rejected.jsonl with a reason per file, summary.md).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import typing
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import CurateConfig
from .measure import IMAGE_EXTENSIONS, AnalysisParams, ImageStats, MeasureCache, color_distance, measure_files
from .phash import group_labels, near_duplicate_pairs
from .rules import REASONS, Rejection, check_pixels, check_tags, normalize_tags

STAGES = ("measure", "exact_duplicates", "rules", "tagging", "near_duplicates", "caps", "split", "write")

LINK_MODES = ("hardlink", "copy", "symlink", "none")
MANIFEST_NAME = "manifest.jsonl"
REJECTED_NAME = "rejected.jsonl"
SUMMARY_NAME = "summary.md"
CACHE_NAME = "cache.sqlite"
IMAGES_DIR = "images"
ROOT_FOLDER = "."


# --------------------------------------------------------------------------------------------------
# Finding files


@dataclass
class Found:
    """One entry of the crawl: an image file, or a sidecar whose image is not beside it."""

    rel: str  # relative to SRC, '/'-separated
    path: Path  # absolute (links not resolved)
    folder: str  # parent folder relative to SRC ("." for SRC itself)
    sidecar: dict | None = None
    sidecar_problem: str | None = None
    is_image: bool = True

    @property
    def tags(self) -> list[str]:
        return normalize_tags((self.sidecar or {}).get("tags"))

    @property
    def post_id(self) -> Any:
        if self.sidecar and isinstance(self.sidecar.get("id"), int | str):
            return self.sidecar["id"]
        return self.rel  # a plain image: its path (unique, unlike the name without its extension)


def _read_sidecar(path: Path) -> tuple[dict | None, str | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"unreadable sidecar {path.name} ({e})"
    if not isinstance(data, dict):
        return None, f"sidecar {path.name} is not a JSON object"
    return data, None


def scan_source(src: Path, *, skip: Path | None = None) -> tuple[list[Found], dict[str, str]]:
    """Image files and sidecars under `src`, in sorted order, and each folder's `.query` text."""
    src = src.resolve()
    found: list[Found] = []
    queries: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (skip is None or (here / d).resolve() != skip)
        )
        folder = here.relative_to(src).as_posix() if here != src else ROOT_FOLDER
        names = sorted(filenames)
        images = [n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS and not n.startswith(".")]
        stems = {Path(n).stem for n in images}
        if ".query" in names:
            try:
                queries[folder] = (here / ".query").read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                pass
        sidecars: dict[str, tuple[dict | None, str | None]] = {}
        for n in names:
            if n.endswith(".json") and not n.startswith("."):
                sidecars[n[: -len(".json")]] = _read_sidecar(here / n)
        for n in images:
            rel = (here / n).relative_to(src).as_posix()
            sidecar, problem = sidecars.get(Path(n).stem, (None, None))
            found.append(Found(rel, here / n, folder, sidecar, problem))
        for stem, (sidecar, problem) in sidecars.items():
            if stem not in stems:
                rel = (here / f"{stem}.json").relative_to(src).as_posix()
                found.append(Found(rel, here / f"{stem}.json", folder, sidecar, problem, is_image=False))
    found.sort(key=lambda f: f.rel)
    return found, queries


# --------------------------------------------------------------------------------------------------
# Tag estimation hook (crawler.curation.tagger.Illustration2Vec fits it)


class Tagger(typing.Protocol):
    tags: list[str]
    fingerprint: str

    def predict_files(self, paths: Sequence[str], *, batch_size: int = 16) -> Any: ...


I2V_CACHE_FLOOR = 0.01  # scores below this are not cached (and count as 0)


# --------------------------------------------------------------------------------------------------
# Splits and caps


def unit_hash(*parts: str) -> float:
    """A stable number in [0, 1) from strings (SHA-1): the same input draws the same value everywhere."""
    digest = hashlib.sha1("\x1f".join(parts).encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(md5: str, shares: dict[str, float], salt: str = "") -> str:
    """The split of an image (by its md5): shares are normalized; the order of `shares` is the order
    of the intervals, so the same md5 always lands in the same split for the same shares."""
    u = unit_hash("split", salt, md5)
    total = sum(shares.values())
    acc = 0.0
    names = list(shares)
    for name in names:
        acc += shares[name] / total
        if u < acc:
            return name
    return names[-1]


# --------------------------------------------------------------------------------------------------
# The run


@dataclass
class Candidate:
    """An image still in the running, with everything decided about it so far."""

    entry: Found
    stats: ImageStats
    tags: list[str]
    tag_source: str  # "sidecar", "i2v" or "none"
    folders: set[str]
    rating: str | None = None
    i2v: dict[str, float] | None = None
    near_duplicates: int = 0  # copies of this image left out
    similar: int = 0  # other kept images pHash-near to this one (colours differ)
    split_key: str = ""  # what the split is drawn from: its md5, or its similarity group's smallest md5


@dataclass
class CurateResult:
    kept: list[dict]
    rejected: list[dict]
    queries: dict[str, str]
    split_names: list[str]
    measured: int  # files read and measured in this run
    from_cache: int  # files whose measurements came from the cache
    dest: Path
    notes: list[str] = field(default_factory=list)

    @property
    def manifest_path(self) -> Path:
        return self.dest / MANIFEST_NAME

    @property
    def rejected_path(self) -> Path:
        return self.dest / REJECTED_NAME

    def folder_table(self) -> list[dict]:
        """Per folder: files, kept, kept per split, rejected (so imbalance is visible)."""
        rows: dict[str, dict] = defaultdict(
            lambda: {"files": 0, "kept": 0, "rejected": 0, **{s: 0 for s in self.split_names}}
        )
        for r in self.kept:
            row = rows[r["folder"]]
            row["files"] += 1
            row["kept"] += 1
            row[r["split"]] += 1
        for r in self.rejected:
            row = rows[r["folder"]]
            row["files"] += 1
            row["rejected"] += 1
        return [{"folder": f, "query": self.queries.get(f, ""), **rows[f]} for f in sorted(rows)]

    def reason_counts(self) -> Counter:
        return Counter(r["reason"] for r in self.rejected)


@dataclass
class Run:
    """What every stage reads (the settings, DEST) and adds to (rejections, notes)."""

    dest: Path
    cfg: CurateConfig
    say: Callable[[str], None]
    rejected: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    measured: int = 0
    from_cache: int = 0

    def reject(self, entry: Found, rejection: Rejection, **extra: Any) -> None:
        rec = {
            "path": Path(os.path.relpath(entry.path, self.dest)).as_posix(),
            "src_path": entry.rel,
            "folder": entry.folder,
            "reason": rejection.reason,
            "detail": rejection.detail,
        }
        rec.update(rejection.extra)
        rec.update({k: v for k, v in extra.items() if v is not None})
        self.rejected.append(rec)


def curate(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    cfg: CurateConfig | None = None,
    *,
    tagger: Tagger | None = None,
    quiet: bool = True,
    log: Callable[[str], None] | None = None,
) -> CurateResult:
    """Filter the crawl at `src` into `dest` (manifest.jsonl, rejected.jsonl, images/, cache.sqlite)."""
    src, dest = Path(src).resolve(), Path(dest).resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: not a folder (expected the output of `crawler crawl`)")
    if dest == src or src.is_relative_to(dest):
        raise ValueError(f"--out {dest} must not be SRC or contain it; pick a new folder, e.g. data/curated")
    dest.mkdir(parents=True, exist_ok=True)
    cfg = cfg or CurateConfig()
    run = Run(dest, cfg, log or (lambda msg: None))
    entries, queries = scan_source(src, skip=dest)
    cache = MeasureCache(dest / CACHE_NAME)
    try:
        stats = measure(run, entries, cache, quiet)
        candidates = exact_duplicates(run, entries, stats)
        alive, to_tag = rules(run, candidates, tagging_all=tagger is not None)
        if to_tag:
            assert tagger is not None
            alive = tagging(run, alive, to_tag, tagger, cache)
    finally:
        cache.close()
    if cfg.dedup.near and len(alive) > 1:
        alive = near_duplicates(run, alive)
    alive = caps(run, alive)
    kept = split(run, alive)
    return write(run, alive, kept, queries)


def measure(run: Run, entries: list[Found], cache: MeasureCache, quiet: bool) -> dict[str, ImageStats]:
    """Each distinct file once (hard links and symlinks to one file share an inode), from the cache
    when its path, size and mtime are unchanged; -> stats by entry path."""
    cfg = run.cfg
    params = AnalysisParams(
        color_chroma_min=cfg.pixels.color_chroma_min,
        content_delta=cfg.pixels.content_delta,
        crop_fractions=cfg.dedup.crop_fractions if cfg.dedup.near else (),
    )
    params_key = params.key()
    file_of: dict[str, tuple[int, int]] = {}
    real_of: dict[tuple[int, int], tuple[str, int, int]] = {}
    for e in entries:
        if not e.is_image:
            continue
        try:
            st = e.path.stat()
        except OSError as err:
            run.reject(e, Rejection("unreadable", f"cannot open ({err.strerror or err}); a broken link?"))
            continue
        key = (st.st_dev, st.st_ino)
        file_of[e.rel] = key
        real_of.setdefault(key, (os.path.realpath(e.path), st.st_size, st.st_mtime_ns))
    stats_of: dict[tuple[int, int], ImageStats] = {}
    todo: list[tuple[int, int]] = []
    for key, (real, size, mtime) in real_of.items():
        hit = cache.get(real, size, mtime, params_key)
        if hit is not None:
            stats_of[key] = hit
        else:
            todo.append(key)
    workers = cfg.workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    run.say(f"{len(entries)} entries, {len(real_of)} distinct files, {len(todo)} to measure")
    pending: list[tuple[str, int, int, str, ImageStats]] = []
    try:
        for i, stats in measure_files([real_of[k][0] for k in todo], params, workers=workers, quiet=quiet):
            stats_of[todo[i]] = stats
            pending.append((*real_of[todo[i]], params_key, stats))
            if len(pending) >= 500:
                cache.put_many(pending)
                pending.clear()
    finally:  # interrupted too: what was measured is kept for the next run
        cache.put_many(pending)
    run.measured, run.from_cache = len(todo), len(real_of) - len(todo)
    return {rel: stats_of[key] for rel, key in file_of.items()}


def exact_duplicates(run: Run, entries: list[Found], stats: dict[str, ImageStats]) -> list[Candidate]:
    """Unreadable files out; entries with the same md5 (links, copies, sidecar-only entries) folded into
    the first one, which remembers every folder."""
    by_md5: dict[str, Candidate] = {}
    for e in entries:
        if not e.is_image or e.rel not in stats:
            continue
        s = stats[e.rel]
        if s.error:
            run.reject(e, Rejection(s.error_reason or "unreadable", s.error))
            continue
        if e.sidecar_problem:
            run.notes.append(f"{e.rel}: {e.sidecar_problem}; treated as untagged")
        keeper = by_md5.get(s.md5)
        if keeper is None:
            by_md5[s.md5] = Candidate(
                entry=e,
                stats=s,
                tags=e.tags,
                tag_source="sidecar" if e.tags else "none",
                folders={e.folder},
                rating=(e.sidecar or {}).get("rating"),
            )
            continue
        _fold_into(keeper, e)
        same = Rejection("duplicate_md5", f"same bytes as {keeper.entry.rel}")
        run.reject(e, same, md5=s.md5, duplicate_of=keeper.entry.rel)
    for e in entries:
        if e.is_image:
            continue
        md5 = str((e.sidecar or {}).get("md5") or "").lower()
        keeper = by_md5.get(md5)
        if keeper is not None:
            _fold_into(keeper, e)
            same = Rejection("duplicate_md5", f"sidecar of a post stored as {keeper.entry.rel}")
            run.reject(e, same, md5=md5, duplicate_of=keeper.entry.rel)
        else:
            why = e.sidecar_problem or "no image beside this sidecar and none with its md5 in the crawl"
            run.reject(e, Rejection("missing_image", why), md5=md5 or None)
    return list(by_md5.values())


def rules(
    run: Run, candidates: list[Candidate], *, tagging_all: bool
) -> tuple[list[Candidate], list[Candidate]]:
    """Size and aspect, sidecar tags, then colour and photo (crawler.curation.rules); -> (kept, those
    the tagger should see: the untagged, or all with tagger.recheck_tagged)."""
    cfg = run.cfg
    alive: list[Candidate] = []
    to_tag: list[Candidate] = []
    for c in candidates:
        verdict = check_pixels(c.stats, cfg.pixels, which="geometry")
        if verdict is None and c.tags:
            verdict = check_tags(c.tags, cfg.tags)
        if verdict is None:
            verdict = check_pixels(c.stats, cfg.pixels, which="content")
        if verdict is None and not c.tags and not tagging_all and cfg.tags.when_missing == "reject":
            verdict = Rejection("untagged", "no tags in a sidecar and no tagger (--tagger i2v)")
        if verdict is not None:
            run.reject(c.entry, verdict, md5=c.stats.md5)
            continue
        alive.append(c)
        if tagging_all and (not c.tags or cfg.tagger.recheck_tagged):
            to_tag.append(c)
    return alive, to_tag


def tagging(
    run: Run, alive: list[Candidate], to_tag: list[Candidate], tagger: Tagger, cache: MeasureCache
) -> list[Candidate]:
    """Illustration2Vec: tags for the untagged, a veto (tagger.reject_above) on everything it saw."""
    cfg = run.cfg
    _run_tagger(tagger, to_tag, cache, cfg, run.say)
    vetoed = set()
    known = set(tagger.tags)
    rating = set(getattr(tagger, "rating_tags", ()))  # safe / questionable / explicit: never drawn tags
    for tag in sorted(set(cfg.tagger.reject_above) - known):
        run.notes.append(f"tagger.reject_above: {tag!r} is not one of the tagger's tags; ignored")
    for c in to_tag:
        probs = c.i2v or {}
        verdict = None
        if not c.tags:
            c.tags = sorted(
                t for t, p in probs.items() if p >= cfg.tagger.threshold and t in known and t not in rating
            )
            c.tag_source = "i2v"
            verdict = check_tags(c.tags, cfg.tags, source="i2v")
        if verdict is None:
            for tag, limit in sorted(cfg.tagger.reject_above.items()):
                p = probs.get(tag, 0.0)
                if tag in known and p >= limit:
                    verdict = Rejection(
                        "i2v_rejected",
                        f"Illustration2Vec P({tag}) = {p:.2f} >= {limit:g}",
                        {"tags": [tag], "probability": round(p, 4)},
                    )
                    break
        if verdict is not None:
            run.reject(c.entry, verdict, md5=c.stats.md5)
            vetoed.add(id(c))
    return [c for c in alive if id(c) not in vetoed]


def near_duplicates(run: Run, alive: list[Candidate]) -> list[Candidate]:
    """pHash-near pairs whose colours agree are copies: one per group is kept, the largest. pHash-near
    pairs whose colours differ (a recolour, two discs) are both kept, in one split."""
    cfg, notes = run.cfg, run.notes
    a, b, d = near_duplicate_pairs(
        [c.stats.phash for c in alive], [c.stats.crop_hashes for c in alive], cfg.dedup.max_distance
    )
    limit = cfg.dedup.max_color_diff
    pairs = list(zip(a.tolist(), b.tolist(), d.tolist(), strict=True))
    copies = [
        (i, j, dist)
        for i, j, dist in pairs
        if limit is None or color_distance(alive[i].stats, alive[j].stats) <= limit
    ]
    closest: dict[int, int] = {}
    for i, j, dist in copies:
        closest[i] = min(closest.get(i, 64), dist)
        closest[j] = min(closest.get(j, 64), dist)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(group_labels(len(alive), [p[0] for p in copies], [p[1] for p in copies])):
        groups[label].append(i)
    survivor_of: dict[int, int] = {}
    for members in groups.values():
        best = min(members, key=lambda i: _keep_order(alive[i]))
        alive[best].near_duplicates = len(members) - 1
        for i in members:
            survivor_of[i] = best
            if i == best:
                continue
            c = alive[i]
            run.reject(
                c.entry,
                Rejection(
                    "near_duplicate",
                    f"near-identical to {alive[best].entry.rel} "
                    f"({alive[best].stats.width}x{alive[best].stats.height} px; this one "
                    f"{c.stats.width}x{c.stats.height}): the largest copy is kept",
                ),
                md5=c.stats.md5,
                duplicate_of=alive[best].entry.rel,
                distance=closest.get(i),
            )
    # Look-alikes link their survivors: one group, one split.
    survivors = sorted(set(survivor_of.values()))
    index_of = {s: k for k, s in enumerate(survivors)}
    link_a, link_b = [], []
    for i, j, dist in pairs:
        si, sj = survivor_of[i], survivor_of[j]
        if si != sj and dist <= cfg.dedup.lookalike_distance:
            link_a.append(index_of[si])
            link_b.append(index_of[sj])
    linked: dict[int, list[Candidate]] = defaultdict(list)
    for k, label in enumerate(group_labels(len(survivors), link_a, link_b)):
        linked[label].append(alive[survivors[k]])
    n_similar, largest = 0, 0
    for members in linked.values():
        if len(members) > 1:
            key = min(c.stats.md5 for c in members)
            for c in members:
                c.split_key, c.similar = key, len(members) - 1
            n_similar += len(members)
            largest = max(largest, len(members))
    if n_similar:
        notes.append(
            f"{n_similar} kept images look alike in outline but not in colour (recolours, variants, "
            f"or pictures of the same shape; largest group {largest}): each group shares one split "
            f"('similar' in the manifest; dedup.max_color_diff and dedup.lookalike_distance decide)"
        )
    return sorted((alive[s] for s in survivors), key=lambda c: c.entry.rel)


def _fold_into(keeper: Candidate, e: Found) -> None:
    """Another entry of the same post: remember its folder and any tags it adds."""
    keeper.folders.add(e.folder)
    if e.tags:
        merged = sorted(set(keeper.tags) | set(e.tags))
        if keeper.tag_source == "none":
            keeper.tag_source = "sidecar"
        keeper.tags = merged
    if keeper.rating is None and e.sidecar:
        keeper.rating = e.sidecar.get("rating")


LOSSLESS_EXTENSIONS = frozenset({".png", ".bmp", ".tif", ".tiff"})


def _keep_order(c: Candidate) -> tuple:
    # The most pixels first; at equal size a lossless file (a JPEG re-encode of a PNG is the copy),
    # then the larger file (less compressed), then the first path.
    lossless = Path(c.entry.rel).suffix.lower() in LOSSLESS_EXTENSIONS
    return (-(c.stats.width * c.stats.height), not lossless, -c.stats.size_bytes, c.entry.rel)


def _run_tagger(tagger: Tagger, items: list[Candidate], cache: MeasureCache, cfg: CurateConfig, say) -> None:
    missing = []
    for c in items:
        hit = cache.get_i2v(c.stats.md5, tagger.fingerprint)
        if hit is None:
            missing.append(c)
        else:
            c.i2v = hit
    say(f"Illustration2Vec: {len(items)} files, {len(missing)} to run")
    step = max(cfg.tagger.batch_size * 8, 64)
    for start in range(0, len(missing), step):
        batch = missing[start : start + step]
        probs = tagger.predict_files(
            [os.path.realpath(c.entry.path) for c in batch], batch_size=cfg.tagger.batch_size
        )
        rows = []
        for c, p in zip(batch, probs, strict=True):
            c.i2v = {tagger.tags[k]: round(float(p[k]), 4) for k in range(len(p)) if p[k] >= I2V_CACHE_FLOOR}
            rows.append((c.stats.md5, tagger.fingerprint, c.i2v))
        cache.put_i2v(rows)


def caps(run: Run, alive: list[Candidate]) -> list[Candidate]:
    """Per-folder caps for class balance (balance.*), in a stable pseudo-random order."""
    cfg = run.cfg
    by_folder: dict[str, list[Candidate]] = defaultdict(list)
    for c in alive:
        by_folder[c.entry.folder].append(c)
    caps = []
    if cfg.balance.max_per_folder is not None:
        caps.append(cfg.balance.max_per_folder)
    if cfg.balance.max_ratio_to_smallest is not None and by_folder:
        smallest = min(len(v) for v in by_folder.values())
        caps.append(math.ceil(smallest * cfg.balance.max_ratio_to_smallest))
    if not caps:
        return alive
    cap = min(caps)
    out = []
    for folder, members in by_folder.items():
        # A stable pseudo-random order: the same images stay in when more are added later.
        members = sorted(members, key=lambda c: unit_hash("cap", cfg.split.salt, c.stats.md5))
        out.extend(members[:cap])
        for c in members[cap:]:
            run.reject(
                c.entry,
                Rejection("folder_cap", f"folder {folder} is capped at {cap} images"),
                md5=c.stats.md5,
            )
    return sorted(out, key=lambda c: c.entry.rel)


def split(run: Run, alive: list[Candidate]) -> list[dict]:
    """Manifest records with their split, drawn from a hash of each md5 (or its look-alike group's)."""
    kept = [_manifest_record(c, run.dest, run.cfg) for c in alive]
    for c, rec in zip(alive, kept, strict=True):
        rec["split"] = assign_split(c.split_key or rec["md5"], run.cfg.split.shares, run.cfg.split.salt)
    return kept


def write(run: Run, alive: list[Candidate], kept: list[dict], queries: dict[str, str]) -> CurateResult:
    """Files first, then the manifest that points at them, then old files nobody points at."""
    _materialize(alive, kept, run.dest, run.cfg.output.link, run.notes)
    run.rejected.sort(key=lambda r: r["src_path"])
    result = CurateResult(
        kept=kept,
        rejected=run.rejected,
        queries=queries,
        split_names=list(run.cfg.split.shares),
        measured=run.measured,
        from_cache=run.from_cache,
        dest=run.dest,
        notes=run.notes,
    )
    write_jsonl(run.dest / MANIFEST_NAME, kept)
    write_jsonl(run.dest / REJECTED_NAME, run.rejected)
    write_text(run.dest / SUMMARY_NAME, format_summary(result) + "\n")
    _prune_images(run.dest, {rec["path"] for rec in kept})
    return result


def _dest_rel(c: Candidate, dest: Path, link: str) -> str:
    if link == "none":
        return Path(os.path.relpath(c.entry.path, dest)).as_posix()
    return f"{IMAGES_DIR}/{c.entry.rel}"


def _manifest_record(c: Candidate, dest: Path, cfg: CurateConfig) -> dict:
    rec: dict[str, Any] = {
        "path": _dest_rel(c, dest, cfg.output.link),
        "id": c.entry.post_id,
        "md5": c.stats.md5,
        "tags": c.tags,
        "width": c.stats.width,
        "height": c.stats.height,
        "split": "",
        "folder": c.entry.folder,
        "tag_source": c.tag_source,
        "src_path": c.entry.rel,
    }
    if c.rating:
        rec["rating"] = c.rating
    if len(c.folders) > 1:
        rec["folders"] = sorted(c.folders)
    if c.near_duplicates:
        rec["near_duplicates"] = c.near_duplicates
    if c.similar:
        rec["similar"] = c.similar
    return rec


def _materialize(alive: list[Candidate], kept: list[dict], dest: Path, link: str, notes: list[str]) -> None:
    """Put each kept image at DEST/<record path> (hard link, copy or symlink), atomically."""
    if link == "none":
        return
    fell_back = False
    for c, rec in zip(alive, kept, strict=True):
        source = Path(os.path.realpath(c.entry.path))
        target = dest / rec["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            if link == "symlink" and target.is_symlink() and os.readlink(target) == str(source):
                continue
            if link == "hardlink" and not target.is_symlink() and os.path.samefile(source, target):
                continue
            if link == "copy" and not target.is_symlink():
                ts, ss = target.stat(), source.stat()
                if ts.st_size == ss.st_size and ts.st_mtime_ns == ss.st_mtime_ns:
                    continue
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
        mode = link
        if mode == "hardlink":
            try:
                os.link(source, tmp)
            except OSError as err:
                if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                    raise
                mode = "copy"
                if not fell_back:
                    fell_back = True
                    notes.append(f"hard links not possible into {dest} ({err.strerror}); copied instead")
        if mode == "copy":
            shutil.copy2(source, tmp)
        elif mode == "symlink":
            os.symlink(source, tmp)
        os.replace(tmp, target)


def _prune_images(dest: Path, keep: set[str]) -> None:
    """Remove files under DEST/images that the new manifest does not list (only there, never SRC)."""
    root = dest / IMAGES_DIR
    if not root.is_dir():
        return
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        here = Path(dirpath)
        for n in filenames:
            p = here / n
            if p.relative_to(dest).as_posix() not in keep:
                p.unlink()
        if here != root and not any(here.iterdir()):
            here.rmdir()


# --------------------------------------------------------------------------------------------------
# Output


def write_text(path: Path, text: str) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def format_summary(result: CurateResult) -> str:
    """Markdown: the headline, kept per folder per split, and the reasons files were left out."""
    rows = result.folder_table()
    splits = result.split_names
    n_kept, n_rej = len(result.kept), len(result.rejected)
    per_split = Counter(r["split"] for r in result.kept)
    split_text = ", ".join(f"{s} {per_split.get(s, 0)}" for s in splits)
    lines = [
        f"crawler filter: {n_kept + n_rej} files in {len(rows)} folders -> {n_kept} kept ({split_text}), "
        f"{n_rej} left out; {result.measured} files measured, {result.from_cache} from cache",
        "",
        "| folder | query | files | kept | " + " | ".join(splits) + " | left out |",
        "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in splits) + " | ---: |",
    ]
    total = Counter()
    for row in rows:
        cells = [row["folder"], row["query"].replace("|", "\\|"), row["files"], row["kept"]]
        cells += [row[s] for s in splits] + [row["rejected"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        for k in ("files", "kept", "rejected", *splits):
            total[k] += row[k]
    lines.append(
        "| **total** |  | " + " | ".join(str(total[k]) for k in ("files", "kept", *splits, "rejected")) + " |"
    )
    kept_per_folder = [row["kept"] for row in rows if row["kept"]]
    if len(kept_per_folder) > 1:
        ratio = max(kept_per_folder) / min(kept_per_folder)
        lines.append("")
        lines.append(
            f"Largest folder keeps {ratio:.1f}x the images of the smallest"
            + (" (see balance.* in configs/curate.yaml)." if ratio >= 2 else ".")
        )
    reasons = result.reason_counts()
    if reasons:
        lines += ["", "| reason | files | meaning |", "| --- | ---: | --- |"]
        order = list(REASONS)
        for reason in sorted(reasons, key=lambda r: order.index(r) if r in order else len(order)):
            lines.append(f"| {reason} | {reasons[reason]} | {REASONS.get(reason, '')} |")
    if result.notes:
        lines += ["", f"Notes ({len(result.notes)}):"]
        lines += [f"- {n}" for n in result.notes[:20]]
        if len(result.notes) > 20:
            lines.append(f"- ... and {len(result.notes) - 20} more")
    lines += [
        "",
        f"Wrote {result.manifest_path} and {result.rejected_path} (every file left out, with its reason).",
    ]
    return "\n".join(lines)
