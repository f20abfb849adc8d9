"""``coinfluence models``: pretrained models as ordinary checkpoint dirs (``models import``)."""

from pathlib import Path
from typing import Optional

import typer

from coinfluence.errors import UserError

app = typer.Typer(no_args_is_help=True, help="Pretrained models: import a GGUF file into a checkpoint dir.")


@app.command("import")
def import_cmd(
    name: str = typer.Argument("smollm2-135m", help="named model, e.g. smollm2-135m (its GGUF file comes from the "
                                                    "`pretrained` extra); ignored with --gguf"),
    gguf: Optional[Path] = typer.Option(None, "--gguf", help="import this GGUF file instead (needs --out)"),
    out: Optional[Path] = typer.Option(None, "--out", help="checkpoint dir to write [the named model's cache dir, "
                                                           "$COINFLUENCE_CACHE/models/NAME, default ~/.cache/coinfluence]"),
    prompt_format: str = typer.Option("chat", "--prompt-format", help="chat or plain: prompts as the user turn of "
                                                                       "the tokenizer's chat template, or plain `<bos> PROMPT \\n`"),
) -> None:
    """Write a safetensors Hugging Face checkpoint dir (weights dequantised to float32, config, tokenizer), once."""
    # Imported here, not at the top: the CLI starts without torch and transformers.
    from coinfluence.models.gguf_import import NAMED_MODELS, PROMPT_FORMATS, import_gguf, import_named, is_imported, named_model_dir
    from coinfluence.training.checkpoint import quiet_hf_progress

    if gguf is not None and out is None:
        raise UserError("--gguf needs --out (the checkpoint dir to write)")
    if gguf is None and name not in NAMED_MODELS:
        raise UserError(f"unknown model {name!r}; named models: {', '.join(NAMED_MODELS)} (or pass --gguf FILE --out DIR)")
    target = out if out is not None else named_model_dir(name)
    if is_imported(target):
        typer.echo(f"already imported: {target}")
        return
    typer.echo(f"importing {gguf or name} -> {target}/ ...", err=True)
    with quiet_hf_progress():
        done = import_gguf(gguf, target, prompt_format=prompt_format) if gguf else import_named(name, prompt_format=prompt_format, out_dir=out)
    typer.echo(f"checkpoint: {done}")
