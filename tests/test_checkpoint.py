import os
import pickle

import pytest
import torch

from ddpm.io import checkpoint as C


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_crafted_pickle_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": C.FORMAT, "payload": Evil()}, path)
    with pytest.raises(C.CheckpointError, match="refused"):
        C.load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(C.CheckpointError):
        C.load_checkpoint(raw)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("content", [b"", b"hello", os.urandom(4096)])
def test_garbage_files_give_a_clear_error(tmp_path, content):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(C.CheckpointError, match="x.pt"):
        C.load_checkpoint(path)


def test_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(C.CheckpointError, match="no such"):
        C.load_checkpoint(tmp_path / "none.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(C.CheckpointError, match="not a ddpm-from-scratch"):
        C.load_checkpoint(tmp_path / "other.pt")


def test_atomic_save_replaces_and_prune_keeps_newest(tmp_path):
    for step in (1, 2, 3):
        C.atomic_save({"format": C.FORMAT, "step": step}, tmp_path / f"ckpt-{step:07d}.pt")
    (tmp_path / ".ckpt-0000004.pt.abc123.tmp").write_bytes(b"half a checkpoint")  # a crash
    C.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in C.list_checkpoints(tmp_path)] == ["ckpt-0000002.pt", "ckpt-0000003.pt"]
    assert not list(tmp_path.glob("*.tmp"))
