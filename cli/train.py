"""``coinfluence train`` and ``coinfluence eval``.

Every option is checked (``UserError``) before data is generated or a model is built.
"""

import shlex
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import typer

from coinfluence.errors import UserError
from coinfluence.io import RUN_LOCK

from .options import check_finite
from coinfluence.tasks.registry import DEFAULT_TASK, presets_help, tasks_help
from coinfluence.tasks.rewards import DEFAULT_REWARD, REWARD_HELP

SPLIT_NAMES = ("sft", "rl_train", "val_id", "val_ood", "test_id", "test_ood")
BEHAVIOURS = ("none", "explore", "exploit", "both")


DATA_HELP = ("a dir of split files (SPLIT.jsonl or SPLIT.parquet), a saved Hugging Face DatasetDict, or one split: "
             "a .jsonl/.parquet file or a saved Dataset")


def split_sources(data: Path, needed, one_split_as: Optional[str] = None) -> dict[str, Path]:
    """The splits of ``--data`` by name (see ``io.data_splits``), with every ``needed`` one there;
    a single file or saved Dataset is taken as split ``one_split_as`` (UserError where None)."""
    from coinfluence.io import data_splits, is_one_split

    found = data_splits(data)
    if is_one_split(data):
        if one_split_as is None:
            raise UserError(f"--data {data} is one split; this needs {', '.join(needed)}: pass a dir of splits or a saved DatasetDict")
        return {one_split_as: data}
    missing = [s for s in needed if s not in found]
    if missing:
        raise UserError(f"{data} lacks the splits {', '.join(missing)} (it has {', '.join(found) or 'none'})")
    return found


def read_splits(sources: dict[str, Path], names) -> dict[str, list[dict]]:
    from coinfluence.io import read_rows

    return {s: read_rows(sources[s], ("prompt", "answer")) for s in names if s in sources}


def resolve_behaviours(bridge: bool, vanilla: bool, behaviours: Optional[str]) -> Optional[str]:
    chosen = [name for name, on in (("--bridge", bridge), ("--vanilla", vanilla), ("--behaviours", behaviours is not None)) if on]
    if len(chosen) > 1:
        raise UserError(f"{' and '.join(chosen)} contradict each other; pass one")
    if behaviours is not None and behaviours not in BEHAVIOURS:
        raise UserError(f"--behaviours must be one of {', '.join(BEHAVIOURS)}, got {behaviours!r}")
    return "both" if bridge else "none" if vanilla else behaviours


def variant_name(behaviours: str) -> str:
    return {"both": "bridge", "none": "vanilla"}.get(behaviours, behaviours)


def task_tokenizer(task_preset: Optional[str], rows_by_split: dict, data_dir: Optional[Path] = None, task=None):
    """Word-level tokenizer from ``task``'s vocabulary (a Task or a name; None: the default) plus
    every text of the data; the task config (of ``data_dir``'s data_config.json when it has one,
    else of the preset) says whether possessives are single tokens."""
    from dataclasses import asdict

    from coinfluence.io import read_json
    from coinfluence.models.tokenizer import build_tokenizer
    from coinfluence.tasks.data import DATA_CONFIG, DataConfig
    from coinfluence.tasks.registry import get_task

    task = get_task(task)
    task_preset = task_preset or task.default_preset
    saved = data_dir / DATA_CONFIG if data_dir is not None else None
    if saved is not None and saved.exists():
        config = read_json(saved).get("task", {})
    else:
        config = asdict(DataConfig(task=task.name, preset=task_preset).validate()) if task_preset in task.presets else {}
    possessive = task.possessive_tokens(config)
    words = list(task.vocabulary(task_preset)) if task_preset in task.presets else []
    texts = [t for rows in rows_by_split.values() for r in rows for t in (r["prompt"], r["completion"])]
    return build_tokenizer(words + texts, possessive=possessive)


def train_record(out: Path, stage: str, data: Path, data_cfg, preset: str, from_sft: Optional[Path], seed: int,
                 eval_size: int) -> dict:
    """OUT/config.json's ``train`` entry. A ``--stage grpo`` run on top of this run's own SFT keeps
    what the SFT stage recorded (its model, its data) and adds the RL data when it differs."""
    from dataclasses import asdict

    from coinfluence.io import read_json

    if data_cfg is not None:
        generated = asdict(data_cfg)
    else:  # given data: its generator config, when the data dir carries one
        path = data / "data_config.json"
        generated = read_json(path).get("data") if path.exists() else None
    entry = {"stage": stage, "data": str(data), "data_config": generated,
             "model": str(from_sft) if from_sft else preset if stage != "grpo" else str(out / "sft"),
             "from_sft": str(from_sft) if from_sft else None, "seed": seed, "eval_size": eval_size}
    path = out / "config.json"
    previous = (read_json(path).get("train") or {}) if path.exists() else {}
    if stage == "grpo" and from_sft is None and previous.get("stage") in ("sft", "all"):
        entry = {**previous, "stage": "all", "eval_size": eval_size}
        if str(data) != previous.get("data"):
            entry["rl_data"] = str(data)
    return entry


def train(
    stage: str = typer.Option("all", help="sft, grpo, or all (sft then grpo)"),
    data: Optional[Path] = typer.Option(None, help=f"existing data: {DATA_HELP} (the training split of --stage sft or grpo); default: generate into OUT/data"),
    bridge: bool = typer.Option(False, "--bridge", help="generate BRIDGE data (behaviours both)"),
    vanilla: bool = typer.Option(False, "--vanilla", help="generate plain data (behaviours none)"),
    behaviours: Optional[str] = typer.Option(None, help="behaviours of generated data: none, explore, exploit, both [data default]"),
    task: Optional[str] = typer.Option(None, "--task", help=f"the task: {tasks_help()} [the one --data was generated for, else {DEFAULT_TASK}]"),
    task_preset: Optional[str] = typer.Option(None, help=f"task scale of generated data: {presets_help()}"),
    preset: str = typer.Option("tiny", help="model: a preset (nano, tiny, small, base) or a HF checkpoint dir"),
    out: Optional[Path] = typer.Option(None, help="run directory [runs/<variant>-<preset>-s<seed>]"),
    resume: bool = typer.Option(False, "--resume", help="continue a killed run from its latest checkpoints"),
    seed: int = typer.Option(0, help="seed of data, initialisation, data order and rollouts"),
    from_sft: Optional[Path] = typer.Option(None, help="RL from this checkpoint (any HF causal LM dir) instead of OUT/sft"),
    sft_steps: Optional[int] = typer.Option(None, help="SFT optimizer steps, instead of --sft-epochs"),
    sft_epochs: Optional[float] = typer.Option(None, help="SFT passes over the data (matches variants by epochs, not steps) [12]"),
    learning_rate: Optional[float] = typer.Option(None, help="peak SFT learning rate [3e-3]"),
    tokens_per_batch: Optional[int] = typer.Option(None, help="SFT token budget per micro-batch, padding included [2048]"),
    gradient_accumulation_steps: Optional[int] = typer.Option(None, help="SFT micro-batches per optimizer step [1]"),
    full_loss: bool = typer.Option(False, "--full-loss", help="SFT loss on prompt tokens too (default: completion only)"),
    grpo_steps: Optional[int] = typer.Option(None, help="GRPO steps [120]"),
    grpo_learning_rate: Optional[float] = typer.Option(None, help="GRPO learning rate [1e-4]"),
    num_generations: Optional[int] = typer.Option(None, help="GRPO rollouts per query, G [8]"),
    prompts_per_step: Optional[int] = typer.Option(None, help="GRPO queries per step [16]"),
    beta: Optional[float] = typer.Option(None, help="GRPO k3 KL weight to the SFT model [0]"),
    loss_type: Optional[str] = typer.Option(None, help="grpo, dr_grpo or dapo [grpo]"),
    scale_rewards: Optional[str] = typer.Option(None, help="group, batch or none [group]"),
    std: Optional[str] = typer.Option(None, help="advantage std: population or unbiased [population]"),
    temperature: Optional[float] = typer.Option(None, help="GRPO sampling temperature [1.0]"),
    reward: Optional[str] = typer.Option(None, help=f"GRPO reward and the accuracy of the final eval: {REWARD_HELP} [answer]"),
    max_completion_length: Optional[int] = typer.Option(None, help="GRPO new-token limit [longest SFT completion + 32]"),
    eval_steps: Optional[int] = typer.Option(None, help="validation accuracy every N steps [SFT 100, GRPO 25]"),
    eval_size: int = typer.Option(200, help="rows per split for the validation accuracy and the final eval"),
    save_steps: Optional[int] = typer.Option(None, help="checkpoint every N steps [SFT 200, GRPO 50]"),
    progress: bool = typer.Option(True, help="show progress bars"),
    report_to: str = typer.Option("none", "--report-to", help="also log every metric to: none or tensorboard (RUN/tensorboard/, scalars sft/loss, grpo/reward, ...; needs the tensorboard extra)"),
):
    """Train on generated or given data: SFT, then GRPO, then greedy test accuracy."""
    check_finite(locals())
    from coinfluence.device import default_device, model_device
    from coinfluence.io import remove_stale_temporaries, run_lock
    from coinfluence.distributed import barrier, is_main
    from coinfluence.models.loading import check_checkpoint_dir, is_preset, load_model, load_tokenizer
    from coinfluence.training import checkpoint as ckpt_io
    from coinfluence.training.checkpoint import quiet_hf_progress
    from coinfluence.training.evaluate import evaluate_checkpoint
    from coinfluence.training.grpo import GRPOConfig, step_checkpoints, train_grpo
    from coinfluence.training.grpo import validate_config as validate_grpo
    from coinfluence.training.metrics import TENSORBOARD_DIR, check_report_to, metric_sink
    from coinfluence.training.sft import CHECKPOINT_DIR, SFTConfig, auto_max_new_tokens, train_sft, update_run_config, validate_config
    from coinfluence.tasks.registry import resolve_task

    # ---- validate everything before any work
    if stage not in ("sft", "grpo", "all"):
        raise UserError(f"--stage must be sft, grpo or all, got {stage!r}")
    chosen = resolve_behaviours(bridge, vanilla, behaviours)
    if data is not None and chosen is not None:
        raise UserError("--bridge/--vanilla/--behaviours choose how data is generated; they cannot be combined with --data")
    task = resolve_task(task, data)
    if data is not None:
        needed = ("sft",) if stage == "sft" else ("rl_train",) if from_sft else ("sft", "rl_train")
        sources = split_sources(data, needed, one_split_as={"sft": "sft", "grpo": "rl_train"}.get(stage))
    if not is_preset(preset):
        check_checkpoint_dir(preset)
    if from_sft is not None:
        if stage != "grpo":
            raise UserError("--from-sft starts RL from a checkpoint; use it with --stage grpo")
        from_sft = check_checkpoint_dir(from_sft)
    if sft_steps is not None and sft_epochs is not None:
        raise UserError("--sft-steps and --sft-epochs both set the SFT length; pass one")
    if eval_size < 0:
        raise UserError(f"--eval-size must be >= 0, got {eval_size}")
    pick = lambda **kw: {k: v for k, v in kw.items() if v is not None}  # noqa: E731
    cfg = SFTConfig(seed=seed, eval_size=eval_size, completion_only_loss=not full_loss, **pick(
        max_steps=sft_steps, num_train_epochs=sft_epochs, learning_rate=learning_rate, tokens_per_batch=tokens_per_batch,
        gradient_accumulation_steps=gradient_accumulation_steps, eval_steps=eval_steps, save_steps=save_steps))
    validate_config(cfg)
    gcfg = GRPOConfig(seed=seed, eval_size=eval_size, **pick(
        max_steps=grpo_steps, learning_rate=grpo_learning_rate, num_generations=num_generations,
        prompts_per_step=prompts_per_step, beta=beta, loss_type=loss_type, scale_rewards=scale_rewards, std=std,
        temperature=temperature, reward=reward, max_completion_length=max_completion_length, eval_steps=eval_steps, save_steps=save_steps))
    validate_grpo(gcfg)
    check_report_to(report_to)
    data_cfg = None
    if data is None:
        from coinfluence.tasks.data import DataConfig

        data_cfg = DataConfig(task=task.name, preset=task_preset, seed=seed, **({"behaviours": chosen} if chosen else {}))
        data_cfg.validate()
    variant = variant_name(data_cfg.behaviours) if data_cfg else Path(data).name
    model_name = preset if is_preset(preset) else Path(preset).name
    prefix = "" if task.name == DEFAULT_TASK else f"{task.name}-"
    out = out or Path("runs") / f"{prefix}{variant}-{model_name}-s{seed}"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    sft_done = (out / "sft" / "config.json").exists()
    if stage != "grpo" and not resume and (sft_done or ckpt_io.list_checkpoints(out / CHECKPOINT_DIR)):
        raise UserError(f"{out} already holds an SFT run; pass --resume to continue it or choose another --out")
    if stage != "sft" and not resume and step_checkpoints(out / "grpo"):
        raise UserError(f"{out} already holds a GRPO run; pass --resume to continue it or choose another --out")
    if stage == "grpo" and from_sft is None and not sft_done:
        raise UserError(f"{out}/sft not found: run --stage sft first or pass --from-sft PATH")
    check_train_out(out, continuing=resume or (stage == "grpo" and sft_done))
    reuse_data = check_data(data, out / "data", data_cfg)
    sinks = ExitStack()
    if is_main():  # under torchrun rank 0 owns the run dir
        sinks.enter_context(run_lock(out))
        remove_stale_temporaries(out)

    # ---- data
    if data is None:
        data = out / "data"
        if reuse_data:
            typer.echo(f"reusing data in {data}/", err=True)
        elif is_main():  # under torchrun rank 0 writes, the others wait for it
            from coinfluence.tasks.data import write_dataset

            typer.echo(f"generating data into {data}/ ...", err=True)
            write_dataset(data, data_cfg)
        barrier()
        sources = split_sources(data, ("sft", "rl_train"))
    rows = read_splits(sources, SPLIT_NAMES)
    if is_main():
        update_run_config(out, "train", {**train_record(out, stage, data, data_cfg, preset, from_sft, seed, eval_size),
                                         "device": str(default_device())})
    evaluated: list[tuple[str, Path]] = []
    # Every row reaches the sink flushed as it is logged, so a run that fails before close() loses nothing.
    sink = sinks.enter_context(metric_sink(out, report_to if is_main() else "none"))

    # ---- SFT
    if stage in ("sft", "all") and not (resume and sft_done):
        latest = ckpt_io.latest_checkpoint(out / CHECKPOINT_DIR) if resume else None
        if is_preset(preset):
            tokenizer = load_tokenizer(latest) if latest else task_tokenizer(task_preset, rows, data, task)
            model, tokenizer = load_model(preset, tokenizer, seed=seed)
        else:
            model, tokenizer = load_model(preset)
        n_params = sum(p.numel() for p in model.parameters())
        typer.echo(f"sft: {model_name} ({n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}) on {len(rows['sft'])} rows, "
                   f"{model_device(model)} -> {out}/", err=True)
        with quiet_hf_progress():
            train_sft(cfg, model, tokenizer, rows["sft"], rows.get("val_id", []), out, resume=resume, progress=progress, sink=sink,
                      task=task)
    if stage in ("sft", "all"):
        evaluated.append(("sft", out / "sft"))

    # ---- GRPO
    if stage in ("grpo", "all"):
        init = from_sft or out / "sft"
        with quiet_hf_progress():
            model, tokenizer = load_model(init)
        if max_completion_length is None and "sft" in rows:
            gcfg.max_completion_length = auto_max_new_tokens(tokenizer, rows["sft"])
        typer.echo(f"grpo: from {init} on {len(rows['rl_train'])} queries, {gcfg.max_steps} steps x "
                   f"{gcfg.prompts_per_step} queries x {gcfg.num_generations} rollouts -> {out}/grpo/", err=True)
        vals = {s: rows[s] for s in ("val_id", "val_ood") if s in rows}
        with quiet_hf_progress():
            train_grpo(gcfg, model, tokenizer, rows["rl_train"], vals, out, resume=resume, progress=progress, sink=sink, task=task)
        evaluated.append(("grpo/final", out / "grpo" / "final"))
    if not is_main():  # under torchrun rank 0 evaluates and reports
        return

    # ---- greedy test accuracy of every checkpoint this run produced
    tests = {s: rows[s] for s in ("test_id", "test_ood") if s in rows}
    typer.echo(f"run: {out}/")
    typer.echo(f"metrics: {out / 'metrics.jsonl'}")
    for name, path in evaluated:
        if not tests or not eval_size:
            break
        with quiet_hf_progress():
            model, tokenizer = load_model(path)
        results = evaluate_checkpoint(
            model, tokenizer, tests, out, name, limit=eval_size, reward=gcfg.reward, task=task,
            max_new_tokens=auto_max_new_tokens(tokenizer, rows["sft"]) if "sft" in rows else 512,
        )
        accs = ", ".join(f"{s} {accuracy_text(r)}" for s, r in results.items())
        typer.echo(f"{name}: {path}/ ({accs})")
    if evaluated and tests and eval_size:
        typer.echo(f"eval: {out / 'eval.json'}")
    sinks.close()
    if report_to == "tensorboard":
        typer.echo(f"tensorboard: tensorboard --logdir {shlex.quote(str(out / TENSORBOARD_DIR))}")
    from coinfluence.plots.html_report import report_command

    typer.echo(f"report: {report_command(out)}")


def check_train_out(out: Path, continuing: bool) -> None:
    """A new run starts only in an absent or empty dir (or one holding just its data/); a run is
    continued (--resume, or --stage grpo after --stage sft) only in a run dir, so that training
    never writes among files it did not create."""
    from coinfluence.io import check_writable, read_json

    check_writable(out)
    if not out.is_dir():
        return
    entries = [e.name for e in out.iterdir() if e.name not in ("data", RUN_LOCK)]
    if not entries:
        return
    if not continuing:
        raise UserError(f"--out {out} is not empty (it holds {entries[0]}); pass --resume to continue a run there or choose another --out")
    config = out / "config.json"
    try:
        is_run = config.is_file() and "model_type" not in read_json(config)
    except ValueError:
        is_run = False
    if not is_run:
        raise UserError(f"--out {out} holds files but no run (no run config.json); choose another --out")


def check_data(data: Optional[Path], generated: Path, data_cfg) -> bool:
    """Whether ``generated`` (OUT/data) can be reused: complete, unchanged and generated with
    ``data_cfg`` (UserError when it differs; False when a killed run left it incomplete). Given
    ``data`` with a manifest is checked against it."""
    from coinfluence.tasks.data import DATA_CONFIG, is_partial_dataset, verify_dataset

    if data is not None:
        if data.is_dir() and (data / DATA_CONFIG).is_file():
            verify_dataset(data)
        return True
    if not generated.is_dir() or not any(generated.iterdir()):
        return False
    if (generated / DATA_CONFIG).is_file():
        verify_dataset(generated, data_cfg)
        return True
    if not is_partial_dataset(generated):
        raise UserError(f"{generated} holds files that are not generated data; choose another --out")
    return False


def infer_run_dir(ckpt: Path) -> Path:
    """The run a checkpoint belongs to (runs/NAME/sft -> runs/NAME), else the checkpoint itself."""
    for parent in (ckpt.parent, ckpt.parent.parent):
        if (parent / "metrics.jsonl").exists() or (parent / "config.json").exists() and (parent / "data").is_dir():
            return parent
    return ckpt


def eval_cmd(
    ckpt: Path = typer.Option(..., help="checkpoint dir (any HF causal LM directory)"),
    data: Path = typer.Option(..., help=f"data: {DATA_HELP} (named by its file or dir name)"),
    splits: Optional[str] = typer.Option(None, help="comma-separated splits to score [val_id,val_ood; the one split of a file]"),
    n: int = typer.Option(1, help="samples per prompt (n > 1 needs --temperature > 0; reports mean@n, pass@n)"),
    temperature: float = typer.Option(0.0, help="0 = greedy"),
    limit: Optional[int] = typer.Option(None, help="score only the first N rows of each split"),
    max_new_tokens: Optional[int] = typer.Option(None, help="generation limit [longest SFT completion + 32, else 512]"),
    out: Optional[Path] = typer.Option(None, help="run dir for eval.json and eval/<ckpt>.jsonl [the checkpoint's run]"),
    name: Optional[str] = typer.Option(None, help="checkpoint name in eval.json [its path inside the run]"),
    batch_size: int = typer.Option(32, help="sequences decoded together"),
    seed: int = typer.Option(0, help="sampling seed"),
    reward: str = typer.Option(DEFAULT_REWARD, help=f"how accuracy is scored: {REWARD_HELP}"),
    task: Optional[str] = typer.Option(None, "--task", help=f"whose checker reads the steps: {tasks_help()} [the one --data was generated for, else {DEFAULT_TASK}]"),
):
    """Accuracy of a checkpoint per split (greedy, or mean@n/pass@n with sampling), and how often its completions use the injected behaviours."""
    check_finite(locals())
    from coinfluence.models.loading import check_checkpoint_dir, load_model
    from coinfluence.tasks.rewards import reward_fn
    from coinfluence.training.evaluate import check_sampling_options, evaluate_checkpoint
    from coinfluence.training.sft import auto_max_new_tokens

    from coinfluence.io import data_splits, is_one_split
    from coinfluence.tasks.registry import resolve_task

    task = resolve_task(task, data)
    ckpt = check_checkpoint_dir(ckpt)
    single = next(iter(data_splits(data))) if is_one_split(data) else None
    wanted = [s.strip() for s in (splits or single or "val_id,val_ood").split(",") if s.strip()]
    if not wanted:
        raise UserError("--splits is empty")
    if single is not None and wanted != [single]:
        raise UserError(f"--data {data} is one split, {single}; drop --splits or pass --splits {single}")
    sources = split_sources(data, wanted, one_split_as=single)
    check_sampling_options(n, temperature)
    reward_fn(reward)
    for opt, value in (("limit", limit), ("max-new-tokens", max_new_tokens), ("batch-size", batch_size)):
        if value is not None and value <= 0:
            raise UserError(f"--{opt} must be > 0, got {value}")

    from coinfluence.io import check_writable, read_json
    from coinfluence.training.checkpoint import quiet_hf_progress

    run_dir = out or infer_run_dir(ckpt)
    check_writable(run_dir / "eval.json")
    if (run_dir / "eval.json").exists():  # merged into, so it must read
        read_json(run_dir / "eval.json")
    rows = read_splits(sources, wanted)
    with quiet_hf_progress():
        model, tokenizer = load_model(ckpt)
    if max_new_tokens is None:
        sft_rows = read_splits(sources, ["sft"]).get("sft")
        max_new_tokens = auto_max_new_tokens(tokenizer, sft_rows) if sft_rows else 512
    if name is None:
        try:
            name = str(ckpt.resolve().relative_to(run_dir.resolve())) or ckpt.name
        except ValueError:
            name = ckpt.name
        name = name if name != "." else ckpt.resolve().name
        if n > 1 or temperature > 0:  # keep greedy and sampled results of one checkpoint apart
            name = f"{name}@n{n}-t{temperature:g}"
    results = evaluate_checkpoint(
        model, tokenizer, rows, run_dir, name, n=n, temperature=temperature, limit=limit,
        max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, reward=reward, task=task,
    )
    for split, r in results.items():
        extra = "".join(f"  {k} {r[k]:.3f}" for k in r if "@" in k or k == "alpha_spread")
        typer.echo(f"{split:9} {accuracy_text(r)}{extra}  ({r['num_rows']} rows)")
        if r.get("guess/stated") is not None:
            typer.echo(" " * 10 + f"guess baseline: answer stated in the question {r['guess/stated']:.3f}, "
                                  f"most frequent stated number {r['guess/mode_stated']:.3f}, "
                                  f"most common answer {r['guess/majority']:.3f}; "
                                  f"model answers copying a stated number {r['answer_stated']:.3f}")
        if r.get("behaviours/frac"):
            typer.echo(" " * 10 + behaviour_line(r))
    typer.echo(f"eval: {run_dir / 'eval.json'}")


def accuracy_text(r: dict) -> str:
    """``accuracy A (step-verified S)``: answer accuracy next to step-verified accuracy."""
    text = f"accuracy {r['accuracy']:.3f}"
    if r.get("step_accuracy") is not None:
        text += f" (step-verified {r['step_accuracy']:.3f})"
    return text


def behaviour_line(r: dict) -> str:
    """One line on the injected behaviours of an eval summary (``behaviour_summary``)."""
    kinds = " ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in r.items() if k.startswith("behaviours/") and k != "behaviours/frac")
    line = f"behaviours per completion: {kinds}; {r['behaviours/frac']:.0%} have some"
    if r["accuracy_with_behaviours"] is not None and r["accuracy_without_behaviours"] is not None:
        line += f"; accuracy with {r['accuracy_with_behaviours']:.3f}, without {r['accuracy_without_behaviours']:.3f}"
    if r["paired_queries"]:
        line += (f" (same {r['paired_queries']} queries: {r['paired_accuracy_with_behaviours']:.3f} vs "
                 f"{r['paired_accuracy_without_behaviours']:.3f})")
    return line
