"""
Files: safetensors read/write, atomic writes, downloads, the Hugging Face cache, zips.

Everything in the project that touches the disk or the network goes through here.
Only torch, tqdm and the standard library are used: safetensors is parsed by hand
(it is 8 bytes + JSON + raw bytes), downloads use urllib.

    tensors = read_safetensors("model.safetensors")            # {name: Tensor}
    write_safetensors("out.safetensors", tensors, {"format": "pt"})
    path = hf_hub_download("roberta-base", "config.json")    # cached like huggingface_hub
"""
import contextlib
import hashlib
import http.client
import json
import math
import os
import pickle
import pickletools
import re
import secrets
import shutil
import stat
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

import torch
from tqdm import tqdm

# -----------------------------------------------------------------------------
# safetensors: [u64 little-endian N][N bytes of JSON header][raw little-endian data]
# header: {name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
#          "__metadata__": {str: str}}, offsets relative to the end of the header.

DTYPES = {  # in the official library's Dtype order, which its writer sorts by (item size grows)
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16,
    "F16": torch.float16, "BF16": torch.bfloat16, "I32": torch.int32, "F32": torch.float32,
    "F64": torch.float64, "I64": torch.int64,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_DTYPE_RANK = {dtype: rank for rank, dtype in enumerate(DTYPES.values())}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the official library's limit too
_UMASK = os.umask(0o022)  # read the process umask once (os has no getter) and put it back
os.umask(_UMASK)

if sys.byteorder != "little":  # raw bytes are little-endian; we copy them as they are
    raise ImportError("hub.py reads and writes safetensors only on little-endian machines")


def _read_header(path, f):
    """Parse and validate the header of an open safetensors file. Returns
    (header without __metadata__, metadata, offset of the data buffer)."""
    size = os.fstat(f.fileno()).st_size
    if size < 8:
        raise ValueError(f"{path}: not a safetensors file ({size} bytes, need at least 8)")
    n = int.from_bytes(f.read(8), "little")
    if n > MAX_HEADER_BYTES:
        raise ValueError(f"{path}: header length {n} is absurd (max {MAX_HEADER_BYTES} bytes)")
    if n > size - 8:
        raise ValueError(f"{path}: header length {n} is larger than the file ({size} bytes)")
    try:
        header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: header is not valid UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise ValueError(f"{path}: __metadata__ must map strings to strings, got {metadata!r}")

    data_len = size - 8 - n
    spans = sorted((*_tensor_span(path, name, info, data_len), name) for name, info in header.items())

    # The spec: the data buffer is covered exactly, no overlap, no hole, nothing after.
    cursor = 0
    for begin, end, name in spans:
        if begin < cursor:
            raise ValueError(f"{path}: tensor {name!r} data_offsets [{begin}, {end}] overlap "
                             f"the previous tensor (which ends at {cursor})")
        if begin > cursor:
            raise ValueError(f"{path}: gap of {begin - cursor} bytes in the data buffer before "
                             f"tensor {name!r} (offsets must be contiguous)")
        cursor = end
    if cursor != data_len:
        raise ValueError(f"{path}: {data_len - cursor} trailing bytes after the last tensor "
                         f"(data buffer is {data_len} bytes, tensors cover {cursor})")
    return header, metadata, 8 + n


def _tensor_span(path, name, info, data_len):
    """(begin, end) in the data buffer of one header entry, after checking its dtype, shape and
    offsets against each other and the buffer's length."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"{path}: tensor {name!r} needs exactly the keys dtype, shape, "
                         f"data_offsets, got {info!r}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPES:
        raise ValueError(f"{path}: tensor {name!r} has unknown dtype {dtype!r} "
                         f"(supported: {', '.join(DTYPES)})")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise ValueError(f"{path}: tensor {name!r} has a bad shape {shape!r} "
                         f"(need a list of non-negative ints)")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(type(o) is int for o in offsets) and 0 <= offsets[0] <= offsets[1]):
        raise ValueError(f"{path}: tensor {name!r} has bad data_offsets {offsets!r} "
                         f"(need [begin, end] with 0 <= begin <= end)")
    begin, end = offsets
    if end > data_len:
        raise ValueError(f"{path}: tensor {name!r} data_offsets {offsets} out of range "
                         f"(data buffer is {data_len} bytes)")
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize
    if nbytes != end - begin:
        raise ValueError(f"{path}: tensor {name!r} of shape {shape} and dtype {dtype} needs "
                         f"{nbytes} bytes but data_offsets {offsets} span {end - begin}")
    return begin, end


def read_safetensors(path):
    """Read a .safetensors file into {name: CPU tensor}; each tensor owns its memory."""
    tensors = {}
    with open(path, "rb") as f:
        header, _, data_start = _read_header(path, f)
        for name, info in header.items():
            begin, end = info["data_offsets"]
            dtype, shape = DTYPES[info["dtype"]], info["shape"]
            if end == begin:  # torch.frombuffer refuses empty buffers
                tensors[name] = torch.empty(shape, dtype=dtype)
                continue
            buf = bytearray(end - begin)  # a fresh, aligned buffer the tensor keeps alive
            f.seek(data_start + begin)
            if f.readinto(buf) != len(buf):
                raise ValueError(f"{path}: file ended while reading tensor {name!r}")
            tensors[name] = torch.frombuffer(buf, dtype=dtype).reshape(shape)
    return tensors


def read_safetensors_metadata(path):
    """The file's __metadata__ dict ({} if none), without reading any tensor."""
    with open(path, "rb") as f:
        return _read_header(path, f)[1]


def write_safetensors(path, tensors, metadata=None):
    """Write {name: tensor} as a .safetensors file the official library reads, atomically.
    As the official writer does: data ordered by dtype (largest item size first), then by
    name, so every tensor starts at a multiple of its item size; header padded with spaces
    to a multiple of 8. Without metadata the bytes equal the official writer's."""
    if not isinstance(tensors, dict):
        raise ValueError(f"tensors must be a dict of name -> torch.Tensor, got {type(tensors).__name__}")
    metadata = {} if metadata is None else metadata
    if not (isinstance(metadata, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise ValueError(f"metadata must be a dict of str -> str, got {metadata!r}")
    for name, t in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"tensor names must be strings other than '__metadata__', got {name!r}")
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"tensors[{name!r}] is a {type(t).__name__}, not a torch.Tensor")
        if t.dtype not in DTYPE_NAMES:
            raise ValueError(f"tensors[{name!r}] has dtype {t.dtype}, which safetensors here does not "
                             f"support (supported: {', '.join(str(d) for d in DTYPE_NAMES)})")
    order = sorted(tensors, key=lambda k: (-_DTYPE_RANK[tensors[k].dtype], k))
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name in order:
        t = tensors[name].detach().to("cpu").contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes()  # raw little-endian bytes
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    head += b" " * (-len(head) % 8)
    with atomic_write(path) as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for data in blobs:
            f.write(data)


# -----------------------------------------------------------------------------
# atomic writes: a temp file beside the destination, fsync, os.replace

class WriteError(OSError):
    """Writing one of our files failed: the disk is full, the file too large, the folder gone... It is
    an OSError whose errno and strerror are the failure's (`filename` the destination), so `except
    OSError` catches it whatever raised underneath: torch's zip writer, for one, reports a failed
    write as `RuntimeError: [enforce fail at inline_container.cc] unexpected pos`. Nothing is left
    at the destination's temporary name; the destination itself is untouched."""

    def __str__(self):
        return f"could not write {self.filename} ({self.strerror})"


def _write_error(path, failure):
    """WriteError for `path` from the exception that made the write fail: an OSError's errno and
    strerror ("No space left on device"), else the exception's type and first line."""
    if isinstance(failure, OSError) and failure.strerror:
        return WriteError(failure.errno, failure.strerror, str(path))
    text = str(failure).splitlines()[0] if str(failure) else ""
    return WriteError(None, f"{type(failure).__name__}: {text}" if text else type(failure).__name__, str(path))


class _WatchedFile:
    """A file object that remembers the first exception its write or flush raised, so that
    atomic_write can tell a failed write (whatever the writer on top turns it into) from an
    exception of the caller's own (a bug, a refused download, Ctrl-C)."""

    def __init__(self, file):
        self.file, self.failure = file, None

    def _watch(self, method, *args):
        try:
            return method(*args)
        except Exception as e:
            self.failure = self.failure or e
            raise

    def write(self, data):
        return self._watch(self.file.write, data)

    def writelines(self, lines):
        return self._watch(self.file.writelines, lines)

    def flush(self):
        return self._watch(self.file.flush)

    def __getattr__(self, name):  # fileno, tell, seek, mode, ...: the file's own
        return getattr(self.file, name)


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Yield a file object for `<name>.<random>.tmp` beside `path`; on success it is flushed,
    fsynced and renamed onto `path`. On any exception the temporary file is removed and `path`
    is untouched; a failure of the file itself (a write, flush, fsync or rename, or what the
    writer on top made of a failed write) is raised as WriteError, an OSError; an exception of
    the caller's own passes through unchanged."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    file = _WatchedFile(os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})))
    try:
        yield file
    except BaseException as e:
        _discard(file, tmp)
        if file.failure is None or not isinstance(e, Exception):
            raise
        raise _write_error(path, file.failure) from e
    try:
        file.flush()
        os.fsync(file.fileno())
        file.close()
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        _discard(file, tmp)
        if not isinstance(e, Exception):
            raise
        raise _write_error(path, e) from e


def _discard(file, tmp):
    """Close and remove a temporary file that will not be renamed; closing may fail again (the
    buffered rest of a write that already failed), which changes nothing."""
    with contextlib.suppress(Exception):
        file.file.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


# -----------------------------------------------------------------------------
# downloads (urllib only)

class DownloadError(OSError):
    """A download failed: HTTP error, connection cut off, wrong size or sha256. It is an
    OSError, so `except OSError` catches every network and file problem; nothing is left
    at the destination."""


class HubOfflineError(OSError):
    """The hub cannot be reached (or HF_HUB_OFFLINE=1) and the file is not in the cache."""


class EntryNotFoundError(FileNotFoundError):
    """The repository has no such file (HTTP 404), e.g. no model.safetensors: callers may
    fall back to another file."""


TIMEOUT = 60  # seconds a connection may stay silent before we give up
CHUNK = 1 << 20


def check_endpoint(url, explicit=False):
    """Return `url` without its trailing slash if its scheme is allowed: https always,
    http only for an endpoint the user set explicitly (e.g. a local mirror)."""
    allowed = ("https", "http") if explicit else ("https",)
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in allowed or not parts.netloc:
        hint = "" if explicit else (" (http:// is accepted only for an endpoint set explicitly, "
                                    "e.g. HF_ENDPOINT=http://127.0.0.1:8080)")
        raise ValueError(f"endpoint {url!r} must be a URL starting with "
                         f"{' or '.join(s + '://' for s in allowed)}{hint}")
    return url.rstrip("/")


class _KeepRedirectHeaders(urllib.request.HTTPRedirectHandler):
    """Follow redirects, keeping each hop's headers: the hub puts X-Repo-Commit and
    X-Linked-Etag on its redirect to the CDN, not on the CDN's final answer."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise DownloadError(f"{req.full_url}: refusing a redirect to {newurl}")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            req.hops.append(headers)
            new.hops = req.hops  # one list shared along the chain of redirects
        return new


_opener = urllib.request.build_opener(_KeepRedirectHeaders)


def _open(url):
    """GET `url`; returns (response, [headers of every redirect, then the final response's])."""
    req = urllib.request.Request(url, headers={"User-Agent": "spectral-ft"})
    req.hops = []
    resp = _opener.open(req, timeout=TIMEOUT)
    return resp, req.hops + [resp.headers]


def _save(resp, dest, url, expected_size=None, expected_sha256=None, desc=None):
    """Stream an open response into `dest` atomically, checking size and sha256."""
    length = resp.headers.get("Content-Length", "")
    length = int(length) if length.isdigit() else None
    if None not in (length, expected_size) and length != expected_size:
        raise DownloadError(f"{url}: server announces {length} bytes, expected {expected_size}")
    total = expected_size if expected_size is not None else length
    sha, done = hashlib.sha256(), 0
    try:
        with atomic_write(dest) as f, tqdm(total=total, desc=desc or Path(dest).name, unit="B",
                                           unit_scale=True, unit_divisor=1024) as bar:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                sha.update(chunk)
                done += len(chunk)
                bar.update(len(chunk))
            if total is not None and done != total:
                raise DownloadError(f"{url}: download cut off after {done} of {total} bytes; "
                                    f"nothing was saved to {dest}, run again to retry")
            if expected_sha256 and sha.hexdigest() != expected_sha256.lower():
                raise DownloadError(f"{url}: sha256 {sha.hexdigest()} does not match the expected "
                                    f"{expected_sha256}; nothing was saved to {dest}")
    except (DownloadError, WriteError):  # our own verdict, or a full disk: not the network's doing
        raise
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError(f"{url}: download failed after {done} bytes ({e!r}); "
                            f"nothing was saved to {dest}") from e


def download_url(url, dest, *, expected_size=None, expected_sha256=None, desc=None):
    """Download `url` (http or https; which schemes a user may choose is check_endpoint's
    job) to `dest` with a progress bar, atomically; verify size and sha256 when known.
    Raises DownloadError (an OSError) on any failure, leaving nothing at `dest`."""
    if urllib.parse.urlsplit(str(url)).scheme not in ("http", "https"):
        raise ValueError(f"url {url!r} must start with https:// or http://")
    dest = Path(dest)
    try:
        resp, _ = _open(url)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError(f"{url}: cannot connect ({e!r})") from e
    with resp:
        _save(resp, dest, url, expected_size, expected_sha256, desc)
    return dest


# -----------------------------------------------------------------------------
# the Hugging Face hub, cached in huggingface_hub's layout so caches are shared:
#   {cache}/models--{org}--{name}/blobs/{etag}                    the bytes
#   {cache}/models--{org}--{name}/snapshots/{commit}/{filename}   -> ../../blobs/{etag}
#   {cache}/models--{org}--{name}/refs/{revision}                 the commit hash

_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def hf_cache_dir():
    """$HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (as huggingface_hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    return Path(os.environ.get("HF_HOME") or xdg / "huggingface").expanduser() / "hub"


def _relative_path(value, what):
    """Check that `value` is a relative path without '..' that is safe to join to a folder."""
    parts = PurePosixPath(value).parts if isinstance(value, str) else ()
    if not parts or value.startswith("/") or "\\" in value or any(p in (".", "..") for p in parts):
        raise ValueError(f"{what} {value!r} must be a relative path like 'config.json' or "
                         f"'onnx/model.onnx', without '..' or backslashes")


def hf_hub_download(repo_id, filename, *, endpoint=None, cache_dir=None, revision="main"):
    """Path of `filename` from the model repo `repo_id`, downloaded into the Hugging Face
    cache if it is not there yet for `revision`. Raises EntryNotFoundError (404),
    HubOfflineError (no network / HF_HUB_OFFLINE=1 and not cached), DownloadError."""
    _check_repo_id(repo_id)
    _relative_path(filename, "filename")
    _relative_path(revision, "revision")
    explicit = endpoint is not None or bool(os.environ.get("HF_ENDPOINT"))
    endpoint = check_endpoint(endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co",
                              explicit)
    repo_dir = Path(cache_dir).expanduser() if cache_dir is not None else hf_cache_dir()
    repo_dir = repo_dir / ("models--" + repo_id.replace("/", "--"))
    cached = _cached(repo_dir, repo_id, filename, revision)  # 1. in the cache: no network at all
    if cached is not None:
        return cached
    url = f"{endpoint}/{repo_id}/resolve/{urllib.parse.quote(revision, safe='')}/" \
          f"{urllib.parse.quote(filename)}"
    resp, hops = _ask_hub(url, endpoint, repo_dir, repo_id, filename, revision)  # 2. ask the hub
    with resp:
        commit, blob = _store_blob(resp, hops, url, endpoint, repo_dir, filename)  # 3. the bytes
    pointer = _link_snapshot(repo_dir / "snapshots" / commit / filename, blob)  # 4. the names
    _write_ref(repo_dir, revision, commit)
    return pointer


def _check_repo_id(repo_id):
    if not (isinstance(repo_id, str) and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", repo_id)
            and ".." not in repo_id and "--" not in repo_id):
        raise ValueError(f"repo_id {repo_id!r} must look like 'roberta-base' or 'org/name' "
                         f"(letters, digits, '-', '_', '.'; no '--' or '..')")


def _write_ref(repo_dir, revision, commit):
    """refs/{revision} := commit, unless the revision is that commit already."""
    if revision != commit:
        with atomic_write(repo_dir / "refs" / revision, "w") as f:
            f.write(commit)


def _cached(repo_dir, repo_id, filename, revision):
    """The cached path of `filename` at `revision` (a commit, or a name that refs/ resolves),
    None if the hub must be asked; EntryNotFoundError for a remembered 404."""
    commit = revision if _COMMIT.fullmatch(revision) else None
    ref_file = repo_dir / "refs" / revision
    if commit is None and ref_file.is_file():
        commit = ref_file.read_text().strip()
    if not (commit and _COMMIT.fullmatch(commit)):
        return None
    if (repo_dir / "snapshots" / commit / filename).is_file():
        return repo_dir / "snapshots" / commit / filename
    if (repo_dir / ".no_exist" / commit / filename).exists():
        raise EntryNotFoundError(f"{repo_id} has no file {filename!r} at revision "
                                 f"{revision} (remembered in {repo_dir / '.no_exist'})")
    return None


def _ask_hub(url, endpoint, repo_dir, repo_id, filename, revision):
    """Open `url` -> (response, headers of each hop). A 404 for a missing file is remembered
    under .no_exist/ as huggingface_hub does and raised as EntryNotFoundError; a missing or
    private repository is FileNotFoundError; no network is HubOfflineError."""
    offline = (f"{filename!r} of the model {repo_id!r} is not in the Hugging Face cache "
               f"{repo_dir} and {{}}. Download it from {url} (with the model's other files) "
               f"into a local directory and pass that directory's path instead of {repo_id!r}, "
               f"or run once with network access so that it is cached under {repo_dir}.")
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise HubOfflineError(offline.format("HF_HUB_OFFLINE is set, so the network is not used"))
    try:
        return _open(url)
    except urllib.error.HTTPError as e:
        if e.code == 404 and e.headers.get("X-Error-Code", "EntryNotFound") == "EntryNotFound":
            commit = e.headers.get("X-Repo-Commit", "")
            if _COMMIT.fullmatch(commit):
                with atomic_write(repo_dir / ".no_exist" / commit / filename):
                    pass
                _write_ref(repo_dir, revision, commit)
            raise EntryNotFoundError(f"{repo_id} has no file {filename!r} at revision "
                                     f"{revision} ({url}: HTTP 404)") from None
        if e.code in (401, 404):
            raise FileNotFoundError(f"{url}: HTTP {e.code}: the repository {repo_id!r} or revision "
                                    f"{revision!r} does not exist, or is private or gated (no token is "
                                    f"sent); download the files yourself and pass their directory") from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        raise HubOfflineError(offline.format(f"{endpoint} cannot be reached ({e!r})")) from e


def _store_blob(resp, hops, url, endpoint, repo_dir, filename):
    """Save the answer as blobs/{etag} (unless there already) -> (commit, blob path). The hub's
    own answer, before any redirect to a CDN, carries the commit, the etag (sha256 for LFS
    files) and the size."""
    hub = next((h for h in hops if h.get("X-Repo-Commit")), None)
    if hub is None:
        raise DownloadError(f"{url}: no X-Repo-Commit header in the answer; {endpoint} does "
                            f"not behave like a Hugging Face hub")
    commit = hub["X-Repo-Commit"]
    etag = (hub.get("X-Linked-Etag") or hub.get("ETag") or "").removeprefix("W/").strip('"')
    size = hub.get("X-Linked-Size", "")
    if not _COMMIT.fullmatch(commit) or not re.fullmatch(r"[\w-]{1,128}", etag):
        raise DownloadError(f"{url}: bad X-Repo-Commit {commit!r} or ETag {etag!r} from the hub")
    blob = repo_dir / "blobs" / etag
    if not blob.is_file():
        _save(resp, blob, url, expected_size=int(size) if size.isdigit() else None,
              expected_sha256=etag if _SHA256.fullmatch(etag) else None, desc=filename)
    return commit, blob


def _link_snapshot(pointer, blob):
    """Point snapshots/{commit}/{filename} at the blob: a relative symlink, renamed into place;
    a copy where symlinks cannot be made (Windows without developer mode)."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    tmp = pointer.with_name(f"{pointer.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), tmp)
        os.replace(tmp, pointer)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        with open(blob, "rb") as src, atomic_write(pointer) as dst:
            shutil.copyfileobj(src, dst)
    return pointer


# -----------------------------------------------------------------------------
# zips and torch checkpoints: untrusted input, checked before use

def safe_extract_zip(zip_path, target_dir):
    """Extract `zip_path` into `target_dir` and return the files written. Every entry is
    checked first, so nothing is written if one is refused: absolute paths, drive letters,
    paths that resolve outside target_dir, symlinks."""
    target = Path(target_dir).resolve()
    with zipfile.ZipFile(zip_path) as z:
        plan = []  # (entry, destination)
        for info in z.infolist():
            name = info.filename.replace("\\", "/")
            dest = (target / name).resolve()
            if stat.S_ISLNK(info.external_attr >> 16):
                problem = "is a symbolic link"
            elif name.startswith("/") or re.match(r"[A-Za-z]:", name):
                problem = "has an absolute path"
            elif dest != target and target not in dest.parents:
                problem = f"would be written outside {target}"
            else:
                plan.append((info, dest))
                continue
            raise ValueError(f"{zip_path}: refusing zip entry {info.filename!r}: it {problem}; "
                             f"nothing was extracted")
        written = []
        for info, dest in plan:
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            with z.open(info) as src, atomic_write(dest) as dst:
                shutil.copyfileobj(src, dst)
            written.append(dest)
    return written


def _legacy_pickles_whole(path):
    """False for a legacy (non-zip) torch.save file cut inside one of its first four pickles (magic
    number, protocol, system info, the object): each must reach its STOP opcode or the file end
    there. Read opcode by opcode, nothing run."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        try:
            for _ in range(4):
                if not f.peek(1):  # the file ends between two whole pickles
                    return True
                for _ in pickletools.genops(f):
                    pass
        except Exception:  # pickletools' ValueError at the end of the data, or a malformed opcode
            return False
    return True


def load_torch_checkpoint(path):
    """Load a torch.save'd state dict ({name: tensor}) safely: weights_only=True, never
    anything that could run code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e) and "Unsupported global" not in str(e):
            raise ValueError(f"{path}: damaged or truncated, not a readable torch checkpoint "
                             f"({str(e).splitlines()[0] if str(e) else 'UnpicklingError'})") from None
        if not _legacy_pickles_whole(path):  # a cut-off legacy file can end inside a global's name
            raise ValueError(f"{path}: damaged or truncated, not a readable torch checkpoint (its pickle "
                             f"stream ends early); download it again") from None
        needs = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        needs = f" (it needs {needs.group(1)})" if needs else ""
        raise ValueError(f"{path}: refused: the file holds Python objects other than tensors"
                         f"{needs}, and loading it could run code") from None
    except FileNotFoundError:
        raise
    except Exception as e:  # a cut-off zip or pickle stream: RuntimeError, EOFError, struct.error, ...
        reason = str(e).split(". ")[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: damaged or truncated, not a readable torch checkpoint ({reason}); "
                         f"download it again") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict {{name: tensor}}, got a {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: expected a state dict {{name: tensor}}, but {bad[:5]} are not tensors")
    return dict(state)
