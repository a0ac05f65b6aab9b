"""Annotation formats: from the files datasets ship to a list of labelled videos.

Four formats are read, each exactly as its dataset publishes it:

* ``"list"``: one video per line, ``relative/path label`` with the label a 0-based index or a
  class name (MMAction2's video lists), or ``relative/folder num_frames label`` (MMAction2's
  rawframes lists, as written by ``lgdnet extract-frames``). ``#`` comments and blank lines
  are ignored. A path with spaces is quoted (``"my video.avi" 3``), or the fields are
  separated by tabs, or it is written as is when that file exists under the root. Class names come from ``classes=``, else from a ``classes.txt`` beside the
  list, else they are derived (sorted names, or ``"0".."K-1"`` for index labels).
* ``"kinetics"``: the Kinetics-400/600 CSV (``label,youtube_id,time_start,time_end,split``
  with a header; extra columns such as ``is_cc`` are ignored). Files are named
  ``{youtube_id}_{start:06d}_{end:06d}.mp4`` and found flat in ``root`` or in
  ``root/<label>/`` (also with the label's spaces replaced by underscores). Classes are the
  labels sorted alphabetically, the convention every published Kinetics model uses.
* ``"ucf101"``: the ``ucfTrainTestlist`` folder: ``classInd.txt`` (``1 ApplyEyeMakeup``),
  ``trainlist0N.txt`` (``Class/v_x.avi 1``, 1-based labels) and ``testlist0N.txt`` (no label:
  it comes from the folder name through ``classInd.txt``). ``subset="val"`` reads the test list.
* ``"hmdb51"``: the ``testTrainMulti_7030_splits`` folder of ``<class>_test_split<N>.txt``
  files, lines ``video.avi F`` with F = 1 train, 2 test, 0 unused; classes are the sorted
  class names; videos live in ``root/<class>/video.avi``.

Every malformed line raises :class:`~lgdnet.errors.AnnotationError` naming the file and line;
with ``errors="collect"`` the bad lines are skipped and gathered in ``Annotations.errors``
instead, which is what ``lgdnet check-data`` uses to report them all at once.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lgdnet.errors import AnnotationError

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
FORMATS = ("auto", "list", "kinetics", "ucf101", "hmdb51")
Errors = Literal["raise", "collect"]


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video: a file, or a frame folder when ``num_frames`` is known."""

    path: str
    label: int
    video_id: str
    num_frames: int | None = None


@dataclass
class Annotations:
    """The videos of one subset of one split, with the class list that gives labels names.

    ``origins[i]`` says where ``records[i]`` came from (``"file:line"``); ``errors`` holds
    the malformed lines skipped under ``errors="collect"`` (always empty under ``"raise"``).
    """

    records: list[VideoRecord]
    classes: list[str]
    source: str
    origins: list[str] = field(default_factory=list)
    errors: list[AnnotationError] = field(default_factory=list)


class _Collector:
    """Raises a line error at once, or keeps it, as ``errors=`` asks."""

    def __init__(self, mode: str) -> None:
        if mode not in ("raise", "collect"):
            raise ValueError(f"errors must be 'raise' or 'collect', not {mode!r}")
        self.mode = mode
        self.errors: list[AnnotationError] = []

    def add(self, error: AnnotationError) -> None:
        if self.mode == "raise":
            raise error
        self.errors.append(error)


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based number, stripped text) of each non-blank, non-comment line."""
    try:
        # utf-8-sig drops a byte-order mark; the official UCF101 lists end lines in CRLF,
        # which strip() removes.
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as error:
        raise AnnotationError(path, None, f"cannot read: {error.strerror or error}") from None
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append((number, line))
    return lines


def save_classes(path: str | os.PathLike, classes: list[str]) -> None:
    """Write class names one per line, in label order (the ``classes.txt`` format)."""
    from lgdnet.atomic import write_text

    write_text(path, "".join(f"{name}\n" for name in classes))


def load_classes(path: str | os.PathLike) -> list[str]:
    """Read class names: one per line, or ``index name`` lines numbered 0.. or 1.. in order
    (UCF101's ``classInd.txt``)."""
    path = Path(path)
    lines = _read_lines(path)
    if not lines:
        raise AnnotationError(path, None, "no class names in the file")
    indexed = [re.fullmatch(r"(\d+)\s+(.+)", text) for _, text in lines]
    if all(indexed):
        first = int(indexed[0].group(1))
        expected = list(range(first, first + len(lines)))
        if first in (0, 1) and [int(m.group(1)) for m in indexed] == expected:
            names = [m.group(2).strip() for m in indexed]
        else:
            names = [text for _, text in lines]
    else:
        names = [text for _, text in lines]
    seen: dict[str, int] = {}
    for (number, _), name in zip(lines, names):
        if name in seen:
            raise AnnotationError(path, number, f"class {name!r} repeats line {seen[name]}")
        seen[name] = number
    return names


def _as_class_list(classes: list[str] | str | os.PathLike | None) -> list[str] | None:
    if classes is None or isinstance(classes, list | tuple):
        return list(classes) if classes is not None else None
    return load_classes(classes)


def _resolve(root: Path, relative: str) -> str:
    return os.fspath(root / relative)


def _strip_extension(relative: str) -> str:
    stem, extension = os.path.splitext(relative)
    return stem if extension.lower() in VIDEO_EXTENSIONS else relative


# ------------------------------------------------------------------------------------ list
def _list_fields(text: str, root: Path) -> list[str]:
    """The fields of a list line. Paths may hold spaces: fields separated by tabs, a quoted
    path (``"my video.avi" 3``), or an unquoted path that exists under ``root`` as written
    (``my video.avi 3``).

    Raises:
        ValueError: an unbalanced quote.
    """
    if "\t" in text:
        return [field.strip() for field in text.split("\t") if field.strip()]
    if text[0] in "\"'":
        import shlex

        return shlex.split(text)
    fields = text.split()
    if len(fields) > 3:  # a path with spaces, unquoted: take it when it exists as written
        for count in (1, 2):
            head, *tail = text.rsplit(None, count)
            if (root / head).exists() and (count == 1 or re.fullmatch(r"\d+", tail[0])):
                return [head, *tail]
    return fields


def _load_list(path: Path, root: Path, classes: list[str] | None, sink: _Collector) -> Annotations:
    if classes is None and (path.parent / "classes.txt").is_file():
        classes = load_classes(path.parent / "classes.txt")
    parsed: list[tuple[int, str, int | None, str]] = []  # line, path, num_frames, label token
    for number, text in _read_lines(path):
        try:
            fields = _list_fields(text, root)
        except ValueError as error:
            sink.add(AnnotationError(path, number, f"cannot split the line: {error}"))
            continue
        if len(fields) not in (2, 3):
            sink.add(AnnotationError(
                path, number, f"expected 'path label' or 'path num_frames label', got "
                f"{len(fields)} fields (a path with spaces must be quoted, \"my video.avi\" 3, "
                "or its fields separated by tabs)"))
            continue
        num_frames = None
        if len(fields) == 3:
            if not re.fullmatch(r"\d+", fields[1]):
                sink.add(AnnotationError(path, number, f"num_frames {fields[1]!r} is not a non-negative integer"))
                continue
            num_frames = int(fields[1])
        parsed.append((number, fields[0], num_frames, fields[-1]))

    def is_index(token: str) -> bool:
        return re.fullmatch(r"-?\d+", token) is not None

    def is_number(token: str) -> bool:
        return re.fullmatch(r"-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", token) is not None

    if classes is None:
        # No class list: derive it, from index labels or from names, never from a mix.
        index_tokens = [t for *_, t in parsed if is_index(t)]
        names = sorted({t for *_, t in parsed if not is_number(t)})
        if names:  # index labels beside names then index the sorted names
            classes = names
        else:
            top = max((int(t) for t in index_tokens), default=-1)
            classes = [str(i) for i in range(top + 1)]
    lookup = {name: i for i, name in enumerate(classes)}
    records, origins = [], []
    for number, relative, num_frames, token in parsed:
        if is_index(token):
            label = int(token)
            if not 0 <= label < len(classes):
                sink.add(AnnotationError(path, number, f"label {label} is out of range for {len(classes)} classes"))
                continue
        elif is_number(token):
            sink.add(AnnotationError(path, number, f"label {token!r} is not an integer"))
            continue
        elif token in lookup:
            label = lookup[token]
        else:
            sink.add(AnnotationError(path, number, f"unknown class name {token!r}"))
            continue
        video_id = relative.rstrip("/") if num_frames is not None else _strip_extension(relative)
        records.append(VideoRecord(_resolve(root, relative), label, video_id, num_frames))
        origins.append(f"{path}:{number}")
    return Annotations(records, classes, os.fspath(path), origins)


# -------------------------------------------------------------------------------- kinetics
def _index_videos(root: Path) -> dict[str, list[Path]]:
    """Map a file stem to the videos of that stem in ``root`` and its direct sub-folders.

    One directory scan replaces hundreds of thousands of existence checks on Kinetics.
    """
    index: dict[str, list[Path]] = {}
    if not root.is_dir():
        return index
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    for folder in folders:
        for entry in os.scandir(folder):
            stem, extension = os.path.splitext(entry.name)
            if extension.lower() in VIDEO_EXTENSIONS and entry.is_file():
                index.setdefault(stem, []).append(Path(entry.path))
    return index


def _load_kinetics(path: Path, root: Path, subset: str, classes: list[str] | None, sink: _Collector) -> Annotations:
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as error:
        raise AnnotationError(path, None, f"cannot read: {error.strerror or error}") from None
    if not rows:
        raise AnnotationError(path, None, "empty file (expected a header line)")
    header = [name.strip() for name in rows[0]]
    missing = [c for c in ("label", "youtube_id", "time_start", "time_end") if c not in header]
    if missing:
        raise AnnotationError(path, 1, f"header lacks column(s) {', '.join(missing)}: {rows[0]}")
    column = {name: i for i, name in enumerate(header)}
    entries = []  # line, label name, file stem, split
    for number, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != len(header):
            sink.add(AnnotationError(path, number, f"expected {len(header)} fields, got {len(row)}"))
            continue
        times = []
        for name in ("time_start", "time_end"):
            try:
                value = float(row[column[name]])
            except ValueError:
                value = float("nan")
            if not value.is_integer() or value < 0:
                sink.add(AnnotationError(path, number, f"{name} {row[column[name]]!r} is not a whole number of seconds"))
                break
            times.append(int(value))
        if len(times) != 2:
            continue
        stem = f"{row[column['youtube_id']].strip()}_{times[0]:06d}_{times[1]:06d}"
        split = row[column["split"]].strip() if "split" in column else subset
        entries.append((number, row[column["label"]].strip(), stem, split))
    if classes is None:
        classes = sorted({label for _, label, _, _ in entries})
    splits = sorted({split for *_, split in entries})
    chosen = [entry for entry in entries if entry[3] == subset]
    if entries and not chosen:
        raise AnnotationError(path, None, f"no rows with split {subset!r} (the file holds {', '.join(splits)}); pass subset= one of those")
    lookup = {name: i for i, name in enumerate(classes)}
    index = _index_videos(root)
    records, origins = [], []
    for number, label_name, stem, _ in chosen:
        if label_name not in lookup:
            sink.add(AnnotationError(path, number, f"unknown class name {label_name!r}"))
            continue
        folders = {label_name, label_name.replace(" ", "_")}
        found = index.get(stem, [])
        in_class_folder = [p for p in found if p.parent != root and p.parent.name in folders]
        flat = [p for p in found if p.parent == root]
        chosen_path = (in_class_folder or flat or found or [root / f"{stem}.mp4"])[0]
        records.append(VideoRecord(os.fspath(chosen_path), lookup[label_name], stem))
        origins.append(f"{path}:{number}")
    return Annotations(records, classes, os.fspath(path), origins)


# ---------------------------------------------------------------------------------- UCF101
def _load_ucf101(path: Path, root: Path, split: int, subset: str, classes: list[str] | None, sink: _Collector) -> Annotations:
    if path.is_file():  # a trainlist0N.txt / testlist0N.txt given directly
        match = re.fullmatch(r"(train|test)list0*(\d+)\.txt", path.name)
        if match is None:
            raise AnnotationError(path, None, "expected the UCF101 splits folder or a trainlist0N.txt/testlist0N.txt file")
        subset, split, folder = match.group(1), int(match.group(2)), path.parent
    else:
        folder = path
        if split < 1:
            raise AnnotationError(folder, None, f"bad split number {split} (UCF101 has splits 1, 2, 3)")
    class_file = folder / "classInd.txt"
    if not class_file.is_file():
        raise AnnotationError(class_file, None, "missing: the UCF101 splits folder must hold classInd.txt")
    if classes is None:
        classes = load_classes(class_file)
    is_train = subset == "train"
    list_file = folder / f"{'train' if is_train else 'test'}list{split:02d}.txt"
    if not list_file.is_file():
        raise AnnotationError(list_file, None, f"bad split number {split}: no such split file")
    lookup = {name: i for i, name in enumerate(classes)}
    records, origins = [], []
    for number, text in _read_lines(list_file):
        fields = text.split()
        if len(fields) != (2 if is_train else 1):
            sink.add(AnnotationError(list_file, number, f"expected {'path label' if is_train else 'path'}, got {len(fields)} fields"))
            continue
        relative = fields[0]
        class_name = relative.split("/")[0] if "/" in relative else None
        if is_train:
            if not re.fullmatch(r"-?\d+", fields[1]):
                sink.add(AnnotationError(list_file, number, f"label {fields[1]!r} is not an integer"))
                continue
            label = int(fields[1]) - 1  # classInd.txt and the train lists count from 1
            if not 0 <= label < len(classes):
                sink.add(AnnotationError(list_file, number, f"label {label + 1} is out of range 1..{len(classes)}"))
                continue
            if class_name is not None and class_name in lookup and lookup[class_name] != label:
                sink.add(AnnotationError(list_file, number, f"label {label + 1} ({classes[label]}) disagrees with the folder {class_name!r}"))
                continue
        else:
            if class_name not in lookup:
                sink.add(AnnotationError(list_file, number, f"class folder {class_name!r} has no entry in {class_file.name}"))
                continue
            label = lookup[class_name]
        records.append(VideoRecord(_resolve(root, relative), label, _strip_extension(relative)))
        origins.append(f"{list_file}:{number}")
    return Annotations(records, classes, os.fspath(list_file), origins)


# ---------------------------------------------------------------------------------- HMDB51
def _load_hmdb51(folder: Path, root: Path, split: int, subset: str, classes: list[str] | None, sink: _Collector) -> Annotations:
    split_files = {}
    for file in sorted(folder.glob(f"*_test_split{split}.txt")):
        split_files[file.name[: -len(f"_test_split{split}.txt")]] = file
    if not split_files:
        raise AnnotationError(folder, None, f"bad split number {split}: no *_test_split{split}.txt files (HMDB51 has splits 1, 2, 3)")
    if classes is None:
        classes = sorted(split_files)
    lookup = {name: i for i, name in enumerate(classes)}
    wanted = 1 if subset == "train" else 2
    records, origins = [], []
    for class_name, file in split_files.items():
        if class_name not in lookup:
            sink.add(AnnotationError(file, None, f"unknown class name {class_name!r}"))
            continue
        for number, text in _read_lines(file):
            fields = text.split()
            if len(fields) != 2:
                sink.add(AnnotationError(file, number, f"expected 'video flag', got {len(fields)} fields"))
                continue
            if fields[1] not in ("0", "1", "2"):
                sink.add(AnnotationError(file, number, f"flag {fields[1]!r} is not 0 (unused), 1 (train) or 2 (test)"))
                continue
            if int(fields[1]) == wanted:
                relative = f"{class_name}/{fields[0]}"
                records.append(VideoRecord(_resolve(root, relative), lookup[class_name], _strip_extension(relative)))
                origins.append(f"{file}:{number}")
    return Annotations(records, classes, os.fspath(folder), origins)


def detect_format(path: str | os.PathLike) -> str:
    """Guess the annotation format from the path (see :func:`load_annotations`)."""
    path = Path(path)
    if path.is_dir():
        if (path / "classInd.txt").is_file():
            return "ucf101"
        if any(path.glob("*_test_split*.txt")):
            return "hmdb51"
        raise AnnotationError(path, None, "folder is neither a UCF101 (classInd.txt) nor an HMDB51 (*_test_splitN.txt) splits folder")
    if path.suffix.lower() == ".csv":
        return "kinetics"
    if re.fullmatch(r"(train|test)list0*\d+\.txt", path.name) and (path.parent / "classInd.txt").is_file():
        return "ucf101"
    return "list"


def load_annotations(
    path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    format: str = "auto",
    split: int = 1,
    subset: str = "train",
    classes: list[str] | str | os.PathLike | None = None,
    errors: Errors = "raise",
) -> Annotations:
    """Read one subset of one split of a dataset's annotations.

    Args:
        path: the list file, Kinetics CSV, or UCF101/HMDB51 splits folder.
        root: folder the video paths are relative to; defaults to the folder holding the list
            (for UCF101/HMDB51, the splits folder itself).
        format: ``"auto"`` (guessed by :func:`detect_format`), ``"list"``, ``"kinetics"``,
            ``"ucf101"`` or ``"hmdb51"``.
        split: split number for UCF101/HMDB51 (1, 2 or 3).
        subset: ``"train"``, ``"test"`` or ``"val"`` (``"val"`` reads the test lists of
            UCF101/HMDB51 and the ``val`` rows of a Kinetics CSV). Ignored by ``"list"``.
        classes: class names (a list, or a ``classes.txt``/``classInd.txt`` path) that fix
            the label order; by default each format's own convention.
        errors: ``"raise"`` stops at the first malformed line; ``"collect"`` skips such lines
            and returns them in ``Annotations.errors``.

    Returns:
        :class:`Annotations` with resolved paths, 0-based labels and the class list.
    """
    path = Path(path)
    if format not in FORMATS:
        raise AnnotationError(path, None, f"unknown annotation format {format!r} (choose from {', '.join(FORMATS)})")
    if subset not in ("train", "test", "val"):
        raise AnnotationError(path, None, f"subset must be 'train', 'test' or 'val', not {subset!r}")
    if not path.exists():
        raise AnnotationError(path, None, "no such file or folder")
    if format == "auto":
        format = detect_format(path)
    sink = _Collector(errors)
    class_list = _as_class_list(classes)
    base = Path(root) if root is not None else (path if path.is_dir() else path.parent)
    if format == "list":
        result = _load_list(path, base, class_list, sink)
    elif format == "kinetics":
        result = _load_kinetics(path, base, subset, class_list, sink)
    elif format == "ucf101":
        result = _load_ucf101(path, base, split, subset, class_list, sink)
    else:
        if not path.is_dir():
            raise AnnotationError(path, None, "the hmdb51 format expects the splits folder")
        result = _load_hmdb51(path, base, split, subset, class_list, sink)
    result.errors = sink.errors
    return result
