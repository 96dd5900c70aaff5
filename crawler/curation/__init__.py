"""`crawler filter`: a crawl -> DEST/manifest.jsonl (train/val/test) + DEST/rejected.jsonl (a reason per file).

`stages` runs the named stages; `rules` decides, `measure` measures, `phash` finds near duplicates,
`tagger` estimates tags (Illustration2Vec), `config` holds every setting, `cli` is the command line.
"""

from .config import ConfigError, CurateConfig, load_curate_config
from .stages import STAGES, CurateResult, assign_split, curate

__all__ = [
    "STAGES",
    "ConfigError",
    "CurateConfig",
    "CurateResult",
    "assign_split",
    "curate",
    "load_curate_config",
]
