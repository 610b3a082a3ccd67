"""
GLUE tasks: what each TSV looks like, how to read it, and how to fetch it.

    from data import load_glue
    train = load_glue("rte", "train")   # list[Example(text_a, text_b, label)]
    dev = load_glue("rte", "dev")       # downloads data/glue/RTE/ on first use

Files live in `data/glue/<FOLDER>/` (gitignored) unless `data_dir=` names another folder
that holds the task's TSVs. Offline, put the files there yourself (the error says which).

Reading: GLUE TSVs contain unbalanced quote characters, so lines are split on '\t' and
nothing else (no csv quoting), and only the line ending is stripped. Columns are found by
header name; CoLA has no header and is read by position. A row with the wrong number of
columns or an unknown label is an error naming the file and line, except in QQP's train
file, whose few broken rows are skipped with one warning that gives their count.
"""

import contextlib
import dataclasses
import math
import os
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

GLUE_BASE_URL = "https://dl.fbaipublicfiles.com/glue/data"
MRPC_BASE_URL = "https://dl.fbaipublicfiles.com/senteval/senteval_data"
MRPC_DEV_IDS_URL = "https://dl.fbaipublicfiles.com/glue/data/mrpc_dev_ids.tsv"
MRPC_RAW_FILES = ("msr_paraphrase_train.txt", "msr_paraphrase_test.txt", "mrpc_dev_ids.tsv")
DEFAULT_ROOT = Path(__file__).resolve().parent / "glue"  # <repo>/data/glue, the download cache
RTE_SAMPLE_DIR = Path(__file__).resolve().parent / "rte_sample"  # hand-written RTE-format sample


class Example(NamedTuple):
    text_a: str
    text_b: str | None  # None for single-sentence tasks (cola, sst2)
    label: int | float  # index into Task.labels, or the similarity score for stsb


@dataclass(frozen=True)
class Task:
    name: str
    folder: str  # folder name inside the GLUE distribution, e.g. "SST-2"
    text_columns: tuple  # header names; column positions (int) when has_header is False
    label_column: str | int
    labels: tuple | None  # label strings as they appear in the file; None: regression (stsb)
    metrics: tuple  # names in data.metrics.METRICS
    main_metric: str  # the number papers report
    has_header: bool
    splits: dict  # split name -> file name
    zip_name: str | None  # file under GLUE_BASE_URL; None: MRPC, built from Microsoft's files
    num_columns: int | None = None  # expected column count for a headerless file
    skip_malformed: tuple = ()  # splits whose rows of the wrong width are skipped (with a warning)

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


_TRAIN_DEV = {"train": "train.tsv", "dev": "dev.tsv"}
_ENTAIL = ("entailment", "not_entailment")

TASKS = {
    "cola": Task("cola", "CoLA", (3,), 1, ("0", "1"), ("mcc",), "mcc",
                 has_header=False, splits=_TRAIN_DEV, zip_name="CoLA.zip", num_columns=4),
    "sst2": Task("sst2", "SST-2", ("sentence",), "label", ("0", "1"), ("accuracy",), "accuracy",
                 has_header=True, splits=_TRAIN_DEV, zip_name="SST-2.zip"),
    "mrpc": Task("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1"),
                 ("f1", "accuracy"), "accuracy", has_header=True, splits=_TRAIN_DEV, zip_name=None),
    "qqp": Task("qqp", "QQP", ("question1", "question2"), "is_duplicate", ("0", "1"),
                ("f1", "accuracy"), "accuracy", has_header=True, splits=_TRAIN_DEV,
                zip_name="QQP-clean.zip", skip_malformed=("train",)),
    "stsb": Task("stsb", "STS-B", ("sentence1", "sentence2"), "score", None,
                 ("pearson", "spearman"), "pearson", has_header=True, splits=_TRAIN_DEV,
                 zip_name="STS-B.zip"),
    "mnli": Task("mnli", "MNLI", ("sentence1", "sentence2"), "gold_label",
                 ("contradiction", "entailment", "neutral"), ("accuracy",), "accuracy",
                 has_header=True,
                 splits={"train": "train.tsv", "dev": "dev_matched.tsv",
                         "dev_mismatched": "dev_mismatched.tsv"},
                 zip_name="MNLI.zip"),
    "qnli": Task("qnli", "QNLI", ("question", "sentence"), "label", _ENTAIL, ("accuracy",),
                 "accuracy", has_header=True, splits=_TRAIN_DEV, zip_name="QNLI.zip"),
    "rte": Task("rte", "RTE", ("sentence1", "sentence2"), "label", _ENTAIL, ("accuracy",),
                "accuracy", has_header=True, splits=_TRAIN_DEV, zip_name="RTE.zip"),
}
# MNLI evaluated on the mismatched dev set: same files, its "dev" is dev_mismatched.tsv.
TASKS["mnli-mm"] = dataclasses.replace(
    TASKS["mnli"], name="mnli-mm", splits={"train": "train.tsv", "dev": "dev_mismatched.tsv"})


def default_root() -> Path:
    """The download cache: $GLUE_DIR if set, else <repo>/data/glue."""
    return Path(os.environ["GLUE_DIR"]).expanduser() if os.environ.get("GLUE_DIR") else DEFAULT_ROOT


def get_task(task: str) -> Task:
    if not isinstance(task, str) or task.lower() not in TASKS:
        raise ValueError(f"task={task!r} is not a GLUE task here; choose one of {sorted(TASKS)}")
    return TASKS[task.lower()]


# -----------------------------------------------------------------------------
# reading

def read_glue_tsv(path, task: str, split: str = "dev") -> list[Example]:
    """Parse one GLUE TSV in `task`'s layout. `split` only decides whether broken rows are skipped."""
    t = get_task(task)
    path = Path(path)
    examples, skipped = [], 0
    width = t.num_columns  # headerless: fixed; else set from the header line
    cols = None if t.has_header else (list(t.text_columns), t.label_column)
    # newline="\n": split on '\n' only, so a stray '\r' or U+2028 inside a sentence stays there.
    try:
        f = open(path, encoding="utf-8", newline="\n")
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not {t.name}'s TSV file") from None
    with f, _naming_undecodable(path):
        for lineno, line in enumerate(f, start=1):
            line = line.removesuffix("\n").removesuffix("\r")
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # MRPC's header starts with a byte-order mark
            if line == "":
                continue  # a blank line holds no row (e.g. at the end of a hand-edited file)
            fields = line.split("\t")
            if cols is None:  # this is the header
                width = len(fields)
                cols = ([_column(fields, c, path, t) for c in t.text_columns],
                        _column(fields, t.label_column, path, t))
                continue
            if len(fields) != width:
                if split in t.skip_malformed:
                    skipped += 1
                    continue
                what = "the header" if t.has_header else f"the {t.folder} layout"
                raise ValueError(f"{path}, line {lineno}: expected {width} tab-separated columns "
                                 f"as in {what}, found {len(fields)}")
            text_idx, label_idx = cols
            texts = [fields[i] for i in text_idx]
            label = _parse_label(fields[label_idx], t, path, lineno)
            examples.append(Example(texts[0], texts[1] if len(texts) > 1 else None, label))
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} rows that do not have {width} tab-separated "
                      f"columns ({len(examples)} rows kept)", stacklevel=2)
    if not examples:
        raise ValueError(f"{path} holds no {t.name} examples: is it truncated?")
    return examples


@contextlib.contextmanager
def _naming_undecodable(path):
    """A UnicodeDecodeError while reading `path` as text -> a ValueError naming the file and the line
    (found by reading the bytes again, only on this error path)."""
    try:
        yield
    except UnicodeDecodeError as e:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as bad:
                    raise ValueError(f"{path}, line {lineno}: not UTF-8 text (byte {raw[bad.start]:#04x} at "
                                     f"column {bad.start + 1}); GLUE files are UTF-8") from None
        raise ValueError(f"{path}: not UTF-8 text ({e.reason})") from None


def _column(header, name, path, t: Task) -> int:
    if name not in header:
        raise ValueError(f"{path}: the header has no column {name!r} that {t.name} needs; "
                         f"found columns {header}")
    return header.index(name)


def _parse_label(raw: str, t: Task, path, lineno: int) -> int | float:
    if t.labels is None:  # regression
        try:
            score = float(raw)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise ValueError(f"{path}, line {lineno}: {t.name} score {raw!r} is not a finite number")
        return score
    if raw not in t.labels:
        raise ValueError(f"{path}, line {lineno}: label {raw!r} is not one of {t.name}'s labels "
                         f"{list(t.labels)}")
    return t.labels.index(raw)


def load_glue(task: str, split: str, data_dir=None, *, download: bool = True,
              url: str | None = None) -> list[Example]:
    """
    Examples of one split of a GLUE task: split "train" or "dev" (mnli also "dev_mismatched";
    "mnli-mm" is mnli whose "dev" is the mismatched set). data_dir is the folder holding the
    task's TSVs, default data/glue/<FOLDER>/. Missing files are downloaded there unless
    download=False; url (or env GLUE_URL) replaces the GLUE base URL.
    """
    t = get_task(task)
    if split not in t.splits:
        raise ValueError(f"split={split!r} is not a split of {t.name}; choose one of {list(t.splits)}")
    cached = data_dir is None
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_root() / t.folder
    path = data_dir / t.splits[split]
    if not path.is_file():
        if not download:
            raise FileNotFoundError(f"{path} does not exist (download=False). " + _help(t, data_dir, url))
        download_glue(t.name, data_dir, url=url)
    try:
        return read_glue_tsv(path, t.name, split)
    except ValueError as e:
        if not cached:
            raise
        raise ValueError(f"{e} (it is in the download folder: delete it to download it again)") from None


# -----------------------------------------------------------------------------
# downloading

def _urls(t: Task, url: str | None) -> dict:
    """
    file name -> URL for everything download_glue fetches for task t. url= (else env GLUE_URL)
    is a mirror's base URL serving the same file names (plain http allowed, since explicit).
    """
    base = url if url is not None else (os.environ.get("GLUE_URL") or None)
    if base is not None:
        from encoder.hub import check_endpoint

        base = check_endpoint(base, True)  # without its trailing slash
        return {name: f"{base}/{name}" for name in ((t.zip_name,) if t.zip_name else MRPC_RAW_FILES)}
    if t.zip_name is not None:
        return {t.zip_name: f"{GLUE_BASE_URL}/{t.zip_name}"}
    train, test, ids = MRPC_RAW_FILES
    return {train: f"{MRPC_BASE_URL}/{train}", test: f"{MRPC_BASE_URL}/{test}", ids: MRPC_DEV_IDS_URL}


def _help(t: Task, data_dir: Path, url: str | None) -> str:
    """One paragraph telling a user without network which files to put where."""
    need = sorted(set(t.splits.values()))
    try:
        sources = ", ".join(_urls(t, url).values())
    except ValueError as e:  # a bad url= is reported by the caller anyway
        sources = f"(the given url is unusable: {e})"
    if t.zip_name is not None:
        how = (f"Download {sources} on a machine with network access, unzip it and copy the files "
               f"of its folder {t.folder}/ ({', '.join(need)}) into {data_dir}/.")
    else:
        how = (f"Download {sources} on a machine with network access and put "
               f"{', '.join(MRPC_RAW_FILES)} into {data_dir}/; the next call builds "
               f"{', '.join(need)} from them as GLUE's download_glue_data.py does "
               f"(or copy ready-made GLUE MRPC {', '.join(need)} there).")
    return (f"GLUE task {t.name} needs {', '.join(need)} in {data_dir}/. {how} Alternatively pass "
            f"data_dir= a folder that has them, or url= / env GLUE_URL a mirror base URL.")


def download_glue(task: str, data_dir=None, url: str | None = None) -> Path:
    """
    Make sure data_dir (default data/glue/<FOLDER>/) holds the task's TSVs; download them if not.
    Tasks other than MRPC: fetch {base}/{FOLDER}.zip (QQP: QQP-clean.zip) and move the files
    of its folder FOLDER/ into data_dir. MRPC: fetch Microsoft's msr_paraphrase_{train,test}.txt
    and GLUE's mrpc_dev_ids.tsv (any already in data_dir are reused) and split them as GLUE does.
    Returns data_dir.
    """
    from encoder.hub import download_url, safe_extract_zip

    t = get_task(task)
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_root() / t.folder
    need = sorted(set(t.splits.values()))
    if all((data_dir / name).is_file() for name in need):
        return data_dir
    urls = _urls(t, url)
    made = next((p for p in reversed([data_dir, *data_dir.parents]) if not p.exists()), None)  # first folder we make
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        for name, u in urls.items():
            if t.zip_name is not None or not (data_dir / name).is_file():  # MRPC: reuse local files
                download_url(u, data_dir / name, desc=f"{t.folder}: {name}")
    except OSError as e:  # hub.DownloadError is an OSError: no network, DNS, refused, 404...
        if made is not None:  # leave no empty folder behind: the next call should not find a half cache
            for p in [data_dir, *data_dir.parents]:
                with contextlib.suppress(OSError):
                    p.rmdir()  # only if empty
                if p == made:
                    break
        raise OSError(f"Could not download {t.name} ({e}). " + _help(t, data_dir, url)) from e

    if t.zip_name is None:
        build_mrpc(data_dir)
    else:
        zip_path = data_dir / t.zip_name
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=data_dir))
        try:
            try:
                safe_extract_zip(zip_path, tmp)
            except zipfile.BadZipFile as e:
                raise ValueError(f"{zip_path} from {urls[t.zip_name]} is not a zip file ({e})") from e
            inner = tmp / t.folder
            if not inner.is_dir():
                found = sorted(p.name for p in tmp.iterdir())
                raise ValueError(f"{zip_path} should hold a folder {t.folder}/ with the task's "
                                 f"files; its top level has {found}")
            for p in inner.iterdir():
                if p.is_file():
                    os.replace(p, data_dir / p.name)
        finally:  # the TSVs are what we keep; the zip (MNLI: 300 MB) is not needed
            shutil.rmtree(tmp, ignore_errors=True)
            zip_path.unlink(missing_ok=True)
    missing = [name for name in need if not (data_dir / name).is_file()]
    if missing:
        raise ValueError(f"after downloading {t.name}, {data_dir}/ still lacks {missing}. "
                         + _help(t, data_dir, url))
    return data_dir


def build_mrpc(data_dir) -> None:
    """
    GLUE's MRPC split, as download_glue_data.py builds it: from msr_paraphrase_train.txt, the
    rows whose (#1 ID, #2 ID) pair is listed in mrpc_dev_ids.tsv form dev.tsv, the others
    train.tsv (both keep the train file's header); test.tsv re-indexes msr_paraphrase_test.txt.
    """
    data_dir = Path(data_dir)
    train_src, test_src, ids_src = (data_dir / name for name in MRPC_RAW_FILES)
    with open(ids_src, encoding="utf-8") as f:
        dev_ids = {tuple(row.strip().split("\t")) for row in f}

    def rows(src):  # (header line as read, [5 fields per row]) of a Microsoft file
        with open(src, encoding="utf-8") as f:
            header, out = f.readline(), []
            for lineno, row in enumerate(f, start=2):
                fields = row.strip().split("\t")
                if len(fields) != 5:
                    raise ValueError(f"{src}, line {lineno}: expected 5 tab-separated columns "
                                     f"(Quality, #1 ID, #2 ID, #1 String, #2 String), found {len(fields)}")
                out.append(fields)
        return header, out

    header, train_rows = rows(train_src)
    train_lines, dev_lines = [header], [header]
    for label, id1, id2, s1, s2 in train_rows:
        dest = dev_lines if (id1, id2) in dev_ids else train_lines
        dest.append(f"{label}\t{id1}\t{id2}\t{s1}\t{s2}\n")
    _, test_rows = rows(test_src)
    test_lines = ["index\t#1 ID\t#2 ID\t#1 String\t#2 String\n"]
    test_lines += [f"{i}\t{id1}\t{id2}\t{s1}\t{s2}\n" for i, (_, id1, id2, s1, s2) in enumerate(test_rows)]
    from encoder.hub import atomic_write

    for name, lines in (("test.tsv", test_lines), ("dev.tsv", dev_lines), ("train.tsv", train_lines)):
        with atomic_write(data_dir / name, "w") as f:
            f.write("".join(lines))


# -----------------------------------------------------------------------------
# a task's splits for a training run

class DataDownloadError(OSError):
    """The GLUE download failed; exit status 1 (the network), and no empty data folder is left behind."""


def load_task(task: str, data_dir=None) -> tuple[list[Example], dict[str, list[Example]], list[Path]]:
    """
    A run's data: (train examples, {dev split: examples} (MNLI: dev and dev_mismatched), the files read).
    An explicit data_dir (train.py's --data-dir) must hold the task's TSVs; the default folder is
    downloaded into (DataDownloadError names what to do when that fails).
    """
    t = get_task(task)
    files = sorted(set(t.splits.values()))
    folder = default_root() / t.folder if data_dir is None else Path(data_dir)
    if data_dir is not None and not folder.is_dir():
        raise ValueError(f"--data-dir {data_dir} is not a folder (it should hold {t.name}'s {', '.join(files)})")
    missing = [f for f in files if data_dir is not None and not (folder / f).is_file()]
    if missing:
        raise ValueError(f"--data-dir {data_dir} lacks {', '.join(missing)} (it should hold {t.name}'s "
                         f"{', '.join(files)}); leave out --data-dir to download them into "
                         f"{default_root() / t.folder}/")
    if data_dir is None:
        try:
            download_glue(t.name)
        except OSError as e:
            raise DataDownloadError(f"could not download GLUE {t.name} into {folder}/ ({e.__cause__ or e}); put "
                                    f"{', '.join(files)} there, or pass --data-dir a folder that holds them, or "
                                    f"set GLUE_URL to a mirror") from None
    train = load_glue(t.name, "train", data_dir, download=False)
    dev = {s: load_glue(t.name, s, data_dir, download=False) for s in t.splits if s != "train"}
    return train, dev, [folder / f for f in files]
