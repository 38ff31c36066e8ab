"""The render set on disk, and the one render loop that writes it.

Layout (see DESIGN.md)::

    my_set/
      dataset.json          resolved spec, spec hash, versions, counts, factors, mask parts, shard,
                            column_types (one schema per format version, see sampling.column_types)
      metadata.csv          one row per complete image, file_name first, sorted by index
      metadata.hf.jsonl     the same rows with real types: lists for matrices, null for empty
      README.md             a Hugging Face dataset card: `load_dataset(SET)` reads the JSON lines
                            with typed features, images and masks as image columns
      images/000000.png     RGB
      masks/000000.png      part ids (schema.MASK_PARTS), when render.masks
      .carprobe/spec.json   what this folder belongs to (written before the first image): spec
                            hash, the sha256 of every input file (car models, HDRIs, images), shard
      .carprobe/journal/    one JSON-lines journal per rendering process: {"index", "file_name",
                            "mask_file_name", "bbox"} per complete image, fsync'd in batches
                            (Journal.commit);
                            a torn last line is ignored
      .carprobe/lock        held (flock) by the one job that owns the folder while it runs
      .carprobe/scratch/    per-process scratch space (mask passes, Blender's temporary files)

Guarantees: every file is written to a temporary name in its final folder, fsync'd and renamed
(os.replace), so a reader never sees half a file. Every image and mask is checked to be a whole
file (image_files.finish_image, which also drops date stamps) before it is renamed, and a
journal line is written only after the image (and mask) are in place, so a journaled index
always has whole files. One job owns a folder at a time (an exclusive lock; a second one is
refused); its worker processes render disjoint indices into it at once (each has its own
journal). Only an empty folder or one with carprobe's marker is used; a job that fails before
its first image leaves the folder as it was.
Every path read from a journal or metadata.csv must stay inside the set.
``metadata.csv`` and ``dataset.json`` are rebuilt from the journals (rows recomputed from the
spec, which makes them a pure function of the spec and the set of complete indices): at the
end of a loop, when it stops early (error, Ctrl-C), and by ``finalize``/``merge``. Neither
holds a timestamp, so identical renders give identical files.
"""

from __future__ import annotations

import atexit
import csv
import errno
import hashlib
import io
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import schema
from .errors import CarprobeError
from .image_files import DamagedImage, check_image, finish_image
from .mask_box import mask_bbox
from .progress import Progress
from .sampling import (BBOX_COLUMNS, LIST_COLUMNS, NEVER_EMPTY, column_types, metadata_columns, sample_count,
                       sample_row)
from .spec import Spec, parse_spec
from .version import CARPROBE_VERSION

FORMAT = "carprobe-render-set"
FORMAT_VERSION = 2  # 2: mask_file → mask_file_name, camera.K/Rt, bbox_*, column_types, HF files
STATE_DIR = ".carprobe"
MARKER = f"{STATE_DIR}/spec.json"
JOURNAL_DIR = f"{STATE_DIR}/journal"
LOG_DIR = f"{STATE_DIR}/logs"
LOCK_FILE = f"{STATE_DIR}/lock"
SCRATCH_DIR = f"{STATE_DIR}/scratch"
DATASET_JSON = "dataset.json"
METADATA_CSV = "metadata.csv"
# Not named metadata.jsonl: imagefolder refuses a folder with two metadata.* files.
METADATA_JSONL = "metadata.hf.jsonl"
DATASET_CARD = "README.md"
# Temporary files (temp_path): '.<stem>.<pid>-<token>.tmp<suffix>' — they keep the real suffix
# at the end because image writers pick the format from it.
_TMP_NAME = re.compile(r"^\.(.+)\.[0-9]+-[0-9a-f]+\.tmp(\.[A-Za-z]+)?$")
# Folders of a set that may hold temporary files.
_TEMP_FOLDERS = (".", "images", "masks", STATE_DIR)

# Seconds between journal commits while rendering (Journal.commit): what a crash may cost at most.
COMMIT_SECONDS = 1.0

# render_image(row, image_path, mask_path_or_None) -> None, or {"bbox": box or None} when the
# renderer knows the car's box in the mask it wrote (else the loop reads it from the file)
RenderImage = Callable[[dict, Path, "Path | None"], "dict[str, Any] | None"]


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
        return [self.root / row["mask_file_name"] if row["mask_file_name"] else None for row in self.rows]


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
    batches: `add` queues an image whose files are still at their temporary names, `commit` (or
    `commit_in_background` while rendering) puts the queued files in place and journals them
    with one fsync of the journal.

    One file per (host, process): a GUI that calls the loop once per image appends to the same
    file. A line left torn by an earlier failure is closed with a newline before appending.
    """

    def __init__(self, root: Path, clock: Callable[[], float] = time.monotonic):
        self.path = root / JOURNAL_DIR / f"{socket.gethostname()}-{os.getpid()}.jsonl"
        self._handle = None
        self._queue: list[tuple[str, list[tuple[Path, Path]]]] = []  # (journal line, files)
        self._failed: list[tuple[str, list[tuple[Path, Path]]]] = []  # a batch whose commit failed
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._clock = clock
        self._last_commit = -float("inf")  # the first image is committed at once: progress shows early

    def add(self, index: int, file_name: str, mask_file_name: str, files: Iterable[tuple[Path, Path]] = (),
            bbox=None) -> None:
        """Queue image `index`: its `files` are (temporary, final) paths of whole files; `bbox`
        the car's box in its mask (core/mask_box.py)."""
        line = json.dumps({"index": index, "file_name": file_name, "mask_file_name": mask_file_name,
                           "bbox": None if bbox is None else list(bbox)})
        self._queue.append((line, list(files)))

    def append(self, index: int, file_name: str, mask_file_name: str, bbox=None) -> None:
        """Journal an image whose files are already in place and durable."""
        self.add(index, file_name, mask_file_name, bbox=bbox)
        self.commit()

    def due(self) -> bool:
        """True once a commit is due: for the first image, then COMMIT_SECONDS after the previous one."""
        return bool(self._queue) and self._clock() - self._last_commit >= COMMIT_SECONDS

    def commit_in_background(self) -> None:
        """Commit the queue on a helper thread while the next image renders: the fsync waits
        leave the render thread (Cycles renders without holding the GIL). One batch at a time,
        in order: this first waits for the previous batch, and raises its error if it failed."""
        self.wait()
        batch, self._queue = self._queue, []
        self._last_commit = self._clock()
        self._thread = threading.Thread(target=self._commit_in_thread, args=(batch,), daemon=True,
                                        name="carprobe-journal-commit")
        self._thread.start()

    def _commit_in_thread(self, batch) -> None:
        try:
            self._commit_batch(batch)
        except BaseException as exc:  # raised in the render thread by wait()
            self._failed, self._error = batch, exc

    def wait(self) -> None:
        """Wait for a batch being committed in the background; raise its error if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def commit(self) -> None:
        """Put the queued images in place and journal them, now (after a batch in flight)."""
        self.wait()
        batch, self._failed = self._failed + self._queue, []  # a failed batch is tried again first
        self._queue = []
        try:
            self._commit_batch(batch)
        except BaseException:
            self._failed = batch
            raise
        self._last_commit = self._clock()

    def _commit_batch(self, batch) -> None:
        """Put a batch's files in place and journal them.

        Crash safety: a journal line must never name a file that a crash or power loss can take
        away, and a final name must never hold half a file. So, in this order: every file's data
        reaches the disk (fsync), then gets its final name (os.replace, atomic), then each folder
        holding new names reaches the disk (one fsync per folder), and only then are the lines
        written and the journal fsync'd. A crash before that last fsync loses the batch's lines,
        never a listed file: the resume renders those images again (their final names are
        overwritten). Batching costs at most COMMIT_SECONDS of rendering on a crash and saves ~5
        fsyncs per image (image, mask, two folders, journal) for one journal fsync per batch;
        back-to-back file fsyncs are cheap, since the first one's commit carries the rest.
        """
        if not batch:
            return
        files = [pair for _, pair_list in batch for pair in pair_list]
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
        self._handle.write("".join(line + "\n" for line, _ in batch))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def discard(self) -> None:
        """Forget what is not journaled and delete its temporary files (a commit that cannot
        succeed: those images are rendered again on resume)."""
        try:
            self.wait()
        except BaseException:
            pass
        for _, files in self._failed + self._queue:
            for tmp, _ in files:
                tmp.unlink(missing_ok=True)
        self._failed, self._queue = [], []

    def close(self) -> None:
        if self._thread is not None:  # callers commit first; this only makes sure nothing runs on
            self._thread.join()
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
    """Every journaled index of a folder → its entry (first one wins; torn lines skipped).

    A file name that would leave the set (``../x``, an absolute path) is refused: merge copies
    the files a journal names.
    """
    entries: dict[int, dict[str, Any]] = {}
    folder = Path(root) / JOURNAL_DIR
    if not folder.is_dir():
        return entries
    for path in sorted(folder.glob("*.jsonl")):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            try:
                entry = json.loads(line)
                index = entry["index"]
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line of a process that died mid-write
            if not isinstance(index, int) or isinstance(index, bool):
                continue
            check_member(entry.get("file_name") or "", "images", f"{path}, line {number}", allow_empty=True)
            check_member(_entry_mask(entry), "masks", f"{path}, line {number}", allow_empty=True)
            entries.setdefault(index, entry)
    return entries


def _entry_mask(entry: dict[str, Any]) -> str:
    """The mask file of a journal entry ("mask_file" in journals of format version 1)."""
    return entry.get("mask_file_name", entry.get("mask_file")) or ""


def check_member(name: Any, folder: str, source: str, allow_empty: bool = False) -> str:
    """`name` if it is a plain file name inside `folder`/ of a set ('images/000001.png'), else a
    CarprobeError naming `source` (a file and line)."""
    if allow_empty and name == "":
        return name
    parts = name.split("/") if isinstance(name, str) else []
    if len(parts) != 2 or parts[0] != folder or parts[1] in ("", ".", "..") or "\\" in name \
            or ":" in name or "\x00" in name:
        raise CarprobeError(f"{source}: file name {name!r} is not inside the render set's {folder}/ folder; "
                            f"only names like {folder}/000017.png are allowed (a damaged or planted file; "
                            "remove that line, or the file)")
    return name


def completed_indices(root: Path) -> dict[int, dict[str, Any]]:
    """Journaled indices whose image (and mask) files exist."""
    root = Path(root)
    done = {}
    for index, entry in journal_entries(root).items():
        files = [entry.get("file_name", "")] + ([_entry_mask(entry)] if _entry_mask(entry) else [])
        if files[0] and all((root / f).is_file() for f in files):
            done[index] = entry
    return done


def remove_stray_temp_files(root: Path, indices: Iterable[int] | None = None) -> int:
    """Delete temporary files left by a killed process: every one in the set, and every
    process's renderer scratch space (when `indices` is None: only the job owning the folder,
    under its lock), else only the images and masks of `indices` (other workers of the same job
    may be writing theirs right now)."""
    root = Path(root)
    wanted = None if indices is None else {f"{i:06d}" for i in indices}
    removed = 0
    for name in _TEMP_FOLDERS if wanted is None else ("images", "masks"):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            match = _TMP_NAME.match(path.name)
            if match and path.is_file() and (wanted is None or match.group(1) in wanted):
                path.unlink(missing_ok=True)
                removed += 1
    if wanted is None and (root / SCRATCH_DIR).is_dir():
        for path in (root / SCRATCH_DIR).iterdir():
            if not path.name.startswith(f"{os.getpid()}-"):  # this process's may still be in use
                shutil.rmtree(path, ignore_errors=True)
    return removed


def scratch_dir(root: Path) -> Path:
    """A new scratch folder of this process inside the set, removed when the process exits (and
    by the owner's cleanup after a kill, so a killed process leaks nothing outside the set)."""
    path = Path(root) / SCRATCH_DIR / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    atexit.register(_remove_scratch, path)
    return path


def _remove_scratch(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    try:
        path.parent.rmdir()  # the set's scratch folder, once no process uses it
    except OSError:
        pass


# --- the output folder -----------------------------------------------------------------

def folder_marker(root: Path) -> dict[str, Any] | None:
    """What a folder belongs to (its marker, else a carprobe dataset.json); None when it has
    neither, i.e. it is not a carprobe render set."""
    root = Path(root)
    for name in (MARKER, DATASET_JSON):
        path = root / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("spec_hash"), str):
            return data
        if name == MARKER:
            raise CarprobeError(f"{path}: unreadable render-set file; delete {root} to start over "
                                "or restore the file")
    return None


# A file parameter is read only when one of these factors can take the value that uses it.
_FILE_USED_WHEN = {"car.model_file": (("car.body", "model"),),
                   "lighting.hdri": (("lighting.kind", "hdri"), ("background.kind", "hdri")),
                   "background.image": (("background.kind", "image"),)}


def input_files(spec: Spec) -> dict[str, dict[str, str]]:
    """The sha256 of every file a spec reads (car models, HDRIs, background images), by parameter
    and value as written: a set is the same dataset only while these files stay the same."""
    def used(path: str) -> bool:
        gates = _FILE_USED_WHEN.get(path)
        return gates is None or any(not spec.factors[factor].possible_values  # no finite set: maybe
                                    or value in spec.factors[factor].possible_values for factor, value in gates)

    files: dict[str, dict[str, str]] = {}
    for p in schema.PARAMS:
        if p.kind != "path" or not used(p.path):
            continue
        values = spec.factors[p.path].possible_values if p.factor else (spec.settings[p.path],)
        for value in values:
            path = spec.resolve_file(p.path, value) if isinstance(value, str) else None
            if path is not None:
                files.setdefault(p.path, {})[value] = _sha256(path)
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _shard_info(shard: tuple[int, int] | None) -> dict[str, int] | None:
    # Shard k of n (1-based) holds every n-th index from k-1 (see core/shard.py).
    return None if shard is None else {"k": shard[0], "n": shard[1]}


def _shard_text(info: dict[str, int] | None) -> str:
    return "no shard (every sample)" if info is None else f"shard {info['k']}/{info['n']}"


def prepare_folder(spec: Spec, root: Path, *, shard: tuple[int, int] | None = None,
                   files: dict | None = None, check_inputs: bool = True) -> None:
    """Create the folder layout, or check that an existing folder belongs to this spec, shard and
    (check_inputs) input files: `files` as input_files gives them, computed when None. An empty
    folder is used; anything else without carprobe's marker is refused. The marker is written
    first, so a folder with images always has one."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise CarprobeError(f"output {root} exists and is not a folder; choose another --out")
    marker = folder_marker(root) if root.is_dir() else None
    if marker is None and root.is_dir():
        _refuse_foreign(root)
    if marker is not None:
        _check_marker(marker, spec, root, shard, files, check_inputs)
    (root / JOURNAL_DIR).mkdir(parents=True, exist_ok=True)
    if marker is None:
        marker = {"format": FORMAT, "spec_hash": spec.hash, "spec": spec.resolved(),
                  "shard": _shard_info(shard), "files": input_files(spec) if files is None else files}
        atomic_write_text(root / MARKER, json.dumps(marker, indent=1, sort_keys=True) + "\n")
    (root / "images").mkdir(exist_ok=True)
    if spec.settings["render.masks"]:
        (root / "masks").mkdir(exist_ok=True)


def _check_marker(marker: dict[str, Any], spec: Spec, root: Path, shard: tuple[int, int] | None,
                  files: dict | None, check_inputs: bool) -> None:
    existing = marker["spec_hash"]
    if existing != spec.hash:
        raise CarprobeError(
            f"output {root} holds a render set of a different spec (spec hash {existing[:12]}, this spec "
            f"{spec.hash[:12]}); resuming would mix two datasets. Render into a new folder, or delete "
            f"{root} to start over with this spec")
    if "shard" in marker and marker["shard"] != _shard_info(shard):  # sets of older versions have none
        raise CarprobeError(
            f"output {root} holds {_shard_text(marker['shard'])} of this spec; this run is "
            f"{_shard_text(_shard_info(shard))}. Render each shard into its own folder and join them "
            "with `carprobe merge`")
    if check_inputs and isinstance(marker.get("files"), dict):  # sets of older versions have none
        _check_same_files(marker["files"], input_files(spec) if files is None else files, f"output {root}")


def _check_same_files(before: dict, now: dict, where: str) -> None:
    for param in sorted(set(before) | set(now)):
        old, new = before.get(param, {}), now.get(param, {})
        for value in sorted(set(old) & set(new)):
            if old[value] != new[value]:
                raise CarprobeError(
                    f"{where} was rendered from a different {param} = {value!r}: the file changed since "
                    f"(sha256 {old[value][:12]} then, {new[value][:12]} now); resuming would mix two "
                    "datasets. Restore the file, or render into a new folder")


class FolderClaim:
    """The one job that owns a render-set folder while it runs (a render, its worker processes,
    a merge). Taking it prepares the folder (prepare_folder), takes an exclusive lock (a second
    job is refused with a CarprobeError naming the lock file) and deletes every temporary file a
    killed process left. `release()` frees the lock; `discard_if_unused()` first puts a folder
    that held no render set back as it was found, if no image got into it."""

    def __init__(self, spec: Spec, root: str | Path, *, shard: tuple[int, int] | None = None,
                 files: dict | None = None):
        self.root = root = Path(root)
        if root.exists() and not root.is_dir():
            raise CarprobeError(f"output {root} exists and is not a folder; choose another --out")
        self.created_root = not root.exists()
        if not self.created_root and folder_marker(root) is None:
            _refuse_foreign(root)  # before creating anything in it
        self._lock = None
        try:
            (root / STATE_DIR).mkdir(parents=True, exist_ok=True)
            self._lock = _acquire_lock(root)
            self.new = folder_marker(root) is None
            prepare_folder(spec, root, shard=shard, files=files)
            remove_stray_temp_files(root)
        except BaseException as exc:
            if self._lock is not None:
                self.discard_if_unused()
                self.release()
            elif self.created_root and isinstance(exc, OSError):
                for folder in (root / STATE_DIR, root):  # only if still empty: never another job's
                    try:
                        folder.rmdir()
                    except OSError:
                        pass
            if isinstance(exc, OSError):
                _raise_disk_full(exc, root, len(completed_indices(root)) if root.is_dir() else 0)
            raise

    def discard_if_unused(self) -> bool:
        """Remove what this job created when the folder held no render set before and still has
        no complete image (a run that failed or stopped before its first image). True if removed."""
        if self._lock is None or not self.new or journal_entries(self.root):
            return False
        if self.created_root:
            shutil.rmtree(self.root, ignore_errors=True)
        else:  # the folder was empty (or held only an unused state folder)
            for entry in self.root.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        return True

    def release(self) -> None:
        if self._lock is not None:
            _release_lock(self._lock)
            self._lock = None


def _refuse_foreign(root: Path) -> None:
    foreign = sorted(p.name for p in root.iterdir() if p.name != STATE_DIR)
    if foreign:
        raise CarprobeError(f"output {root} is not empty and is not a carprobe render set (it holds "
                            f"{', '.join(foreign[:5])} but no {MARKER} or carprobe {DATASET_JSON}); "
                            "choose an empty or new folder")


def _acquire_lock(root: Path):
    path = root / LOCK_FILE
    handle = open(path, "a+", encoding="utf-8")
    try:
        _lock_file(handle)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise CarprobeError(f"output {root} is in use by another carprobe job ({holder}; lock file {path}); "
                            "wait for it to finish, or render into another folder") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle


def _lock_file(handle) -> None:
    """An exclusive, non-blocking lock that the OS frees when the process dies (OSError if held)."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _release_lock(handle) -> None:
    try:
        try:
            import fcntl
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        except ImportError:
            import msvcrt
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    except OSError:
        pass  # closing the file frees it anyway
    handle.close()


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
                 finalize: bool = True, progress_stream=None, owner: bool | None = None):
        self.spec, self.root, self.render_image = spec, Path(out_dir), render_image
        self.blender_version, self.shard, self.finalize = blender_version, shard, finalize
        self.total = sample_count(spec)
        wanted = list(dict.fromkeys(range(self.total) if indices is None else indices))
        bad = [i for i in wanted if not isinstance(i, int) or not 0 <= i < self.total]
        if bad:
            raise CarprobeError(f"sample indices {bad[:5]} out of range: spec {spec.name!r} has {self.total} "
                                f"samples (0..{self.total - 1})")
        self._claim = None
        try:
            if finalize if owner is None else owner:
                self._claim = FolderClaim(spec, self.root, shard=shard)
            else:
                prepare_folder(spec, self.root, shard=shard, check_inputs=False)
                remove_stray_temp_files(self.root, wanted)
        except OSError as exc:
            _raise_disk_full(exc, self.root, 0)
            raise
        try:
            done = completed_indices(self.root)
        except BaseException:
            self._release(discard=True)
            self._release()
            raise
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
                self._journal.commit_in_background()
        except OSError as exc:
            self._commit_complete()
            _raise_disk_full(exc, self.root, len(completed_indices(self.root)))
            raise
        except DamagedImage as exc:
            self._commit_complete()
            raise CarprobeError(
                f"render: sample {index} came out damaged ({exc}), so it was not kept; "
                f"{len(completed_indices(self.root))} complete images are kept. {_space_hint(self.root)}"
                "Rerun the same command to resume") from None
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
        try:
            if self.finalize and not self._release(discard=True):
                write_index_files(self.spec, self.root, blender_version=self.blender_version, shard=self.shard)
        except OSError:
            pass  # e.g. still no space: the previous index files stay intact (atomic writes)
        finally:
            self._release()

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
        try:
            if self.pending and self._release(discard=True):  # cancelled before its first image
                complete = 0
            elif self.finalize:
                complete = write_index_files(self.spec, self.root, blender_version=self.blender_version,
                                             shard=self.shard)
            else:
                complete = len(completed_indices(self.root))
        except OSError as exc:
            _raise_disk_full(exc, self.root, len(completed_indices(self.root)))
            raise
        finally:
            self._release()
        return RenderResult(rendered=self.rendered, skipped=self.skipped, complete=complete, total=self.total)

    def _release(self, discard: bool = False) -> bool:
        """Free the folder; with discard, first put a folder that held no render set back as it
        was, if no image got into it (True when it did)."""
        if self._claim is None:
            return False
        if discard:
            return self._claim.discard_if_unused()
        self._claim.release()
        return False


def render_samples(spec: Spec, out_dir: str | Path, render_image: RenderImage,
                   indices: Iterable[int] | None = None, progress: bool = True, *,
                   blender_version: str | None = None, shard: tuple[int, int] | None = None,
                   finalize: bool = True, progress_stream=None, owner: bool | None = None,
                   stop_requested: Callable[[], bool] | None = None) -> RenderResult:
    """Render `indices` (default: every sample) of `spec` into `out_dir`; resumes.

    ``render_image(row, image_path, mask_path_or_None)`` must write the image (and the mask,
    when a path is given) to exactly those temporary paths; they end in the real file suffix.
    It may return {"bbox": box or None}, the car's box in the mask (core.mask_box), which
    spares the loop reading the mask back for it.
    Indices already complete are skipped. metadata.csv and dataset.json are rewritten at the
    end and whenever the loop stops early (finalize=False leaves that to the caller, e.g. a
    parent process of several workers). Disk full raises CarprobeError; completed work is kept.
    ``stop_requested()`` is asked before each image (core.interrupt): when true, the loop stops
    as on Ctrl-C (KeyboardInterrupt), keeping every complete image.
    owner (default: finalize) makes this call own the folder for its duration (FolderClaim:
    locked, leftovers cleaned); owner=False is a worker of a job that owns it.
    """
    loop = RenderLoop(spec, out_dir, render_image, indices, progress, blender_version=blender_version,
                      shard=shard, finalize=finalize, progress_stream=progress_stream, owner=owner)
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
    mask = root / row["mask_file_name"] if row["mask_file_name"] else None
    tmp_image = temp_path(image)
    tmp_mask = temp_path(mask) if mask is not None else None
    files = [(tmp_image, image)] + ([(tmp_mask, mask)] if mask is not None else [])
    try:
        rendered = render_image(row, tmp_image, tmp_mask)
        for tmp, final in files:
            if not tmp.is_file():
                raise RuntimeError(f"the renderer wrote no file {tmp} for {final.name} (sample {row['index']})")
            try:
                finish_image(tmp)  # a full disk can give a short file without an error; drop date stamps
            except DamagedImage as exc:
                raise DamagedImage(f"{final.relative_to(root).as_posix()}: {exc}") from None
    except BaseException:
        for tmp, _ in files:
            tmp.unlink(missing_ok=True)
        raise
    known = isinstance(rendered, dict) and "bbox" in rendered and tmp_mask is not None
    bbox = rendered["bbox"] if known else _bbox_of(tmp_mask)  # the renderer's: no second decode of the mask
    journal.add(row["index"], row["file_name"], row["mask_file_name"], files, bbox=bbox)


def _bbox_of(mask: Path | None):
    """The car's box in a mask file (None without a mask, a car pixel or a readable mask)."""
    if mask is None:
        return None
    try:
        return mask_bbox(mask)
    except (OSError, ValueError, zlib.error):
        return None


def _space_hint(root: Path) -> str:
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return ""
    return f"The disk of {root} has {free / 2**20:.1f} MiB free; if it is full, free some space. "


def _raise_disk_full(exc: OSError, root: Path, complete: int) -> None:
    # EFBIG: a file-size limit (ulimit -f, quotas on some file systems) hit like a full disk
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
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
    done = completed_indices(root)
    complete = sorted(i for i in done if i < total)
    columns = metadata_columns(spec)
    buffer, jsonl = io.StringIO(), io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    masks = 0
    for index in complete:
        row = sample_row(spec, index)
        masks += bool(row["mask_file_name"])
        entry = done[index]
        bbox = entry["bbox"] if "bbox" in entry else _bbox_of(root / row["mask_file_name"] if row["mask_file_name"]
                                                              else None)
        row.update(zip(BBOX_COLUMNS, bbox or (None,) * 4))
        writer.writerow([row[c] for c in columns])  # str(float) is the shortest exact repr; None → ""
        jsonl.write(json.dumps(_json_row(row, columns)) + "\n")
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
        "column_types": column_types(),
        "shard": _shard_info(shard),
        # sha256 of every input file (car models, HDRIs, background images), from the marker
        "files": (folder_marker(root) or {}).get("files", {}),
    }
    atomic_write_text(root / METADATA_CSV, buffer.getvalue())
    atomic_write_text(root / METADATA_JSONL, jsonl.getvalue())
    atomic_write_text(root / DATASET_CARD, dataset_card(spec.name))
    atomic_write_text(root / DATASET_JSON, json.dumps(info, indent=1, sort_keys=False) + "\n")
    return len(complete)


def _json_row(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """A metadata row with real types: matrices as nested lists, empty values as null."""
    out = {}
    for column in columns:
        value = row[column]
        if column in LIST_COLUMNS:
            value = json.loads(value)
        elif value == "" and column not in NEVER_EMPTY:
            value = None
        out[column] = value
    return out


_HF_TYPES = {"string": "string", "int64": "int64", "float64": "float64", "bool": "bool"}


def hf_features() -> list[dict[str, Any]]:
    """The Hugging Face `features` of metadata.hf.jsonl as loaded by imagefolder, in the card's
    YAML form: file_name becomes the `image` column and mask_file_name the `mask` column."""
    features = []
    for column, kind in column_types().items():
        if column == "file_name":
            features.append({"name": "image", "dtype": "image"})
        elif column == "mask_file_name":
            features.append({"name": "mask", "dtype": "image"})
        elif column in LIST_COLUMNS:
            feature: Any = "float64"
            for length in reversed(LIST_COLUMNS[column]):
                feature = {"list": feature, "length": length}  # HF reads the first key as the type
            features.append({"name": column, **feature})
        else:
            features.append({"name": column, "dtype": _HF_TYPES[kind]})
    return features


def dataset_card(name: str) -> str:
    """README.md of a render set: a Hugging Face dataset card whose YAML header makes
    `datasets.load_dataset(SET)` read metadata.hf.jsonl with fixed features, so every set of one
    format version has the same features (sets concatenate) and masks load as images."""
    def yaml_value(value: Any, indent: int) -> str:
        if isinstance(value, dict):
            pad = " " * indent
            return "".join(f"\n{pad}{k}: {yaml_value(v, indent + 2).lstrip(' ')}" if isinstance(v, dict)
                           else f"\n{pad}{k}: {json.dumps(v)}" for k, v in value.items())
        return json.dumps(value)

    lines = ["---", "configs:", "- config_name: default", "  data_files:", "  - split: train", "    path:",
             "    - images/*", f"    - {METADATA_JSONL}", "  metadata_filenames:", f"  - {METADATA_JSONL}",
             "  drop_labels: true", "  features:"]
    for feature in hf_features():
        first, *rest = feature.items()
        lines.append(f"  - {first[0]}: {json.dumps(first[1])}")
        for key, value in rest:
            lines.append(f"    {key}: {json.dumps(value)}" if not isinstance(value, dict)
                         else f"    {key}:{yaml_value(value, 6)}")
    lines += ["---", "", f"# {name}", "",
              "A carprobe render set. `datasets.load_dataset(\"path/to/this/folder\")` reads it with the "
              "features above (images and part masks as image columns); pandas reads `metadata.csv`, "
              "whose column types are in `dataset.json` (`column_types`).", ""]
    return "\n".join(lines)


def _previous_info(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / DATASET_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def finalize(spec: Spec, out_dir: str | Path, *, blender_version: str | None = None,
             shard: tuple[int, int] | None = None) -> int:
    """Clean up after every writer of a folder has stopped, then rewrite the index files."""
    root = Path(out_dir)
    try:
        remove_stray_temp_files(root)
        return write_index_files(spec, root, blender_version=blender_version, shard=shard)
    except OSError as exc:
        _raise_disk_full(exc, root, len(completed_indices(root)))
        raise


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
REQUIRED_COLUMNS = ("file_name", "index", "mask_file_name")
LEGACY_COLUMNS = {"mask_file": "mask_file_name"}  # format version 1


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
    header = reader.fieldnames = [LEGACY_COLUMNS.get(c, c) for c in header]
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
        check_member(typed.get("file_name"), "images", f"{path}, line {line}")
        check_member(typed.get("mask_file_name", ""), "masks", f"{path}, line {line}", allow_empty=True)
        rows.append(typed)
    return rows


_COLUMN_TYPES = column_types()


def _typed_row(row: dict[str, str]) -> dict[str, Any]:
    """metadata.csv strings → the types sample_row gives (matrices stay JSON text; an empty
    measured value, e.g. a box without a mask, is None)."""
    out: dict[str, Any] = {}
    for column, text in row.items():
        if column is None or text is None:  # csv.DictReader: more or fewer fields than the header
            raise ValueError("the number of fields differs from the header's")
        kind = _COLUMN_TYPES.get(column, "string")
        try:
            if kind in ("int64", "float64") and text == "" and column not in NEVER_EMPTY:
                out[column] = None
            elif kind == "int64":
                out[column] = int(text)
            elif kind == "float64":
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

    Refuses parts of different specs or input files, damaged images, and an index that several
    parts hold with different metadata rows; an index present in several parts is taken once.
    """
    parts = [Path(p) for p in parts]
    root = Path(out)
    if not parts:
        raise CarprobeError("merge: give at least one render-set part")
    markers = {}
    for part in parts:
        if not part.is_dir():
            raise CarprobeError(f"merge: part {part} is not a folder")
        if part.resolve() == root.resolve():
            raise CarprobeError(f"merge: the output {root} is also a part; choose a new --out")
        found = folder_marker(part)
        if found is None:
            raise CarprobeError(f"merge: part {part} is not a carprobe render set (no {DATASET_JSON})")
        markers[part] = found
    if len({m["spec_hash"] for m in markers.values()}) > 1:
        listing = "; ".join(f"{p}: {m['spec_hash'][:12]}" for p, m in markers.items())
        raise CarprobeError(f"merge: the parts come from different specs (spec hashes {listing}); "
                            "only shards of one spec can be merged")
    first = parts[0]
    files = markers[first].get("files") or {}
    for part in parts[1:]:
        _check_same_files(files, markers[part].get("files") or {}, f"merge: part {part} (unlike {first})")
    stored = _previous_info(first) or markers[first]
    spec = spec_from_info(stored, source=str(first))
    blender_version = next((v for v in (_previous_info(p).get("blender_version") for p in parts) if v), None)
    entries = {part: completed_indices(part) for part in parts}
    _check_overlapping_rows(parts, entries)
    try:
        claim = FolderClaim(spec, root, files=files)
    except OSError as exc:
        _raise_disk_full(exc, root, 0)
        raise
    try:
        done = set(completed_indices(root))
        journal = Journal(root)
        try:
            for part in parts:
                todo = sorted(i for i in entries[part] if i not in done)
                bar = Progress(len(todo), label=f"merge {part.name}", enabled=progress)
                for index in todo:
                    entry, row = entries[part][index], sample_row(spec, index)
                    names = [entry["file_name"], _entry_mask(entry)]
                    if names != [row["file_name"], row["mask_file_name"]]:
                        raise CarprobeError(f"merge: part {part} lists sample {index} as {names}; this spec "
                                            f"names it {[row['file_name'], row['mask_file_name']]}")
                    for name in filter(None, names):
                        try:
                            check_image(part / name)
                        except DamagedImage as exc:
                            raise CarprobeError(f"merge: part {part}: {name} is damaged ({exc}); rerender that "
                                                "part (delete the file and rerun its render command)") from None
                        _copy_atomic(part / name, root / name)
                    bbox = entry["bbox"] if "bbox" in entry else _bbox_of(root / names[1] if names[1] else None)
                    journal.append(index, *names, bbox)
                    done.add(index)
                    bar.update()
                bar.close()
        finally:
            journal.close()
        write_index_files(spec, root, blender_version=blender_version, shard=None)
    except OSError as exc:
        claim.discard_if_unused()
        _raise_disk_full(exc, root, len(completed_indices(root)) if root.is_dir() else 0)
        raise
    except BaseException:
        claim.discard_if_unused()
        raise
    finally:
        claim.release()
    return read_render_set(root)


def _check_overlapping_rows(parts: list[Path], entries: dict[Path, dict]) -> None:
    """An index held by several parts must have the same metadata row in each (columns both
    have): otherwise they are not shards of one dataset."""
    holders: dict[int, list[Path]] = {}
    for part in parts:
        for index in entries[part]:
            holders.setdefault(index, []).append(part)
    shared = {i for i, held in holders.items() if len(held) > 1}
    if not shared:
        return
    rows = {part: _raw_rows(part, shared) for part in parts}
    for index in sorted(shared):
        found = [(part, rows[part][index]) for part in holders[index] if index in rows[part]]
        for (part_a, a), (part_b, b) in zip(found, found[1:]):
            differ = [c for c in a if c in b and a[c] != b[c]]
            if differ:
                raise CarprobeError(
                    f"merge: sample {index} is in {part_a} and {part_b} with different metadata ({', '.join(differ[:5])}: "
                    f"{a[differ[0]]!r} vs {b[differ[0]]!r}); these parts are not shards of one dataset")


def _raw_rows(part: Path, indices: set[int]) -> dict[int, dict[str, str]]:
    """metadata.csv rows of `indices` as written (a part stopped by kill -9 may have none)."""
    path = part / METADATA_CSV
    if not path.is_file():
        return {}
    rows = {}
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        for row in csv.DictReader(handle):
            try:
                index = int(row.get("index") or "")
            except ValueError:
                continue
            if index in indices:
                rows[index] = row
    return rows


def _copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        shutil.copyfile(source, tmp)
        _fsync_file(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
