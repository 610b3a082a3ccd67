"""Tests for hub.py: safetensors, atomic writes, downloads from a fake hub on 127.0.0.1,
the Hugging Face cache layout, safe zip extraction and safe torch checkpoints."""
import hashlib
import http.server
import json
import os
import pickle
import socket
import stat
import struct
import threading
import zipfile

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from encoder import hub
from encoder.hub import (DTYPES, DownloadError, EntryNotFoundError, HubOfflineError, atomic_write,
                 check_endpoint, download_url, hf_hub_download, load_torch_checkpoint,
                 read_safetensors, read_safetensors_metadata, safe_extract_zip, write_safetensors)


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


# -----------------------------------------------------------------------------
# safetensors

@st.composite
def tensors(draw):
    dtype = DTYPES[draw(st.sampled_from(sorted(DTYPES)))]
    shape = draw(st.lists(st.integers(0, 4), max_size=3))  # [] is 0-d; a 0 is zero-size
    numel = torch.Size(shape).numel()
    raw = draw(st.binary(min_size=numel * dtype.itemsize, max_size=numel * dtype.itemsize))
    if dtype == torch.bool:
        raw = bytes(b & 1 for b in raw)
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape)  # every bit pattern


def raw_bytes(t):
    return t.contiguous().reshape(-1).view(torch.uint8).tolist()


names = st.text(min_size=1, max_size=12).filter(lambda s: s != "__metadata__")


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(names, tensors(), max_size=5), st.dictionaries(st.text(), st.text(), max_size=3))
def test_safetensors_round_trip_is_bit_exact(tmp_path_factory, tensors_in, metadata):
    path = tmp_path_factory.mktemp("st") / "t.safetensors"
    write_safetensors(path, tensors_in, metadata)
    out = read_safetensors(path)
    assert out.keys() == tensors_in.keys()
    for name, t in tensors_in.items():
        assert out[name].dtype == t.dtype and out[name].shape == t.shape
        assert raw_bytes(out[name]) == raw_bytes(t)
    assert read_safetensors_metadata(path) == metadata

    # The layout the official writer uses: header padded with spaces to a multiple of 8,
    # every tensor's data aligned to its item size.
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    assert n % 8 == 0
    text = data[8:8 + n].decode("utf-8")
    assert text.rstrip(" ").endswith("}") and len(text) - len(text.rstrip(" ")) < 8
    for name, info in json.loads(text).items():
        if name != "__metadata__":
            assert (8 + n + info["data_offsets"][0]) % DTYPES[info["dtype"]].itemsize == 0


def test_write_makes_tensors_contiguous_and_accepts_no_metadata(tmp_path):
    t = torch.arange(12.0).reshape(3, 4).t()  # not contiguous
    write_safetensors(tmp_path / "t.safetensors", {"w": t})
    assert torch.equal(read_safetensors(tmp_path / "t.safetensors")["w"], t)
    assert read_safetensors_metadata(tmp_path / "t.safetensors") == {}


@pytest.mark.parametrize("tensors_in, problem", [
    ({"a": [1.0, 2.0]}, "not a torch.Tensor"),
    ({"a": torch.zeros(2, dtype=torch.complex64)}, "complex64"),
    ({"__metadata__": torch.zeros(2)}, "__metadata__"),
])
def test_write_rejects_what_safetensors_cannot_hold(tmp_path, tensors_in, problem):
    with pytest.raises(ValueError, match=problem):
        write_safetensors(tmp_path / "t.safetensors", tensors_in)
    assert files_under(tmp_path) == []


def st_file(path, header, data=b"", n=None):
    """A safetensors file built byte by byte, not by our writer."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes((len(head) if n is None else n).to_bytes(8, "little") + head + data)
    return path


def test_hand_built_file_reads_correctly(tmp_path):
    floats = [1.5, -2.0, 0.25, 3.0]
    bf16 = b"".join(struct.pack("<f", x)[2:] for x in (1.5, -2.0, 0.25))  # top 16 bits
    data = struct.pack("<4f", *floats) + bf16 + struct.pack("<q", -7) + bytes([1, 0]) + b"\x05"
    header = {
        "__metadata__": {"format": "pt"},
        "bias": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]},  # not in file order
        "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "step": {"dtype": "I64", "shape": [], "data_offsets": [22, 30]},
        "mask": {"dtype": "BOOL", "shape": [2], "data_offsets": [30, 32]},
        "none": {"dtype": "F16", "shape": [0, 3], "data_offsets": [32, 32]},
        "u": {"dtype": "U8", "shape": [1], "data_offsets": [32, 33]},
    }
    out = read_safetensors(st_file(tmp_path / "h.safetensors", header, data))
    assert torch.equal(out["w"], torch.tensor(floats).reshape(2, 2))
    assert out["bias"].dtype == torch.bfloat16
    assert out["bias"].float().tolist() == [1.5, -2.0, 0.25]
    assert out["step"].shape == () and out["step"].item() == -7
    assert out["mask"].tolist() == [True, False]
    assert out["none"].shape == (0, 3) and out["none"].dtype == torch.float16
    assert out["u"].tolist() == [5]
    assert read_safetensors_metadata(tmp_path / "h.safetensors") == {"format": "pt"}


F32x2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("header, data, n, problem", [
    (b"{}", b"", 1000, "larger than the file"),
    (b"{}", b"", 200 * 1024 * 1024, "absurd"),
    (b"{not json", b"", None, "not valid UTF-8 JSON"),
    (b"\xff\xfe{}", b"", None, "not valid UTF-8 JSON"),
    (b"[1, 2]", b"", None, "must be a JSON object"),
    ({"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, bytes(8), None, "unknown dtype 'Q7'"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8), None, "needs 12 bytes"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8), None, "bad shape"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, bytes(8), None, "bad data_offsets"),
    ({"a": {"dtype": "F32", "shape": [2]}}, bytes(8), None, "needs exactly the keys"),
    ({"a": F32x2}, bytes(4), None, "out of range"),
    ({"a": F32x2, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12), None, "overlap"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8), None, "gap of 4 bytes"),
    ({"a": F32x2}, bytes(12), None, "4 trailing bytes"),
    ({"__metadata__": {"k": 1}}, b"", None, "__metadata__ must map strings to strings"),
])
def test_bad_headers_are_rejected_naming_the_file(tmp_path, header, data, n, problem):
    path = st_file(tmp_path / "bad.safetensors", header, data, n)
    with pytest.raises(ValueError, match=problem) as e:
        read_safetensors(path)
    assert str(path) in str(e.value)


def test_file_shorter_than_the_length_prefix_is_rejected(tmp_path):
    (tmp_path / "short.safetensors").write_bytes(b"\x02\x00")
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_safetensors(tmp_path / "short.safetensors")


# -----------------------------------------------------------------------------
# atomic_write

def test_atomic_write_replaces_on_success_and_leaves_old_file_on_error(tmp_path):
    path = tmp_path / "f.txt"
    with atomic_write(path, "w") as f:
        f.write("old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write(b"new, half written")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert files_under(tmp_path) == ["f.txt"]  # no temp file left behind
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new" and files_under(tmp_path) == ["f.txt"]


def test_atomic_write_rejects_read_modes(tmp_path):
    with pytest.raises(ValueError, match="'wb' or 'w'"):
        with atomic_write(tmp_path / "f", "r"):
            pass


# -----------------------------------------------------------------------------
# a fake hub on 127.0.0.1

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub(http.server.ThreadingHTTPServer):
    """Serves {repo}/resolve/{revision}/{file} like huggingface.co: small files directly
    (ETag = a git hash), LFS files (lfs=True) as a 302 to /cdn/{sha256} with X-Linked-Etag.
    Switches: cut (send half the body, then drop), wrong_sha (announce another sha256)."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), FakeHubHandler)
        self.files, self.lfs, self.requests = {}, set(), []
        self.cut = self.wrong_sha = False
        self.url = self.cdn = f"http://127.0.0.1:{self.server_address[1]}"


class FakeHubHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.do_GET(body=False)

    def do_GET(self, body=True):
        srv = self.server
        srv.requests.append(self.path)
        parts = self.path.lstrip("/").split("/")
        if parts[0] == "cdn":  # the CDN: no hub headers
            data = next(d for repo in srv.files.values() for d in repo.values()
                        if hashlib.sha256(d).hexdigest() == parts[1])
            return self.send_body(data, {"ETag": '"cdn-etag"'}, body)
        repo, file = "/".join(parts[:-3]), parts[-1]
        if repo not in srv.files:  # what huggingface.co answers without a token
            self.send_response(401)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        if parts[-3] != "resolve" or file not in srv.files[repo]:
            self.send_response(404)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        data = srv.files[repo][file]
        sha = hashlib.sha256(b"other" if srv.wrong_sha else data).hexdigest()
        if file in srv.lfs:
            self.send_response(302)
            for k, v in {"Location": f"{srv.cdn}/cdn/{hashlib.sha256(data).hexdigest()}", "X-Repo-Commit": COMMIT,
                         "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)),
                         "ETag": '"not-this-one"', "Content-Length": "0"}.items():
                self.send_header(k, v)
            return self.end_headers()
        git = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        self.send_body(data, {"X-Repo-Commit": COMMIT, "ETag": f'W/"{git}"'}, body)

    def send_body(self, data, headers, body):
        self.send_response(200)
        headers["Content-Length"] = str(len(data))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data[: len(data) // 2] if self.server.cut else data)
        self.close_connection = True


@pytest.fixture
def fake_hub(monkeypatch):
    for var in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # never send loopback requests to a proxy
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    srv = FakeHub()
    srv.files = {"org/tiny": {"config.json": b'{"hidden_size": 8}',
                              "model.safetensors": os.urandom(100_000)}}
    srv.lfs = {"model.safetensors"}
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


# -----------------------------------------------------------------------------
# download_url

def test_download_verifies_size_and_sha256(fake_hub, tmp_path):
    data = fake_hub.files["org/tiny"]["config.json"]
    dest = download_url(f"{fake_hub.url}/org/tiny/resolve/main/config.json", tmp_path / "c.json",
                        expected_size=len(data), expected_sha256=hashlib.sha256(data).hexdigest())
    assert dest == tmp_path / "c.json" and dest.read_bytes() == data


def test_download_cut_off_raises_leaves_nothing_and_retry_works(fake_hub, tmp_path):
    url = f"{fake_hub.url}/org/tiny/resolve/main/config.json"
    fake_hub.cut = True
    with pytest.raises(DownloadError, match="cut off"):
        download_url(url, tmp_path / "c.json")
    assert files_under(tmp_path) == []
    fake_hub.cut = False
    assert download_url(url, tmp_path / "c.json").read_bytes() == fake_hub.files["org/tiny"]["config.json"]


@pytest.mark.parametrize("kwargs, problem", [
    ({"expected_sha256": "0" * 64}, "does not match"),
    ({"expected_size": 3}, "expected 3"),
])
def test_download_with_wrong_sha256_or_size_keeps_nothing(fake_hub, tmp_path, kwargs, problem):
    with pytest.raises(DownloadError, match=problem):
        download_url(f"{fake_hub.url}/org/tiny/resolve/main/config.json", tmp_path / "c.json", **kwargs)
    assert files_under(tmp_path) == []


def test_download_http_error_is_a_download_error(fake_hub, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404") as e:
        download_url(f"{fake_hub.url}/org/tiny/resolve/main/nope", tmp_path / "x")
    assert isinstance(e.value, OSError) and files_under(tmp_path) == []
    with pytest.raises(ValueError, match="https://"):
        download_url("file:///etc/passwd", tmp_path / "x")


# -----------------------------------------------------------------------------
# check_endpoint

@pytest.mark.parametrize("url, explicit, ok", [
    ("https://huggingface.co/", False, True), ("https://hf-mirror.com", True, True),
    ("http://127.0.0.1:8080", False, False), ("http://127.0.0.1:8080", True, True),
    ("ftp://example.com", True, False), ("file:///tmp", True, False), ("huggingface.co", True, False),
])
def test_check_endpoint_refuses_http_unless_explicit(url, explicit, ok):
    if ok:
        assert check_endpoint(url, explicit) == url.rstrip("/")
    else:
        with pytest.raises(ValueError, match="https://"):
            check_endpoint(url, explicit)


# -----------------------------------------------------------------------------
# hf_hub_download

def test_hf_download_uses_the_hugging_face_cache_layout(fake_hub, tmp_path):
    files = fake_hub.files["org/tiny"]
    repo_dir = tmp_path / "models--org--tiny"
    for name in ("model.safetensors", "config.json"):  # LFS through a redirect, and direct
        path = hf_hub_download("org/tiny", name, endpoint=fake_hub.url, cache_dir=tmp_path)
        assert path == repo_dir / "snapshots" / COMMIT / name
        assert path.read_bytes() == files[name]
    sha = hashlib.sha256(files["model.safetensors"]).hexdigest()
    git = hashlib.sha1(b"blob %d\0" % len(files["config.json"]) + files["config.json"]).hexdigest()
    assert sorted(p.name for p in (repo_dir / "blobs").iterdir()) == sorted([sha, git])
    link = repo_dir / "snapshots" / COMMIT / "model.safetensors"
    assert link.is_symlink() and os.readlink(link) == f"../../blobs/{sha}"
    assert (repo_dir / "refs" / "main").read_text() == COMMIT


def test_hf_second_call_and_offline_mode_make_no_request(fake_hub, tmp_path, monkeypatch):
    first = hf_hub_download("org/tiny", "config.json", endpoint=fake_hub.url, cache_dir=tmp_path)
    n = len(fake_hub.requests)
    assert hf_hub_download("org/tiny", "config.json", endpoint=fake_hub.url, cache_dir=tmp_path) == first
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hf_hub_download("org/tiny", "config.json", endpoint=fake_hub.url, cache_dir=tmp_path) == first
    assert len(fake_hub.requests) == n


def test_hf_offline_env_with_nothing_cached_says_what_to_fetch(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubOfflineError) as e:
        hf_hub_download("org/tiny", "config.json", endpoint=fake_hub.url, cache_dir=tmp_path)
    msg = str(e.value)
    assert "org/tiny" in msg and "config.json" in msg and str(tmp_path / "models--org--tiny") in msg
    assert fake_hub.requests == [] and isinstance(e.value, OSError)


def test_hf_unreachable_hub_with_nothing_cached_is_offline_error(fake_hub, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(HubOfflineError, match="cannot be reached") as e:
        hf_hub_download("org/tiny", "config.json", endpoint=dead, cache_dir=tmp_path)
    assert "org/tiny" in str(e.value) and str(tmp_path / "models--org--tiny") in str(e.value)


def test_hf_404_is_entry_not_found_and_remembered(fake_hub, tmp_path):
    for _ in range(2):
        with pytest.raises(EntryNotFoundError, match="pytorch_model.bin"):
            hf_hub_download("org/tiny", "pytorch_model.bin", endpoint=fake_hub.url, cache_dir=tmp_path)
    # the first 404 was remembered (no request the second time), as huggingface_hub does
    assert (tmp_path / "models--org--tiny" / ".no_exist" / COMMIT / "pytorch_model.bin").exists()
    assert len(fake_hub.requests) == 1 and issubclass(EntryNotFoundError, FileNotFoundError)


def test_hf_missing_repo_is_not_mistaken_for_a_missing_file(fake_hub, tmp_path):
    with pytest.raises(FileNotFoundError, match="'org/nope'") as e:
        hf_hub_download("org/nope", "model.safetensors", endpoint=fake_hub.url, cache_dir=tmp_path)
    assert not isinstance(e.value, EntryNotFoundError)  # so no caller falls back to another file


@pytest.mark.parametrize("switch", ["cut", "wrong_sha"])
def test_hf_failed_download_leaves_nothing_usable_and_retry_works(fake_hub, tmp_path, switch):
    setattr(fake_hub, switch, True)
    with pytest.raises(DownloadError):
        hf_hub_download("org/tiny", "model.safetensors", endpoint=fake_hub.url, cache_dir=tmp_path)
    assert files_under(tmp_path) == []  # no blob, no snapshot, no ref
    setattr(fake_hub, switch, False)
    path = hf_hub_download("org/tiny", "model.safetensors", endpoint=fake_hub.url, cache_dir=tmp_path)
    assert path.read_bytes() == fake_hub.files["org/tiny"]["model.safetensors"]


def test_hf_endpoint_and_cache_come_from_the_environment(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)  # set by the user, so http is allowed
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    path = hf_hub_download("org/tiny", "config.json")
    assert path.is_relative_to(tmp_path / "home" / "hub" / "models--org--tiny")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))  # takes precedence
    assert hf_hub_download("org/tiny", "config.json").is_relative_to(tmp_path / "cache")


def test_hf_default_endpoint_refuses_http_from_nowhere(fake_hub, tmp_path):
    assert hub.check_endpoint("https://huggingface.co") == "https://huggingface.co"
    with pytest.raises(ValueError, match="repo_id"):
        hf_hub_download("../etc", "config.json", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="filename"):
        hf_hub_download("org/tiny", "../../x", cache_dir=tmp_path)
    assert files_under(tmp_path) == [] and fake_hub.requests == []


# -----------------------------------------------------------------------------
# safe_extract_zip

def make_zip(path, entries):
    """entries: (name, bytes) or (name, bytes, external_attr)."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data, *attr in entries:
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # unix, so external_attr holds st_mode
            info.external_attr = (attr[0] if attr else stat.S_IFREG | 0o644) << 16
            z.writestr(info, data)
    return path


@pytest.mark.parametrize("evil, problem", [
    (("../evil", b"x"), "outside"),
    (("sub/../../evil", b"x"), "outside"),
    (("/abs/evil", b"x"), "absolute"),
    (("C:/evil", b"x"), "absolute"),
    (("link", b"/etc/passwd", stat.S_IFLNK | 0o777), "symbolic link"),
])
def test_zip_with_an_evil_entry_is_refused_before_writing_anything(tmp_path, evil, problem):
    zip_path = make_zip(tmp_path / "a.zip", [("ok.txt", b"fine"), evil])
    with pytest.raises(ValueError, match=problem) as e:
        safe_extract_zip(zip_path, tmp_path / "out")
    assert repr(evil[0]) in str(e.value)
    assert files_under(tmp_path) == ["a.zip"] and not os.path.exists("/abs/evil")


def test_normal_zip_extracts_every_file(tmp_path):
    entries = [("RTE/", b"", stat.S_IFDIR | 0o755), ("RTE/train.tsv", b"a\tb\n"),
               ("RTE/dev.tsv", b"c\td\n"), ("RTE/sub/../notes.txt", b"inside")]
    out = safe_extract_zip(make_zip(tmp_path / "a.zip", entries), tmp_path / "out")
    target = (tmp_path / "out").resolve()
    assert sorted(out) == sorted(target / p for p in ("RTE/train.tsv", "RTE/dev.tsv", "RTE/notes.txt"))
    assert (target / "RTE/train.tsv").read_bytes() == b"a\tb\n"
    assert (target / "RTE/notes.txt").read_bytes() == b"inside"


# -----------------------------------------------------------------------------
# load_torch_checkpoint

class Pwn:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_torch_checkpoint_of_tensors_loads(tmp_path):
    state = {"w": torch.randn(3, 2), "ids": torch.arange(4)}
    torch.save(state, tmp_path / "ok.bin")
    out = load_torch_checkpoint(tmp_path / "ok.bin")
    assert out.keys() == state.keys() and all(torch.equal(out[k], state[k]) for k in state)


@pytest.mark.parametrize("save", [lambda obj, p: torch.save({"w": obj}, p),
                                  lambda obj, p: p.write_bytes(pickle.dumps(obj, protocol=2))])
def test_torch_checkpoint_with_code_is_refused_and_never_runs(tmp_path, save):
    save(Pwn(str(tmp_path / "pwned")), tmp_path / "evil.bin")
    with pytest.raises(ValueError, match="other than tensors.*could run code"):
        load_torch_checkpoint(tmp_path / "evil.bin")
    assert not (tmp_path / "pwned").exists()


def test_torch_checkpoint_that_is_not_a_state_dict_is_refused(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.bin")
    with pytest.raises(ValueError, match="state dict"):
        load_torch_checkpoint(tmp_path / "list.bin")


@settings(max_examples=15, deadline=None)
@given(cut=st.floats(0.0, 0.99), legacy=st.booleans())
def test_torch_checkpoint_cut_short_is_one_error_naming_the_file(tmp_path_factory, cut, legacy):
    path = tmp_path_factory.mktemp("cut") / "pytorch_model.bin"
    torch.save({"w": torch.arange(4096.0)}, path, _use_new_zipfile_serialization=not legacy)
    whole = path.read_bytes()
    path.write_bytes(whole[:int(cut * len(whole))])
    with pytest.raises(ValueError, match=f"^{path}: damaged or truncated"):
        load_torch_checkpoint(path)


def test_every_cut_of_a_legacy_checkpoint_s_pickles_is_called_truncated_not_unsafe(tmp_path):
    """A legacy (non-zip) file cut inside its pickles can end inside a global's name, which the safe
    unpickler refuses as foreign: it is still named damaged or truncated, at every cut point."""
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.arange(64.0)}, path, _use_new_zipfile_serialization=False)
    whole = path.read_bytes()
    for cut in range(len(whole) - 64 * 4):  # every cut before the raw storage bytes
        path.write_bytes(whole[:cut])
        with pytest.raises(ValueError, match=f"^{path}: damaged or truncated"):
            load_torch_checkpoint(path)
