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
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

# -----------------------------------------------------------------------------
# safetensors: [u64 little-endian N][N bytes of JSON header][raw little-endian data]
# header: {name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
#          "__metadata__": {str: str}}, offsets relative to the end of the header.

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
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
    metadata = header.pop("__metadata__", None) or {}
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise ValueError(f"{path}: __metadata__ must map strings to strings, got {metadata!r}")

    data_len = size - 8 - n
    spans = []  # (begin, end, name)
    for name, info in header.items():
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
        numel = 1
        for d in shape:
            numel *= d
        nbytes = numel * DTYPES[dtype].itemsize
        if nbytes != end - begin:
            raise ValueError(f"{path}: tensor {name!r} of shape {shape} and dtype {dtype} needs "
                             f"{nbytes} bytes but data_offsets {offsets} span {end - begin}")
        spans.append((begin, end, name))

    # The spec: the data buffer is covered exactly, no overlap, no hole, nothing after.
    cursor = 0
    for begin, end, name in sorted(spans):
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
    As the official writer does: data ordered by (alignment desc, name) so every tensor
    starts at a multiple of its item size, header padded with spaces to a multiple of 8."""
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
    order = sorted(tensors, key=lambda k: (-tensors[k].dtype.itemsize, k))
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
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    with atomic_write(path) as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for data in blobs:
            f.write(data)


# -----------------------------------------------------------------------------
# atomic writes: a temp file beside the destination, fsync, os.replace

@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Yield a file object for `<name>.<random>.tmp` beside `path`; on success it is
    fsynced and renamed onto `path`, on an exception it is removed and `path` untouched."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
