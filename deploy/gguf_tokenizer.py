"""The tokenizer and chat template of a GGUF, from the best source there is.

1. The GGUF the model came from (the embedded SmolLM2 is one): its `tokenizer.*` keys are
   copied as they are, so llama.cpp tokenizes exactly as it did for the original.
2. Hugging Face tokenizer files, read with the `gguf` package's vocabulary classes (the ones
   llama.cpp's own converter is built on): GPT-2-style BPE (`tokenizer.json` / `vocab.json`),
   Llama's byte-fallback BPE (`tokenizer.json`) or SentencePiece (`tokenizer.model`), plus
   merges, special tokens and the chat template (`SpecialVocab`).
3. Nothing (a tiny test model): `tokenizer.ggml.model = "none"`; llama.cpp then takes token ids.
"""
from __future__ import annotations

import json
from pathlib import Path

import gguf

# llama.cpp picks its pre-tokenizer (how text is split before BPE) by name. Its converter finds
# the name by hashing an encoding; we match the tokenizer's own split pattern instead, for the
# families we know. Unknown patterns get no name: llama.cpp then warns and uses its default split.
_LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
PRE_TOKENIZERS = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2"}


def source_gguf(directory: Path, record: dict) -> Path | None:
    """The GGUF this checkpoint was made from, if any (written by the embedded model's loader)."""
    candidates = [directory] + ([Path(record["source"])] if isinstance(record.get("source"), str) else [])
    for folder in candidates:
        marker = folder / "self_pruner_source.json"
        if marker.is_file():
            path = Path(json.loads(marker.read_text()).get("gguf", ""))
            if path.is_file():
                return path
    from pruning.loading import EMBEDDED, embedded_gguf_path

    if record.get("source_model") in EMBEDDED:  # a record written before `source` was kept
        return embedded_gguf_path(record["source_model"])
    return None


def copy_tokenizer(writer: gguf.GGUFWriter, path: Path) -> str:
    reader = gguf.GGUFReader(str(path))
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        main = gguf.GGUFValueType(field.types[0])
        sub = gguf.GGUFValueType(field.types[-1]) if main == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), main, sub_type=sub)
    return f"copied from {path.name}"


def hf_tokenizer(writer: gguf.GGUFWriter, directory: Path, vocab_size: int) -> str | None:
    """Write the vocabulary of HF tokenizer files; None when the folder has none we can read."""
    vocab = None
    kinds = [gguf.vocab.BpeVocab, gguf.vocab.LlamaHfVocab]
    if (directory / "tokenizer.model").is_file():
        kinds.append(gguf.vocab.SentencePieceVocab)
    for kind in kinds:
        try:
            vocab = kind(directory)
            break
        except (FileNotFoundError, TypeError):
            continue
        except RuntimeError as err:  # gguf raises this when the sentencepiece package is missing
            from deploy.checkpoint_reader import ExportError

            raise ExportError(f"{directory} has a SentencePiece tokenizer: pip install sentencepiece ({err})") from err
    if vocab is None:
        return None
    tokens, scores, types = [], [], []
    for text, score, kind in vocab.all_tokens():
        tokens.append(text if isinstance(text, bytes) else text.encode("utf-8"))
        scores.append(score)
        types.append(kind)
    for k in range(len(tokens), vocab_size):  # embedding rows beyond the tokenizer: padding tokens
        tokens.append(f"[PAD{k}]".encode())
        scores.append(-1000.0)
        types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model(vocab.tokenizer_model)
    pre = _pre_tokenizer(directory) if vocab.tokenizer_model == "gpt2" else None
    if pre:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    if vocab.tokenizer_model != "gpt2":
        writer.add_token_scores(scores)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(directory, load_merges=vocab.tokenizer_model == "gpt2", n_vocab=len(tokens))
    special.add_to_gguf(writer, quiet=True)
    note = f"{vocab.name} vocabulary of {len(tokens)} tokens"
    if vocab.tokenizer_model == "gpt2" and not pre:
        note += " (unknown pre-tokenizer: llama.cpp uses its default split, which can tokenize some text differently)"
    return note


def _pre_tokenizer(directory: Path) -> str | None:
    path = directory / "tokenizer.json"
    if not path.is_file():
        return None
    pre = json.loads(path.read_text()).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre])
    for step in steps:
        regex = (step.get("pattern") or {}).get("Regex")
        if regex in PRE_TOKENIZERS:
            return PRE_TOKENIZERS[regex]
    return None


def write_tokenizer(writer: gguf.GGUFWriter, directory: Path, record: dict, vocab_size: int) -> str:
    """Write the tokenizer keys; returns a line saying where they came from."""
    source = source_gguf(directory, record)
    if source is not None:
        return copy_tokenizer(writer, source)
    note = hf_tokenizer(writer, directory, vocab_size)
    if note is not None:
        return note
    writer.add_tokenizer_model("none")
    return "no tokenizer files: token ids only"
