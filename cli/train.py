"""``coinfluence train`` and ``coinfluence eval``.

Every option is checked (``UserError``) before data is generated or a model is built.
"""

import shlex
from pathlib import Path
from typing import Optional

import typer

from coinfluence.errors import UserError

from .options import check_finite
from coinfluence.tasks.registry import DEFAULT_TASK, presets_help, tasks_help
from coinfluence.tasks.rewards import DEFAULT_REWARD, REWARD_HELP

BEHAVIOURS = ("none", "explore", "exploit", "both")


DATA_HELP = ("a dir of split files (SPLIT.jsonl or SPLIT.parquet), a saved Hugging Face DatasetDict, or one split: "
             "a .jsonl/.parquet file or a saved Dataset")


def resolve_behaviours(bridge: bool, vanilla: bool, behaviours: Optional[str]) -> Optional[str]:
    chosen = [name for name, on in (("--bridge", bridge), ("--vanilla", vanilla), ("--behaviours", behaviours is not None)) if on]
    if len(chosen) > 1:
        raise UserError(f"{' and '.join(chosen)} contradict each other; pass one")
    if behaviours is not None and behaviours not in BEHAVIOURS:
        raise UserError(f"--behaviours must be one of {', '.join(BEHAVIOURS)}, got {behaviours!r}")
    return "both" if bridge else "none" if vanilla else behaviours


def variant_name(behaviours: str) -> str:
    return {"both": "bridge", "none": "vanilla"}.get(behaviours, behaviours)


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
    from coinfluence.distributed import is_main
    from coinfluence.pipeline import Pipeline, run_pipeline

    task, data_cfg, variant = training_data(data, task, task_preset, seed, resolve_behaviours(bridge, vanilla, behaviours))
    sft = sft_config(seed, eval_size, full_loss, max_steps=sft_steps, num_train_epochs=sft_epochs, learning_rate=learning_rate,
                     tokens_per_batch=tokens_per_batch, gradient_accumulation_steps=gradient_accumulation_steps,
                     eval_steps=eval_steps, save_steps=save_steps)
    grpo = grpo_config(seed, eval_size, max_steps=grpo_steps, learning_rate=grpo_learning_rate, num_generations=num_generations,
                       prompts_per_step=prompts_per_step, beta=beta, loss_type=loss_type, scale_rewards=scale_rewards, std=std,
                       temperature=temperature, reward=reward, max_completion_length=max_completion_length,
                       eval_steps=eval_steps, save_steps=save_steps)
    request = Pipeline(out=out or default_run_dir(task.name, variant, preset, seed), sft=sft, grpo=grpo, stage=stage, task=task,
                       data=data, data_config=data_cfg, task_preset=task_preset, model=preset, from_sft=from_sft, seed=seed,
                       eval_size=eval_size, resume=resume, progress=progress, report_to=report_to,
                       auto_completion_length=max_completion_length is None)
    result = run_pipeline(request, say=lambda line: typer.echo(line, err=True))
    if is_main():  # under torchrun rank 0 reports
        print_train_result(result, report_to)


def given(**options) -> dict:
    """The options the command line set (None: the config's default applies)."""
    return {k: v for k, v in options.items() if v is not None}


def training_data(data: Optional[Path], task_name: Optional[str], task_preset: Optional[str], seed: int,
                  behaviours: Optional[str]):
    """``(task, DataConfig to generate or None for given --data, variant name)``."""
    from coinfluence.tasks.registry import resolve_task

    if data is not None and behaviours is not None:
        raise UserError("--bridge/--vanilla/--behaviours choose how data is generated; they cannot be combined with --data")
    task = resolve_task(task_name, data)
    if data is not None:
        return task, None, Path(data).name
    data_cfg = generated_data(task, task_preset, seed, behaviours)
    return task, data_cfg, variant_name(data_cfg.behaviours)


def sft_config(seed: int, eval_size: int, full_loss: bool, **options):
    """The SFTConfig of the command line: its defaults, overridden by the ``options`` it set."""
    from coinfluence.training.sft import SFTConfig

    if options["max_steps"] is not None and options["num_train_epochs"] is not None:
        raise UserError("--sft-steps and --sft-epochs both set the SFT length; pass one")
    return SFTConfig(seed=seed, eval_size=eval_size, completion_only_loss=not full_loss, **given(**options))


def grpo_config(seed: int, eval_size: int, **options):
    """The GRPOConfig of the command line: its defaults, overridden by the ``options`` it set."""
    from coinfluence.training.grpo import GRPOConfig

    return GRPOConfig(seed=seed, eval_size=eval_size, **given(**options))


def default_run_dir(task_name: str, variant: str, preset: str, seed: int) -> Path:
    """runs/[TASK-]VARIANT-MODEL-sSEED (the default task goes unnamed)."""
    from coinfluence.pipeline import model_name

    prefix = "" if task_name == DEFAULT_TASK else f"{task_name}-"
    return Path("runs") / f"{prefix}{variant}-{model_name(preset)}-s{seed}"


def generated_data(task, task_preset: Optional[str], seed: int, behaviours: Optional[str]):
    """The DataConfig of the data ``train`` generates into OUT/data (behaviours: the data default when None)."""
    from coinfluence.tasks.data import DataConfig

    return DataConfig(task=task.name, preset=task_preset, seed=seed, **({"behaviours": behaviours} if behaviours else {}))


def print_train_result(result: dict, report_to: str) -> None:
    """Where the run is, each trained checkpoint's test accuracy, and how to look at it."""
    from coinfluence.plots.html_report import report_command

    run = result["run"]
    typer.echo(f"run: {run.root}/")
    typer.echo(f"metrics: {run.metrics}")
    for name, path in result["checkpoints"]:
        if name in result["results"]:
            accs = ", ".join(f"{s} {accuracy_text(r)}" for s, r in result["results"][name].items())
            typer.echo(f"{name}: {path}/ ({accs})")
    if result["results"]:
        typer.echo(f"eval: {run.eval_json}")
    if report_to == "tensorboard":
        typer.echo(f"tensorboard: tensorboard --logdir {shlex.quote(str(run.tensorboard))}")
    typer.echo(f"report: {report_command(run.root)}")


def infer_run_dir(ckpt: Path) -> Path:
    """The run a checkpoint belongs to (runs/NAME/sft -> runs/NAME), else the checkpoint itself."""
    from coinfluence.run import Run

    for parent in (ckpt.parent, ckpt.parent.parent):
        run = Run(parent)
        if run.metrics.exists() or run.config_path.exists() and run.data.is_dir():
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
    from coinfluence.io import check_writable, read_json
    from coinfluence.models.loading import check_checkpoint_dir, load_model
    from coinfluence.tasks.rewards import reward_fn
    from coinfluence.training.checkpoint import quiet_hf_progress
    from coinfluence.pipeline import read_splits
    from coinfluence.training.evaluate import check_sampling_options, evaluate_checkpoint
    from coinfluence.training.sft import auto_max_new_tokens
    from coinfluence.run import Run
    from coinfluence.tasks.registry import resolve_task

    task = resolve_task(task, data)
    ckpt = check_checkpoint_dir(ckpt)
    sources, wanted = eval_sources(data, splits)
    check_sampling_options(n, temperature)
    reward_fn(reward)
    for opt, value in (("limit", limit), ("max-new-tokens", max_new_tokens), ("batch-size", batch_size)):
        if value is not None and value <= 0:
            raise UserError(f"--{opt} must be > 0, got {value}")
    run_dir = out or infer_run_dir(ckpt)
    eval_json = Run(run_dir).eval_json
    check_writable(eval_json)
    if eval_json.exists():  # merged into, so it must read
        read_json(eval_json)
    rows = read_splits(sources, wanted)
    with quiet_hf_progress():
        model, tokenizer = load_model(ckpt)
    if max_new_tokens is None:
        sft_rows = read_splits(sources, ["sft"]).get("sft")
        max_new_tokens = auto_max_new_tokens(tokenizer, sft_rows) if sft_rows else 512
    results = evaluate_checkpoint(
        model, tokenizer, rows, run_dir, name if name is not None else eval_name(ckpt, run_dir, n, temperature), n=n, temperature=temperature,
        limit=limit, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, reward=reward, task=task,
    )
    for split, r in results.items():
        print_split_result(split, r)
    typer.echo(f"eval: {eval_json}")


def eval_sources(data: Path, splits: Optional[str]) -> tuple[dict[str, Path], list[str]]:
    """The files of the splits ``eval`` scores (``--splits``, else val_id and val_ood, else the
    one split of a file) and their names; UserError when one is missing."""
    from coinfluence.io import data_splits, is_one_split
    from coinfluence.pipeline import split_sources

    single = next(iter(data_splits(data))) if is_one_split(data) else None
    wanted = [s.strip() for s in (splits or single or "val_id,val_ood").split(",") if s.strip()]
    if not wanted:
        raise UserError("--splits is empty")
    if single is not None and wanted != [single]:
        raise UserError(f"--data {data} is one split, {single}; drop --splits or pass --splits {single}")
    return split_sources(data, wanted, one_split_as=single), wanted


def eval_name(ckpt: Path, run_dir: Path, n: int, temperature: float) -> str:
    """The checkpoint's key in eval.json: its path inside the run, with the sampling settings
    when it is not greedy (so greedy and sampled results of one checkpoint stay apart)."""
    try:
        name = str(ckpt.resolve().relative_to(run_dir.resolve())) or ckpt.name
    except ValueError:
        name = ckpt.name
    name = name if name != "." else ckpt.resolve().name
    return f"{name}@n{n}-t{temperature:g}" if n > 1 or temperature > 0 else name


def print_split_result(split: str, r: dict) -> None:
    """The accuracy of one split, with the guess baselines and the behaviours when there are any."""
    extra = "".join(f"  {k} {r[k]:.3f}" for k in r if "@" in k or k == "alpha_spread")
    typer.echo(f"{split:9} {accuracy_text(r)}{extra}  ({r['num_rows']} rows)")
    if r.get("guess/stated") is not None:
        typer.echo(" " * 10 + f"guess baseline: answer stated in the question {r['guess/stated']:.3f}, "
                              f"most frequent stated number {r['guess/mode_stated']:.3f}, "
                              f"most common answer {r['guess/majority']:.3f}; "
                              f"model answers copying a stated number {r['answer_stated']:.3f}")
    verdicts = {k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("verdict/")}
    if verdicts:
        typer.echo(" " * 10 + "step checker's verdicts: " + ", ".join(f"{k} {v:.3f}" for k, v in verdicts.items()))
    if r.get("behaviours/frac"):
        typer.echo(" " * 10 + behaviour_line(r))


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
