"""
Every file the project writes goes through hub.atomic_write: a write that fails (a full disk, a file larger
than the disk or the process may hold, a failed flush, fsync or rename) raises hub.WriteError naming the
file, leaves no temporary file and leaves the file written before intact. On the command line that is one
line naming the file and the last checkpoint that is intact, exit status 2.
"""
import errno
import os

import pytest
import torch
from hypothesis import given, settings, strategies as st

from encoder import hub
from command_line import flags, one_line, run


# -----------------------------------------------------------------------------
# on the command line


FULL_DISK = """
import errno, os
_fsync, _calls = os.fsync, [0]
def _full(fd):  # the third durable write fails as on a full disk: log.jsonl, checkpoint 1, then step 2's best adapter
    _calls[0] += 1
    if _calls[0] >= 3:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _fsync(fd)
os.fsync = _full
"""


def test_a_full_disk_names_the_file_and_says_the_last_checkpoint_is_intact(cli, kit, tmp_path):
    out = tmp_path / "full"
    code, _, err = cli(flags(kit, "--max-steps", "5", "--save-every", "1", "--out", out), tmp_path, prelude=FULL_DISK)
    one_line(code, err, 2, f"could not write {out / 'best' / 'adapter.safetensors'} (No space left on device)",
             f"{out / 'checkpoint.pt'} (step 1) is intact")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 1
    assert not list(out.glob("*.tmp"))


FILE_SIZE_LIMIT = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the kernel refuses the write (EFBIG) instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
"""


def test_a_checkpoint_the_disk_cannot_hold_is_one_line_naming_it(cli, kit, tmp_path):
    """A checkpoint the disk cannot hold is one line naming checkpoint.pt, though torch's zip writer turns the
    failed write into `RuntimeError: [enforce fail at inline_container.cc:672] unexpected pos ...`, not an
    OSError. Here the kernel refuses every file past 4 KiB (RLIMIT_FSIZE): log.jsonl fits, checkpoint.pt does
    not, and no temporary file is left."""
    out = tmp_path / "out"
    code, err = run(cli, kit, kit["model"], tmp_path, "--save-every", "1", prelude=FILE_SIZE_LIMIT)
    one_line(code, err, 2, f"could not write {out / 'checkpoint.pt'} (File too large); no checkpoint was written")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["log.jsonl"]  # no *.tmp left


# -----------------------------------------------------------------------------
# hub.atomic_write: one OSError, the temporary file removed, the old file intact


class FullDisk:
    """A file whose disk holds `room` more bytes: a write past them raises ENOSPC, as on a full tmpfs."""

    def __init__(self, file, room):
        self.file, self.room = file, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


def full_disk(monkeypatch, room):
    """hub.atomic_write's files, from now on, on a disk with `room` bytes left."""
    fdopen = os.fdopen
    monkeypatch.setattr(hub.os, "fdopen", lambda fd, *args, **kwargs: FullDisk(fdopen(fd, *args, **kwargs), room))


def writers():
    """(name, function of a path) for each way the project writes a file through atomic_write."""
    tensors = {"weight": torch.arange(600, dtype=torch.float32).reshape(20, 30), "step": torch.tensor(7)}

    def torch_save(path):
        with hub.atomic_write(path) as f:
            torch.save(tensors, f)

    return [("torch.save", torch_save), ("write_safetensors", lambda path: hub.write_safetensors(path, tensors))]


@settings(max_examples=30, deadline=None)
@given(room=st.integers(0, 2000), which=st.sampled_from([name for name, _ in writers()]))
def test_any_failed_write_is_a_write_error_and_leaves_the_old_file(tmp_path_factory, room, which):
    """Whatever byte the disk fills at, and whatever the writer on top makes of it (torch's zip writer: a
    RuntimeError), atomic_write raises hub.WriteError, an OSError with the disk's errno and strerror and the
    destination's name; the temporary file is gone and the file written before is intact."""
    folder = tmp_path_factory.mktemp("disk")
    path = folder / "checkpoint.pt"
    path.write_bytes(b"the last good checkpoint")
    with pytest.MonkeyPatch.context() as monkeypatch:
        full_disk(monkeypatch, room)
        with pytest.raises(hub.WriteError) as failed:
            dict(writers())[which](path)
    error = failed.value
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC and error.filename == str(path)
    assert str(error) == f"could not write {path} (No space left on device)"
    assert path.read_bytes() == b"the last good checkpoint" and [p.name for p in folder.iterdir()] == [path.name]


def test_a_failed_flush_fsync_or_rename_is_a_write_error_and_the_callers_own_errors_pass(tmp_path, monkeypatch):
    """The steps after the caller's writes fail as WriteError too (an fsync on a full disk, a rename onto a
    folder); an exception of the caller's own (a bug, Ctrl-C) is not a write failure and passes unchanged.
    Every time, no temporary file is left."""
    (tmp_path / "a_folder").mkdir()
    with pytest.raises(hub.WriteError, match=f"could not write {tmp_path / 'a_folder'} \\(Is a directory\\)"):
        with hub.atomic_write(tmp_path / "a_folder") as f:
            f.write(b"data")
    for error in (RuntimeError("a bug"), KeyboardInterrupt()):
        with pytest.raises(type(error)) as raised:
            with hub.atomic_write(tmp_path / "f") as f:
                f.write(b"data")
                raise error
        assert raised.value is error
    monkeypatch.setattr(hub.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(hub.WriteError, match=f"could not write {tmp_path / 'f'} \\(No space left\\)"):
        with hub.atomic_write(tmp_path / "f", "w") as f:
            f.write("text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_folder"] and not list((tmp_path / "a_folder").iterdir())
