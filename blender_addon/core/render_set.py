"""The render set on disk, and the one render loop that writes it.

Layout (see DESIGN.md)::

    my_set/
      dataset.json          resolved spec, spec hash, versions, counts, factors, mask parts, shard
      metadata.csv          one row per complete image, file_name first, sorted by index
      images/000000.png     RGB
      masks/000000.png      part ids (schema.MASK_PARTS), when render.masks
      .carprobe/spec.json   the spec hash this folder belongs to (written before the first image)
      .carprobe/journal/    one JSON-lines journal per rendering process: {"index", "file_name",
                            "mask_file"} per complete image, fsync'd in batches (Journal.commit);
                            a torn last line is ignored

Guarantees: every file is written to a temporary name in its final folder, fsync'd and renamed
(os.replace), so a reader never sees half a file. A journal line is written only after the
image (and mask) are in place, so a journaled index always has its files. Several processes
may render disjoint indices into one folder at once (each has its own journal).
``metadata.csv`` and ``dataset.json`` are rebuilt from the journals (rows recomputed from the
spec, which makes them a pure function of the spec and the set of complete indices): at the
end of a loop, when it stops early (error, Ctrl-C), and by ``finalize``/``merge``. Neither
holds a timestamp, so identical renders give identical files.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import schema
from .errors import CarprobeError
from .progress import Progress
from .sampling import CAMERA_COLUMNS, COLOR_SUFFIXES, metadata_columns, sample_count, sample_row
from .spec import Spec, parse_spec
from .version import CARPROBE_VERSION

FORMAT = "carprobe-render-set"
FORMAT_VERSION = 1
STATE_DIR = ".carprobe"
MARKER = f"{STATE_DIR}/spec.json"
JOURNAL_DIR = f"{STATE_DIR}/journal"
LOG_DIR = f"{STATE_DIR}/logs"
DATASET_JSON = "dataset.json"
METADATA_CSV = "metadata.csv"
# Entries a render-set folder may hold; anything else means the folder is something else.
KNOWN_ENTRIES = {"dataset.json", "metadata.csv", "images", "masks", STATE_DIR, ".carprobe-cache"}
# Temporary files: '.<index>.<pid>-<token>.tmp<suffix>' — they keep the real suffix at the end
# because image writers pick the format from it.
_TMP_NAME = re.compile(r"^\.(\d+)\.[0-9]+-[0-9a-f]+\.tmp(\.[A-Za-z]+)?$")

# Seconds between journal commits while rendering (Journal.commit): what a crash may cost at most.
COMMIT_SECONDS = 1.0

RenderImage = Callable[[dict, Path, "Path | None"], None]


@dataclass(frozen=True)
class RenderResult:
    rendered: int  # images rendered by this call
    skipped: int  # requested indices that were already complete
    complete: int  # complete images in the folder afterwards
    total: int  # samples of the spec


@dataclass
class RenderSet:
    root: Path
    info: dict[str, Any]  # dataset.json
    rows: list[dict[str, Any]]  # metadata.csv, typed, sorted by index

    @property
    def spec(self) -> Spec:
        return spec_from_info(self.info, source=str(self.root / DATASET_JSON))

    @property
    def image_paths(self) -> list[Path]:
        return [self.root / row["file_name"] for row in self.rows]

    @property
    def mask_paths(self) -> list[Path | None]:
        return [self.root / row["mask_file"] if row["mask_file"] else None for row in self.rows]


# --- atomic files ----------------------------------------------------------------------

def temp_path(final: Path, default_suffix: str = "") -> Path:
    """A unique temporary name next to `final` (same folder, so os.replace is atomic), hidden,
    with the real suffix last: image writers choose the format from it."""
    final = Path(final)
    suffix = final.suffix or default_suffix
    return final.parent / f".{final.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{suffix}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- journals --------------------------------------------------------------------------

class Journal:
    """This process's journal: one JSON line per complete image (opened lazily), written in
    batches: `add` queues an image whose files are still at their temporary names, `commit`
    puts the queued files in place and journals them with one fsync of the journal.

    One file per (host, process): a GUI that calls the loop once per image appends to the same
    file. A line left torn by an earlier failure is closed with a newline before appending.
    """

    def __init__(self, root: Path, clock: Callable[[], float] = time.monotonic):
        self.path = root / JOURNAL_DIR / f"{socket.gethostname()}-{os.getpid()}.jsonl"
        self._handle = None
        self._queue: list[tuple[str, list[tuple[Path, Path]]]] = []
        self._clock = clock
        self._last_commit = clock()

    def add(self, index: int, file_name: str, mask_file: str, files: Iterable[tuple[Path, Path]] = ()) -> None:
        """Queue image `index`: its `files` are (temporary, final) paths of whole files."""
        line = json.dumps({"index": index, "file_name": file_name, "mask_file": mask_file})
        self._queue.append((line, list(files)))

    def append(self, index: int, file_name: str, mask_file: str) -> None:
        """Journal an image whose files are already in place and durable."""
        self.add(index, file_name, mask_file)
        self.commit()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def due(self) -> bool:
        """True once a commit is due: COMMIT_SECONDS after the previous one."""
        return bool(self._queue) and self._clock() - self._last_commit >= COMMIT_SECONDS

    def commit(self) -> None:
        """Put the queued images in place and journal them.

        Crash safety: a journal line must never name a file that a crash or power loss can take
        away, and a final name must never hold half a file. So, in this order: every queued
        file's data reaches the disk (fsync), then gets its final name (os.replace, atomic), then
        each folder holding new names reaches the disk (one fsync per folder), and only then are
        the lines written and the journal fsync'd. A crash before that last fsync loses the
        batch's lines, never a listed file: the resume renders those images again (their final
        names are overwritten). Batching costs at most COMMIT_SECONDS of rendering on a crash and
        saves ~5 fsyncs per image (image, mask, two folders, journal) for one journal fsync per
        batch; back-to-back file fsyncs are cheap, since the first one's commit carries the rest.
        """
        if not self._queue:
            return
        files = [pair for _, pair_list in self._queue for pair in pair_list]
        for tmp, _ in files:
            _fsync_file(tmp)
        for tmp, final in files:
            os.replace(tmp, final)
        for folder in dict.fromkeys(final.parent for _, final in files):
            _fsync_dir(folder)
        if self._handle is None:
            torn = self.path.is_file() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
            self._handle = open(self.path, "a", encoding="utf-8")
            if torn:
                self._handle.write("\n")
            _fsync_dir(self.path.parent)
        self._handle.write("".join(line + "\n" for line, _ in self._queue))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._queue.clear()
        self._last_commit = self._clock()

    def discard(self) -> None:
        """Forget the queue and delete its temporary files (a commit that cannot succeed)."""
        for _, files in self._queue:
            for tmp, _ in files:
                tmp.unlink(missing_ok=True)
        self._queue.clear()

    def close(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError:
                pass
            self._handle = None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def journal_entries(root: Path) -> dict[int, dict[str, Any]]:
    """Every journaled index of a folder → its entry (first one wins; torn lines skipped)."""
    entries: dict[int, dict[str, Any]] = {}
    folder = Path(root) / JOURNAL_DIR
    if not folder.is_dir():
        return entries
    for path in sorted(folder.glob("*.jsonl")):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            try:
                entry = json.loads(line)
                index = entry["index"]
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line of a process that died mid-write
            if isinstance(index, int) and index not in entries:
                entries[index] = entry
    return entries


def completed_indices(root: Path) -> dict[int, dict[str, Any]]:
    """Journaled indices whose image (and mask) files exist."""
    root = Path(root)
    done = {}
    for index, entry in journal_entries(root).items():
        files = [entry.get("file_name", "")] + ([entry["mask_file"]] if entry.get("mask_file") else [])
        if files[0] and all((root / f).is_file() for f in files):
            done[index] = entry
    return done


def remove_stray_temp_files(root: Path, indices: Iterable[int] | None = None) -> int:
    """Delete temporary files left by a killed process: those of `indices` (all when None).

    Restricted to our own indices because other workers may be writing theirs right now.
    """
    wanted = None if indices is None else set(indices)
    removed = 0
    for folder in (Path(root) / "images", Path(root) / "masks"):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            match = _TMP_NAME.match(path.name)
            if match and (wanted is None or int(match.group(1)) in wanted):
                path.unlink(missing_ok=True)
                removed += 1
    return removed


# --- the output folder -----------------------------------------------------------------

def folder_spec_hash(root: Path) -> str | None:
    """The spec hash a folder belongs to (marker, else dataset.json), None for a new folder."""
    root = Path(root)
    for name in (MARKER, DATASET_JSON):
        path = root / name
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))["spec_hash"]
            except (ValueError, KeyError, TypeError):
                raise CarprobeError(f"{path}: unreadable render-set file; delete {root} to start over "
                                    "or restore the file") from None
    return None


def prepare_folder(spec: Spec, root: Path) -> None:
    """Create the folder layout, or check that an existing folder belongs to this spec."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise CarprobeError(f"output {root} exists and is not a folder; choose another --out")
    existing = folder_spec_hash(root) if root.is_dir() else None
    if existing is not None and existing != spec.hash:
        raise CarprobeError(
            f"output {root} holds a render set of a different spec (spec hash {existing[:12]}, this spec "
            f"{spec.hash[:12]}); resuming would mix two datasets. Render into a new folder, or delete "
            f"{root} to start over with this spec")
    if existing is None and root.is_dir():
        foreign = sorted(p.name for p in root.iterdir() if p.name not in KNOWN_ENTRIES)
        if foreign:
            raise CarprobeError(f"output {root} is not empty and is not a carprobe render set (it holds "
                                f"{', '.join(foreign[:5])}); choose an empty or new folder")
    (root / "images").mkdir(parents=True, exist_ok=True)
    if spec.settings["render.masks"]:
        (root / "masks").mkdir(exist_ok=True)
    (root / JOURNAL_DIR).mkdir(parents=True, exist_ok=True)
    if existing is None:
        marker = {"format": FORMAT, "spec_hash": spec.hash, "spec": spec.resolved()}
        atomic_write_text(root / MARKER, json.dumps(marker, indent=1, sort_keys=True) + "\n")


# --- the render loop -------------------------------------------------------------------

class RenderLoop:
    """The one render loop, one image per ``step()``: what `render_samples` runs to the end and
    the GUI's stepped job (ui.render_job) runs between Blender events.

    Creating a loop validates the indices, prepares the folder (a different spec's render set is
    refused) and reads the journals once: ``pending`` holds the wanted indices not complete yet,
    in order; ``skipped`` counts the others. See `render_samples` for the arguments.
    """

    def __init__(self, spec: Spec, out_dir: str | Path, render_image: RenderImage,
                 indices: Iterable[int] | None = None, progress: bool = True, *,
                 blender_version: str | None = None, shard: tuple[int, int] | None = None,
                 finalize: bool = True, progress_stream=None):
        self.spec, self.root, self.render_image = spec, Path(out_dir), render_image
        self.blender_version, self.shard, self.finalize = blender_version, shard, finalize
        self.total = sample_count(spec)
        wanted = list(dict.fromkeys(range(self.total) if indices is None else indices))
        bad = [i for i in wanted if not isinstance(i, int) or not 0 <= i < self.total]
        if bad:
            raise CarprobeError(f"sample indices {bad[:5]} out of range: spec {spec.name!r} has {self.total} "
                                f"samples (0..{self.total - 1})")
        try:
            prepare_folder(spec, self.root)
            remove_stray_temp_files(self.root, wanted)
        except OSError as exc:
            _raise_disk_full(exc, self.root, 0)
            raise
        done = completed_indices(self.root)
        self.pending: deque[int] = deque(i for i in wanted if i not in done)
        self.skipped = len(wanted) - len(self.pending)
        self.rendered = 0
        self._done_before = len(done)
        self._bar = Progress(len(wanted), label=f"render {spec.name}", enabled=progress, stream=progress_stream)
        self._bar.set(self.skipped)
        self._journal = Journal(self.root)

    def step(self) -> int:
        """Render the first pending index and journal it; returns it. On an error it stays pending
        (completed images are kept) and a full disk becomes a CarprobeError."""
        index = self.pending[0]
        try:
            _render_one(self.root, sample_row(self.spec, index), self.render_image, self._journal)
            if self._journal.due():
                self._journal.commit()
        except OSError as exc:
            self._commit_complete()
            _raise_disk_full(exc, self.root, len(completed_indices(self.root)))
            raise
        self.pending.popleft()
        self.rendered += 1
        self._bar.update()
        return index

    def stop(self) -> None:
        """After an error or interruption: close the journal, and rewrite the index files of what
        is complete when the loop finalizes (an OSError there keeps the previous files)."""
        self._commit_complete()
        self._journal.close()
        self._bar.close()
        if self.finalize:
            try:
                write_index_files(self.spec, self.root, blender_version=self.blender_version, shard=self.shard)
            except OSError:
                pass  # e.g. still no space: the previous index files stay intact (atomic writes)

    def _commit_complete(self) -> None:
        """Keep the images rendered so far (they are whole), unless that fails too (e.g. no space
        for the journal): then they are rendered again on resume."""
        try:
            self._journal.commit()
        except OSError:
            self._journal.discard()

    def finish(self) -> RenderResult:
        """Commit and close the journal; rewrite the index files when the loop finalizes."""
        try:
            self._journal.commit()
        except OSError as exc:
            self._journal.discard()
            _raise_disk_full(exc, self.root, len(completed_indices(self.root)))
            raise
        finally:
            self._journal.close()
        self._bar.close()
        if self.finalize:
            complete = write_index_files(self.spec, self.root, blender_version=self.blender_version,
                                         shard=self.shard)
        else:
            complete = len(completed_indices(self.root))
        return RenderResult(rendered=self.rendered, skipped=self.skipped, complete=complete, total=self.total)


def render_samples(spec: Spec, out_dir: str | Path, render_image: RenderImage,
                   indices: Iterable[int] | None = None, progress: bool = True, *,
                   blender_version: str | None = None, shard: tuple[int, int] | None = None,
                   finalize: bool = True, progress_stream=None,
                   stop_requested: Callable[[], bool] | None = None) -> RenderResult:
    """Render `indices` (default: every sample) of `spec` into `out_dir`; resumes.

    ``render_image(row, image_path, mask_path_or_None)`` must write the image (and the mask,
    when a path is given) to exactly those temporary paths; they end in the real file suffix.
    Indices already complete are skipped. metadata.csv and dataset.json are rewritten at the
    end and whenever the loop stops early (finalize=False leaves that to the caller, e.g. a
    parent process of several workers). Disk full raises CarprobeError; completed work is kept.
    ``stop_requested()`` is asked before each image (core.interrupt): when true, the loop stops
    as on Ctrl-C (KeyboardInterrupt), keeping every complete image.
    """
    loop = RenderLoop(spec, out_dir, render_image, indices, progress, blender_version=blender_version,
                      shard=shard, finalize=finalize, progress_stream=progress_stream)
    try:
        while loop.pending:
            if stop_requested is not None and stop_requested():
                raise KeyboardInterrupt
            loop.step()
    except BaseException:
        loop.stop()
        raise
    return loop.finish()


def _render_one(root: Path, row: dict[str, Any], render_image: RenderImage, journal: Journal) -> None:
    """Render one row to temporary files and queue them in the journal (Journal.commit puts
    them in place); on any error its temporary files are deleted."""
    image = root / row["file_name"]
    mask = root / row["mask_file"] if row["mask_file"] else None
    tmp_image = temp_path(image)
    tmp_mask = temp_path(mask) if mask is not None else None
    files = [(tmp_image, image)] + ([(tmp_mask, mask)] if mask is not None else [])
    try:
        render_image(row, tmp_image, tmp_mask)
        for tmp, final in files:
            if not tmp.is_file() or tmp.stat().st_size == 0:
                raise RuntimeError(f"the renderer wrote no file {tmp} for {final.name} (sample {row['index']})")
    except BaseException:
        for tmp, _ in files:
            tmp.unlink(missing_ok=True)
        raise
    journal.add(row["index"], row["file_name"], row["mask_file"], files)


def _raise_disk_full(exc: OSError, root: Path, complete: int) -> None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise CarprobeError(
            f"no space left on the device of {root} ({exc.strerror}); {complete} complete images are "
            "kept. Free some space and rerun the same command to resume") from None


# --- index files -----------------------------------------------------------------------

def write_index_files(spec: Spec, root: str | Path, *, blender_version: str | None = None,
                      shard: tuple[int, int] | None = None) -> int:
    """Rebuild metadata.csv and dataset.json from the journals; returns the image count.

    blender_version=None keeps the version already recorded in dataset.json (a parent process
    that never imported bpy finalises what its Blender workers rendered).
    """
    root = Path(root)
    total = sample_count(spec)
    complete = sorted(i for i in completed_indices(root) if i < total)
    columns = metadata_columns(spec)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    masks = 0
    for index in complete:
        row = sample_row(spec, index)
        masks += bool(row["mask_file"])
        writer.writerow([row[c] for c in columns])  # str(float) is the shortest exact repr
    if blender_version is None:
        blender_version = _previous_info(root).get("blender_version")
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "spec_hash": spec.hash,
        "spec": spec.resolved(),
        "carprobe_version": CARPROBE_VERSION,
        "blender_version": blender_version,
        "counts": {"samples": total, "images": len(complete), "masks": masks,
                   "missing": total - len(complete)},
        "factors": spec.varying_factors,
        "mask_parts": {name: i for i, name in enumerate(schema.MASK_PARTS)},
        "columns": columns,
        # Shard k of n (1-based) holds every n-th index from k-1 (see core/shard.py).
        "shard": None if shard is None else {"k": shard[0], "n": shard[1]},
    }
    atomic_write_text(root / METADATA_CSV, buffer.getvalue())
    atomic_write_text(root / DATASET_JSON, json.dumps(info, indent=1, sort_keys=False) + "\n")
    return len(complete)


def _previous_info(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / DATASET_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def finalize(spec: Spec, out_dir: str | Path, *, blender_version: str | None = None,
             shard: tuple[int, int] | None = None) -> int:
    """Clean up after every writer of a folder has stopped, then rewrite the index files."""
    root = Path(out_dir)
    remove_stray_temp_files(root)
    return write_index_files(spec, root, blender_version=blender_version, shard=shard)


# --- reading and merging ---------------------------------------------------------------

def spec_from_info(info: dict[str, Any], source: str = "dataset.json") -> Spec:
    """The Spec stored in a render set (paths are not checked: the set may come from elsewhere)."""
    spec = parse_spec(info["spec"], None, source=source, check_files=False)
    if spec.hash != info.get("spec_hash"):
        raise CarprobeError(f"{source}: the stored spec does not match its spec_hash (edited by hand, or "
                            "written by an incompatible carprobe)")
    return spec


def read_render_set(path: str | Path) -> RenderSet:
    root = Path(path)
    info_path = root / DATASET_JSON
    if not info_path.is_file():
        hint = (" (an unfinished render: rerun the render command to finish it)"
                if (root / MARKER).is_file() else "")
        raise CarprobeError(f"{root} is not a carprobe render set: no {DATASET_JSON}{hint}")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CarprobeError(f"{info_path}: not valid JSON ({exc})") from None
    found = info.get("format") if isinstance(info, dict) else None
    if found != FORMAT:
        raise CarprobeError(f"{info_path}: not a carprobe render set (format {found!r})")
    metadata = root / METADATA_CSV
    if not metadata.is_file():
        raise CarprobeError(f"{root}: {METADATA_CSV} missing; rerun the render command to rebuild it")
    rows = _read_metadata(metadata)
    rows.sort(key=lambda r: r["index"])
    return RenderSet(root=root, info=info, rows=rows)


# Columns every reader relies on (paths, order, masks); the rest are factors and camera values.
REQUIRED_COLUMNS = ("file_name", "index", "mask_file")


def _read_metadata(path: Path) -> list[dict[str, Any]]:
    """metadata.csv → typed rows; a bad encoding, a missing required column, a malformed row or a
    duplicated index is a CarprobeError naming the file and line."""
    def fail(line: int, problem: str):
        raise CarprobeError(f"{path}, line {line}: {problem}; rerun the render command to rebuild it")

    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(data[:exc.start].count(b"\n") + 1, f"byte 0x{data[exc.start]:02x} is not UTF-8 text")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        fail(1, f"unreadable header ({exc})")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        fail(1, f"required column(s) {', '.join(missing)} missing from the header (a carprobe metadata.csv "
                f"has {', '.join(REQUIRED_COLUMNS)} and one column per factor)")
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        fail(1, f"column(s) {', '.join(duplicated)} appear more than once in the header")
    rows: list[dict[str, Any]] = []
    first_line: dict[int, int] = {}
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            fail(reader.line_num, f"malformed CSV ({exc})")
        line = reader.line_num
        try:
            typed = _typed_row(row)
        except ValueError as exc:  # a truncated or hand-edited line
            fail(line, str(exc))
        index = typed["index"]
        if index in first_line:
            fail(line, f"index {index} appears again (first on line {first_line[index]}); every image has "
                       "one row")
        first_line[index] = line
        rows.append(typed)
    return rows


_COLUMN_KINDS = {p.path: p.kind for p in schema.PARAMS}


def _typed_row(row: dict[str, str]) -> dict[str, Any]:
    """metadata.csv strings → the types sample_row gives (matrix_world stays a JSON string)."""
    out: dict[str, Any] = {}
    for column, text in row.items():
        if column is None or text is None:  # csv.DictReader: more or fewer fields than the header
            raise ValueError("the number of fields differs from the header's")
        kind = _COLUMN_KINDS.get(column)
        is_color_part = column[-2:] in COLOR_SUFFIXES and _COLUMN_KINDS.get(column[:-2]) == "color"
        try:
            if column in ("index", "seed") or kind == "int":
                out[column] = int(text)
            elif kind == "float" or is_color_part or (column in CAMERA_COLUMNS and column != "camera.matrix_world"):
                out[column] = float(text)
            elif kind == "bool":
                out[column] = text == "True"
            else:
                out[column] = text
        except ValueError:
            raise ValueError(f"column {column} = {text!r} is not a number") from None
    return out


def merge(parts: Iterable[str | Path], out: str | Path, progress: bool = False) -> RenderSet:
    """Join render-set parts (shards) of one spec into `out`; the result equals one full run.

    Refuses parts of different specs. An index present in several parts is taken once.
    """
    parts = [Path(p) for p in parts]
    root = Path(out)
    if not parts:
        raise CarprobeError("merge: give at least one render-set part")
    hashes = {}
    for part in parts:
        if not part.is_dir():
            raise CarprobeError(f"merge: part {part} is not a folder")
        if part.resolve() == root.resolve():
            raise CarprobeError(f"merge: the output {root} is also a part; choose a new --out")
        found = folder_spec_hash(part)
        if found is None:
            raise CarprobeError(f"merge: part {part} is not a carprobe render set (no dataset.json)")
        hashes[part] = found
    if len(set(hashes.values())) > 1:
        listing = "; ".join(f"{p}: {h[:12]}" for p, h in hashes.items())
        raise CarprobeError(f"merge: the parts come from different specs (spec hashes {listing}); "
                            "only shards of one spec can be merged")
    first = parts[0]
    stored = _previous_info(first) or json.loads((first / MARKER).read_text(encoding="utf-8"))
    spec = spec_from_info(stored, source=str(first))
    blender_version = next((v for v in (_previous_info(p).get("blender_version") for p in parts) if v), None)
    try:
        prepare_folder(spec, root)
        remove_stray_temp_files(root)
        done = set(completed_indices(root))
        journal = Journal(root)
        try:
            for part in parts:
                entries = completed_indices(part)
                todo = sorted(i for i in entries if i not in done)
                bar = Progress(len(todo), label=f"merge {part.name}", enabled=progress)
                for index in todo:
                    entry = entries[index]
                    for name in (entry["file_name"], entry.get("mask_file") or ""):
                        if name:
                            _copy_atomic(part / name, root / name)
                    journal.append(index, entry["file_name"], entry.get("mask_file") or "")
                    done.add(index)
                    bar.update()
                bar.close()
        finally:
            journal.close()
        write_index_files(spec, root, blender_version=blender_version, shard=None)
    except OSError as exc:
        _raise_disk_full(exc, root, len(completed_indices(root)))
        raise
    return read_render_set(root)


def _copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        shutil.copyfile(source, tmp)
        _fsync_file(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
