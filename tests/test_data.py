import gzip
from pathlib import Path

import pytest
import torch

from pruning.data import BUNDLED, DataUnavailableError, load_text, tokenize_windows, wikitext2_text


class CharTokenizer:
    def __call__(self, text, return_tensors=None, add_special_tokens=False):
        class Out:
            input_ids = torch.tensor([[ord(c) % 256 for c in text]])
        return Out()


def test_bundled_wikitext_is_the_official_file(shared_data_dir):
    if shared_data_dir is None:
        pytest.skip("needs ../shared/data to compare against")
    for name in ("wiki.valid.raw", "wiki.test.raw"):
        bundled = gzip.open(BUNDLED / "wikitext-2-raw" / (name + ".gz")).read()
        assert bundled == (Path(shared_data_dir) / "wikitext-2-raw" / name).read_bytes()


def test_wikitext_protocol_rows_joined_with_blank_lines():
    text = wikitext2_text("test")
    assert text.startswith("\n\n = Robert Boulter = \n\n\n")  # rows: "", title, "", ...
    assert "\n\n" in text and wikitext2_text("validation") != text


def test_splits_come_from_the_data_dir_first(tmp_path):
    (tmp_path / "wikitext-2-raw").mkdir()
    (tmp_path / "wikitext-2-raw" / "wiki.valid.raw").write_text(" = A = \n \n b c \n")
    assert wikitext2_text("validation", tmp_path) == "\n\n".join([" = A = \n", "", " b c \n"])


def test_windows_are_non_overlapping_and_complete():
    windows = tokenize_windows("abcdefghij" * 5, CharTokenizer(), seqlen=8)
    assert windows.input_ids.shape == (6, 8)
    assert windows.input_ids.flatten().tolist() == [ord(c) for c in ("abcdefghij" * 5)[:48]]
    sample = windows.sample(3, seed=1)
    assert len(sample) == 3 and len({tuple(r) for r in sample.input_ids.tolist()}) == 3


def test_windows_start_with_bos_for_families_that_need_it():
    tokenizer = CharTokenizer()
    tokenizer.window_bos_id = 2  # what the loader sets for Gemma (families.py: bos_per_window)
    windows = tokenize_windows("abcdefghij" * 5, tokenizer, seqlen=8)
    assert windows.input_ids.shape == (7, 8) and windows.input_ids[:, 0].tolist() == [2] * 7
    assert windows.input_ids[:, 1:].flatten().tolist() == [ord(c) for c in ("abcdefghij" * 5)[:49]]


def test_missing_data_names_the_options(tmp_path):
    with pytest.raises(DataUnavailableError, match="--data-dir"):
        load_text("c4", "validation", tmp_path)
    with pytest.raises(DataUnavailableError, match="neither"):
        load_text("no-such-source", "validation")
    with pytest.raises(DataUnavailableError, match="not a directory"):
        load_text("wikitext2", "test", tmp_path / "missing")


def test_c4_from_data_dir(shared_data_dir):
    if shared_data_dir is None:
        pytest.skip("needs ../shared/data")
    assert len(load_text("c4", "validation", shared_data_dir)) > 1_000_000
