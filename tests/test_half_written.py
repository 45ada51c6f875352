"""Nothing half-written looks finished: checkpoint and DeciLM folders are written aside and moved into
place whole; a full disk (fault injected) and a truncated shard are one line naming the file, exit 2,
and leave no folder with a config.json and no .gguf."""
import errno

import pytest

from main import main
from pruning.checkpoint import CorruptCheckpointError, DiskFullError, check_safetensors, save_pruned
from tests.test_deploy import saved_checkpoint


def no_model_left(folder) -> bool:
    return not any(p.name == "config.json" for p in folder.rglob("*")) and not list(folder.rglob("*.gguf"))


def test_a_full_disk_while_saving_leaves_no_model_folder(tmp_path, monkeypatch):
    pruned, _ = saved_checkpoint(tmp_path / "first")
    original = pruned.save_pretrained

    def fill_the_disk(folder, **kwargs):
        original(folder, **kwargs)  # config.json and the weights are written ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the tokenizer's files do not fit

    monkeypatch.setattr(pruned, "save_pretrained", fill_the_disk)
    target = tmp_path / "runs" / "model"
    with pytest.raises(DiskFullError, match="no space left.*nothing half-written"):
        save_pruned(pruned, None, target, {"plan": []})
    assert not target.exists() and no_model_left(tmp_path / "runs")


def test_a_save_replaces_a_finished_folder_whole(tmp_path):
    pruned, out = saved_checkpoint(tmp_path)
    (out / "stale.txt").write_text("from an earlier save")
    save_pruned(pruned, None, out, {"plan": "again"})
    assert not (out / "stale.txt").exists() and '"again"' in (out / "pruning.json").read_text()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # nothing aside is left


def test_a_truncated_shard_is_named_and_nothing_is_exported(tmp_path, capsys):
    _, out = saved_checkpoint(tmp_path)
    check_safetensors(out)  # whole: passes
    shard = out / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])  # a copy cut short
    with pytest.raises(CorruptCheckpointError, match="model.safetensors"):
        check_safetensors(out)
    exports = tmp_path / "exports"
    for args in (["export", str(out), "--out", str(exports / "m.gguf")],
                 ["export", str(out), "--format", "decilm", "--out", str(exports / "deci")]):
        assert main(args) == 2
        err = "".join(capsys.readouterr().err.split())  # rich wraps long paths anywhere
        assert "model.safetensors:" in err and "istruncated" in err and "Traceback" not in err
    assert not exports.exists() or no_model_left(exports)
