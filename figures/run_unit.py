"""One unit of the study: one (variant, seed) run of the real pipeline, evaluated and analysed.

    python figures/run_unit.py VARIANT SEED [--task NAME]

The unit's steps, each a ``coinfluence`` command at one thread (``SETTING`` fixes every option):

1. data: the variant's splits of the study's task (``coinfluence data --preset mini2 ...``);
2. train: SFT for ``sft_epochs`` passes over the problems (matched by epochs, not steps, so
   variants with longer completions are not undertrained), then GRPO, with periodic greedy
   validation (answer and step-verified accuracy);
3. test: greedy accuracy of ``sft`` and ``grpo/final`` on every row of ``test_id`` and ``test_ood``;
4. sampled test: mean@8 at T=1 of both checkpoints on every ``test_id`` row (and how often the
   samples use the injected behaviours);
5. analysis: α, co-influence and ΔJ of the SFT checkpoint and of ``grpo/final``;
6. the unit's small result files (never checkpoints) are copied to figures/results/VARIANT-sSEED/,
   which appears only when complete, with unit.json: the commands, their wall times, the machine
   and the thread count.

A step whose output exists is not run again, so a killed unit resumes where it stopped (``train
--resume`` continues inside the training step), and ``--refresh`` runs the steps a finished unit
lacks while its run dir is still here.

VARIANT is one of vanilla (behaviours none), bridge (both), explore, exploit, question-aug,
answer-aug (vanilla data with up to K distinct sentence orders / solution orders of each SFT
problem; they train ``sft_epochs × problems / rows`` passes over their rows, so every problem is
seen as often as in the other variants), with an optional injection-probability suffix for the
sweep: ``bridge-pe0.6`` (p_explore 0.6), ``exploit-px0.5`` (p_exploit 0.5), or both.

``--task NAME`` runs the unit on another task (``coinfluence data --task NAME``, at that task's
default preset; every other option as in ``SETTING``), in runs/figures-NAME/ with results in
figures/results-NAME/, apart from the iGSM study's.

``--rl NAME`` reruns only the RL of a finished study unit in another RL setting
(``RL_SETTINGS[NAME]``): GRPO from the unit's own SFT model (still in runs/figures/UNIT/sft), on
the same data (regenerated from the seed), then the same tests and analyses, in
runs/figures-rl-NAME/ with results in figures/results-rl-NAME/. Where that run dir is gone, the
SFT model is first rebuilt by replaying the data and SFT commands the study unit's unit.json
records (or, for a unit the study never ran, built with the study's commands, without its GRPO);
the RL unit's unit.json says where its SFT model came from (``sft_origin``) and whether the
SFT log repeats the committed one (``sft_repeats_study_unit``), so its SFT numbers are known to
be the study unit's or not.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from check_repeat import first_difference, read_rows, subcommand
from coinfluence.errors import UserError
from coinfluence.io import LOCK_PATIENCE_S, atomic_dir, exclusive_lock, read_json, read_jsonl, write_json
from coinfluence.run import GRPO_FINAL, TRAINED_CHECKPOINTS, Run
from coinfluence.tasks.registry import DEFAULT_TASK, TASKS, get_task

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "figures" / "results"
RUNS = ROOT / "runs" / "figures"
BASES = {"vanilla": ("none", {}), "bridge": ("both", {}), "explore": ("explore", {}), "exploit": ("exploit", {}),
         "question-aug": ("none", {"question_aug": True}), "answer-aug": ("none", {"answer_aug": True})}
AUG_K = 4  # orders per SFT problem in the augmentation baselines
# The study's setting, fixed before its units ran (figures/README.md, "The setting").
SETTING = {
    "task_preset": "mini2", "model": "tiny", "sft_epochs": 12.0, "grpo_steps": 120, "prompts_per_step": 16,
    "num_generations": 8, "grpo_learning_rate": 1e-4, "temperature": 1.0, "reward": "answer", "validation_rows": 200,
    "threads": 1,
}
# Other RL settings for the study's SFT models, each fixed before its units ran (figures/README.md,
# "How the setting was chosen": probes grpo-10 and grpo-11, whose rule set 800 steps over 400).
RL_SETTINGS = {
    "progress": {"grpo_steps": 800, "prompts_per_step": 64, "grpo_learning_rate": 3e-4, "reward": "progress",
                 "grpo_eval_steps": 50, "grpo_save_steps": 10,  # 13 s a step: lose at most ~2 min to a kill
                 "test_steps": [400]},  # the setting's steps before grpo-11: its units are tested there too
}
_LAYOUT = Run(Path())  # the run layout as paths relative to a run
KEEP = [str(p) for p in (_LAYOUT.config_path, _LAYOUT.metrics, _LAYOUT.eval_json, _LAYOUT.data_config,
                         _LAYOUT.analysis_summary("*"), _LAYOUT.analysis_of("*") / "queries.parquet")]
MAX_BYTES = 1_000_000  # an 800-step GRPO log is ~460 KB
HEARTBEAT_S = 30.0
SAMPLES = 8
SAMPLED_NAME = f"@n{SAMPLES}-t1"  # the suffix `coinfluence eval` gives sampled results in eval.json
CHECKPOINTS = TRAINED_CHECKPOINTS
_VARIANT = re.compile(r"^(?P<base>[a-z-]+?)(?:-pe(?P<pe>[0-9.]+))?(?:-px(?P<px>[0-9.]+))?$")


def parse_variant(variant: str, aug_k: int = AUG_K) -> tuple[str, list[str]]:
    """(behaviours, options of ``coinfluence data``) of a variant name; ValueError if unknown."""
    m = _VARIANT.match(variant)
    if not m or m.group("base") not in BASES:
        raise ValueError(f"unknown variant {variant!r}; choose {', '.join(BASES)} (optionally -peX and/or -pxY)")
    behaviours, aug = BASES[m.group("base")]
    opts = []
    if aug.get("question_aug"):
        opts += ["--question-aug", str(aug_k)]
    if aug.get("answer_aug"):
        opts += ["--answer-aug", str(aug_k)]
    if m.group("pe"):
        opts += ["--p-explore", m.group("pe")]
    if m.group("px"):
        opts += ["--p-exploit", m.group("px")]
    return behaviours, opts


def unit_name(variant: str, seed: int) -> str:
    return f"{variant}-s{seed}"


def task_setting(task: str) -> dict:
    """``SETTING`` for ``task``: the study's itself for iGSM, else with the task at its default preset."""
    return SETTING if task == DEFAULT_TASK else {**SETTING, "task": task, "task_preset": get_task(task).default_preset}


def task_roots(task: str) -> tuple[Path, Path]:
    """(runs root, results root) of ``task``'s units: the study's for iGSM, else dirs of their own."""
    return (RUNS, RESULTS) if task == DEFAULT_TASK else (ROOT / "runs" / f"figures-{task}", ROOT / "figures" / f"results-{task}")


def rl_setting(name: str) -> dict:
    """``SETTING`` with the RL options of ``RL_SETTINGS[name]``."""
    return {**SETTING, **RL_SETTINGS[name], "rl": name}


def rl_roots(name: str) -> tuple[Path, Path]:
    """(runs root, results root) of the units of RL setting ``name``."""
    return ROOT / "runs" / f"figures-rl-{name}", ROOT / "figures" / f"results-rl-{name}"


def coinfluence(args: list[str], heartbeat=None) -> float:
    """Run one ``coinfluence`` command of this interpreter's install; returns its wall time.
    ``heartbeat(seconds so far)`` is called every ``HEARTBEAT_S`` while it runs."""
    print("$ coinfluence " + shlex.join(args), flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "coinfluence_cli.main", *args], cwd=ROOT)
    while True:
        try:
            code = proc.wait(timeout=HEARTBEAT_S)
            break
        except subprocess.TimeoutExpired:
            if heartbeat is not None:
                heartbeat(time.perf_counter() - started)
    if code:
        raise subprocess.CalledProcessError(code, proc.args)
    return time.perf_counter() - started


def ledger_path(run: Path) -> Path:
    """Seconds each step of a unit has run so far, kept beside its run dir (train refuses a run dir
    with files it did not write), so a step killed with its session keeps the time it had run."""
    return run.parent / f"{run.name}.seconds.json"


def spent_seconds(ledger: Path) -> dict:
    """The seconds per step a ledger holds ({} before any step has run)."""
    return read_json(ledger) if ledger.exists() else {}


def unit_lock_path(run: Path) -> Path:
    """RUN.lock, beside the run dir as the ledger is."""
    return run.parent / f"{run.name}.lock"


def unit_lock(run: Path, patience: float = LOCK_PATIENCE_S):
    """Hold ``run``'s unit lock while a unit writes to ``run``: a second run_unit or run_lanes on
    the same unit is refused (after ``patience`` seconds) instead of writing beside the first."""
    return exclusive_lock(unit_lock_path(run), f"unit {run.name} is already running in another process ({run})", patience)


def unit_running(run: Path) -> bool:
    """Whether another process holds ``run``'s unit lock now (no lock file: never started here)."""
    if not unit_lock_path(run).exists():
        return False
    try:
        with unit_lock(run, patience=0):  # a probe: a starting unit waits it out, it waits for nothing
            return False
    except UserError:
        return True


def timed_step(args: list[str], step: str, ledger: Path) -> float:
    """Run one step of a unit, adding its wall time to ``ledger`` as it runs; its total seconds."""
    spent = spent_seconds(ledger)
    before = spent.get(step, 0.0)

    def save(seconds: float) -> float:
        total = round(before + seconds, 1)
        ledger.parent.mkdir(parents=True, exist_ok=True)
        write_json(ledger, {**spent, step: total})
        return total

    return save(coinfluence(args, heartbeat=save))


def evaluated(run: Path, checkpoint: str, split: str, rows: int | None = None) -> bool:
    """Does RUN/eval.json hold ``split`` of ``checkpoint`` (on at least ``rows`` rows)?"""
    path = Run(ROOT / run).eval_json
    if not path.exists():
        return False
    result = read_json(path).get("checkpoints", {}).get(checkpoint, {}).get(split)
    return result is not None and (rows is None or result.get("num_rows", 0) >= rows)


def split_rows(run: Path, split: str) -> int:
    counts = read_json(Run(ROOT / run).data_config)["counts"]
    return counts[split]


def problem_epochs(epochs: float, data_opts: list[str], aug_k: int, sft_rows: Path) -> float:
    """Passes over a variant's SFT rows that show each problem ``epochs`` times. An augmented
    variant holds up to ``aug_k`` rows per problem, fewer where a problem has fewer distinct
    orders, so its rows are counted once generated (``epochs / aug_k`` before)."""
    if not any(o in data_opts for o in ("--question-aug", "--answer-aug")):
        return epochs
    if not sft_rows.is_file():
        return epochs / aug_k
    problems = [row["meta"]["index"] for row in read_jsonl(sft_rows)]
    return epochs * len(set(problems)) / len(problems)


def unit_steps(variant: str, seed: int, run: Path, setting: dict, aug_k: int, extra: dict,
               sft_from: Path | None = None) -> list[tuple[str, list[str], object]]:
    """``(name, coinfluence arguments, done())`` for every step of a unit, in order; with
    ``sft_from`` (an SFT model) its training is GRPO alone from that model."""
    behaviours, data_opts = parse_variant(variant, aug_k)
    threads = ["--threads", str(setting["threads"])]
    layout, done = Run(run), Run(ROOT / run)  # paths for the commands (run in ROOT), and to look at
    data = str(layout.data)
    epochs = problem_epochs(setting["sft_epochs"], data_opts, aug_k, done.data / "sft.jsonl")
    train = [*threads, "train", "--data", data, "--out", str(run), "--seed", str(seed), "--resume",
             *(["--stage", "grpo", "--from-sft", str(sft_from)] if sft_from else
               ["--task-preset", setting["task_preset"], "--preset", setting["model"], "--sft-epochs", f"{epochs:g}"]),
             "--grpo-steps", str(setting["grpo_steps"]), "--prompts-per-step", str(setting["prompts_per_step"]),
             "--num-generations", str(setting["num_generations"]),
             "--grpo-learning-rate", f"{setting['grpo_learning_rate']:g}",
             "--temperature", f"{setting['temperature']:g}", "--reward", setting["reward"],
             *(["--eval-steps", str(setting["grpo_eval_steps"])] if "grpo_eval_steps" in setting else []),
             *(["--save-steps", str(setting["grpo_save_steps"])] if "grpo_save_steps" in setting else []),
             "--eval-size", str(setting["validation_rows"]), "--no-progress", *extra.get("train", [])]
    steps = [
        ("data", ["data", "--out", data, "--overwrite", *(["--task", setting["task"]] if "task" in setting else []),
                  "--preset", setting["task_preset"], "--behaviours", behaviours,
                  "--seed", str(seed), *data_opts, *extra.get("data", [])],
         lambda: done.data_config.exists()),
        ("train", train, lambda: trained_steps(done) == grpo_steps(train)),
    ]
    # An SFT model from elsewhere is tested and analysed under its own name ("sft") in this run.
    path = lambda c: str(sft_from if sft_from and c == "sft" else layout.checkpoint(c))  # noqa: E731
    into = ["--out", str(run)] if sft_from else []
    midway = [str(_LAYOUT.grpo_step(step)) for step in setting.get("test_steps", []) if step < grpo_steps(train)]
    for ckpt in [*CHECKPOINTS, *midway]:
        steps.append((f"test {ckpt}", [*threads, "eval", "--ckpt", path(ckpt), *into, "--data", data,
                                       "--splits", "test_id,test_ood", "--seed", str(seed), *extra.get("eval", [])],
                      lambda c=ckpt: all(evaluated(run, c, s, split_rows(run, s)) for s in ("test_id", "test_ood"))))
    for ckpt in CHECKPOINTS:
        steps.append((f"sampled test {ckpt}", [*threads, "eval", "--ckpt", path(ckpt), *into, "--data", data,
                                               "--splits", "test_id", "--n", str(SAMPLES), "--temperature", "1",
                                               "--seed", str(seed), *extra.get("eval", [])],
                      lambda c=ckpt: evaluated(run, c + SAMPLED_NAME, "test_id")))
    for ckpt in CHECKPOINTS:
        steps.append((f"analyze {ckpt}", [*threads, "analyze", "--ckpt", path(ckpt), "--run", str(run), "--no-kernel",
                                          "--seed", str(seed), "--quiet", *extra.get("analyze", [])],
                      lambda c=ckpt: done.analysis_summary(c).exists()))
    return steps


def grpo_steps(train_args: list[str]) -> int:
    """The GRPO steps a ``train`` command asks for (its last ``--grpo-steps``, as argparse reads it)."""
    return int(train_args[len(train_args) - 1 - train_args[::-1].index("--grpo-steps") + 1])


def trained_steps(run: Run) -> int | None:
    """GRPO steps behind RUN/grpo/final (its saved config, written last); None before it exists."""
    config = run.grpo_final / "grpo_config.json"
    return read_json(config)["max_steps"] if (run.grpo_final / "config.json").exists() and config.exists() else None


def reopen_shorter_run(run: Run, steps: int) -> None:
    """Let a finished run trained for fewer than ``steps`` GRPO steps continue to ``steps`` (the
    learning rate is constant after warmup, so this is the longer run): the tests and analysis of
    its old grpo/final, which would no longer describe grpo/final, are dropped first."""
    before = trained_steps(run)
    if before is None or before == steps:
        return
    if before > steps:
        sys.exit(f"{run.grpo_final} was trained for {before} GRPO steps, more than the setting's {steps}")
    print(f"{run.root}: grpo/final has {before} GRPO steps, the setting {steps}; training continues and "
          "grpo/final is tested and analysed again", flush=True)
    if run.eval_json.exists():
        saved = read_json(run.eval_json)
        saved["checkpoints"] = {k: v for k, v in saved.get("checkpoints", {}).items() if not k.startswith(GRPO_FINAL)}
        write_json(run.eval_json, saved)
    final_records = run.eval_records(GRPO_FINAL)  # and its sampled tests', NAME@nN-tT.jsonl
    for records in final_records.parent.glob(final_records.stem + "*.jsonl"):
        records.unlink()
    shutil.rmtree(run.analysis_of(GRPO_FINAL), ignore_errors=True)


def sft_steps_of(record: dict) -> list[tuple[str, list[str]]]:
    """The data and SFT steps of a finished study unit, from the commands its unit.json records:
    its SFT model rebuilt where the run dir is gone (the study setting's own GRPO is left out)."""
    data, train = (next(shlex.split(c)[1:] for c in record["commands"] if subcommand(c) == word) for word in ("data", "train"))
    return [("data", data), ("sft", [*train, "--stage", "sft"])]


def study_commands(variant: str, seed: int, run: Path, aug_k: int, extra: dict) -> dict:
    """The commands of a study unit that never ran, as its unit.json would record them: its SFT
    model built as the study would have built it. (An augmented variant's SFT passes are known
    only once its data exists, so this is asked again after the data step.)"""
    return {"commands": ["coinfluence " + shlex.join(args) for _, args, _ in unit_steps(variant, seed, run, SETTING, aug_k, extra)]}


def rebuild_sft(run: Path, record_of) -> None:
    """Build the SFT model of a study unit in ``run`` (relative to ROOT) by running the data and
    SFT commands of ``record_of()`` (its unit.json, or ``study_commands``); a killed build resumes
    (``train --resume``)."""
    done = Run(ROOT / run)
    sft = dict(sft_steps_of(record_of()))["sft"]
    if Path(sft[sft.index("--out") + 1]) != run:
        sys.exit(f"the study unit's commands write to {sft[sft.index('--out') + 1]}, not {run}: build it there (no --runs-root)")
    print(f"{run}: no SFT model; building it with the commands of the study unit", flush=True)
    for step, output in (("data", done.data_config), ("sft", done.sft / "config.json")):
        if not output.exists():  # the commands are asked again after the data step: SFT options may read it
            timed_step(dict(sft_steps_of(record_of()))[step], step, ledger_path(ROOT / run))


def sft_origin_record(study_run: Path, recorded: bool) -> dict:
    """Where an RL unit's SFT model (in ``study_run``) came from: the study unit's own training
    ("the study's"), a replay of the commands its unit.json records ("rebuilt"), or the study's
    commands run for a seed it never ran ("built anew"), with the seconds a build took. Only a
    build leaves an "sft" step in the run's ledger; the study's own training is one "train" step."""
    spent = spent_seconds(ledger_path(ROOT / study_run))
    if "sft" not in spent:
        return {"sft_origin": "the study's"}
    return {"sft_origin": "rebuilt" if recorded else "built anew", "sft_build_seconds": spent}


LAST_ROW_KEYS = ("step", "loss", "val_accuracy", "val_step_accuracy")


def sft_repeats(metrics: Path, study_metrics: Path) -> dict:
    """Does the SFT log in ``metrics`` repeat the study unit's committed one, every value but
    the timing ones? ``{"rows", "identical", "first_difference", "last_row"}``: the rows compared,
    the first value that differs (as ``check_repeat.py`` prints it), and the last compared row's
    ``LAST_ROW_KEYS`` as [ours, theirs], which show how far apart the two models ended. A model
    rebuilt on other CPU kernels drifts in the last bits from the first step, then like another seed."""
    ours, theirs = ([r for r in read_rows(path) if r.get("stage") == "sft"] for path in (metrics, study_metrics))
    rows = min(len(ours), len(theirs))
    difference = first_difference(theirs, ours)
    last = {key: [ours[rows - 1].get(key), theirs[rows - 1].get(key)] for key in LAST_ROW_KEYS} if rows else None
    return {"rows": rows, "identical": bool(rows) and difference is None and len(ours) == len(theirs),
            "first_difference": difference, "last_row": last}


def copy_results(run: Path, dest: Path, record: dict) -> list[str]:
    """Copy the small result files of ``run`` into ``dest`` (atomically, as one dir); returns
    the files left out for their size."""
    skipped = []
    with atomic_dir(dest) as tmp:
        for pattern in KEEP:
            for src in sorted(run.glob(pattern)):
                if src.stat().st_size > MAX_BYTES:
                    skipped.append(str(src.relative_to(run)))
                    continue
                target = tmp / src.relative_to(run)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
        write_json(tmp / "unit.json", {**record, "left_out_for_size": skipped})
    return skipped


def cpu_identity(cpuinfo: str) -> dict:
    """Model name, family and model number of the first CPU in a /proc/cpuinfo text: virtual
    machines often name only the vendor line ("AMD EPYC"), which hides a change of generation."""
    fields = dict(line.split(":", 1) for line in cpuinfo.split("\n\n")[0].splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return {"cpu": fields.get("model name", platform.processor()),
            "cpu_family_model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}"}


def machine(threads: int) -> dict:
    """Where a unit ran: results at one seed repeat only on the same CPU kernels (the vector
    instructions torch dispatches to) and thread count."""
    import torch

    try:
        cpu = cpu_identity(Path("/proc/cpuinfo").read_text())
    except OSError:
        cpu = {"cpu": platform.processor()}
    return {"system": platform.system(), "machine": platform.machine(), **cpu, "cpus": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": threads, "torch": torch.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}


def short_path(path: Path) -> Path:
    """``path`` relative to ROOT when inside it: commands run in ROOT, and the recorded ones stay short."""
    return path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path


def run_unit(variant: str, seed: int, *, runs_root: Path = RUNS, results_root: Path = RESULTS, aug_k: int = AUG_K,
             setting: dict = SETTING, extra: dict | None = None, refresh: bool = False, sft_from: Path | None = None,
             study_metrics: Path | None = None, origin: dict | None = None) -> Path:
    """Run the steps of one unit that are not done yet and copy its results; returns its results dir.
    With ``sft_from`` (an SFT model) the unit trains GRPO alone, from that model, and records
    whether that model's SFT log repeats ``study_metrics`` (its study unit's committed log) and
    where it came from (``origin``, from ``sft_origin_record``)."""
    name = unit_name(variant, seed)
    dest = Path(results_root) / name
    run = Path(runs_root) / name
    run = short_path(run)
    if dest.is_dir() and not refresh:
        print(f"skip {name}: {dest} exists", flush=True)
        return dest
    if dest.is_dir() and not Run(ROOT / run).data.is_dir():
        print(f"skip {name}: nothing to refresh from ({run} is gone)", flush=True)
        return dest
    sft_from = short_path(Path(sft_from)) if sft_from is not None else None
    build = lambda: unit_steps(variant, seed, run, setting, aug_k, extra or {}, sft_from)  # noqa: E731
    ledger = ledger_path(ROOT / run)
    reopen_shorter_run(Run(ROOT / run), grpo_steps(next(args for step, args, _ in build() if step == "train")))
    for index in range(len(build())):
        # Rebuilt before each step: the training options of augmented variants read the generated data.
        step, args, done = build()[index]
        if not done():
            timed_step(args, step, ledger)
    steps = build()  # as run
    seconds = spent_seconds(ledger)  # steps of earlier sessions included
    old = read_json(dest / "unit.json") if (dest / "unit.json").exists() else {}
    record = {
        "variant": variant, "seed": seed, "run": str(run), "setting": setting,
        **({"sft_from": str(sft_from)} if sft_from else {}),
        **(origin or {}),
        **({"sft_repeats_study_unit": sft_repeats(Run(ROOT / sft_from.parent).metrics, study_metrics)}
           if sft_from and study_metrics and study_metrics.is_file() else {}),
        "commands": ["coinfluence " + shlex.join(args) for _, args, _ in steps],
        "seconds": {**old.get("seconds", {}), **seconds},
        "machine": machine(setting["threads"]),
        "finished": old.get("finished", time.strftime("%Y-%m-%d %H:%M:%S")),
        **({"refreshed": time.strftime("%Y-%m-%d %H:%M:%S")} if old else {}),
    }
    skipped = copy_results(ROOT / run, dest, record)
    for path in skipped:
        print(f"left out {path} (over {MAX_BYTES // 1000} KB)", flush=True)
    print(f"results: {dest}", flush=True)
    return dest


def add_hidden_options(parser: argparse.ArgumentParser) -> None:
    """Options for testing the scripts on a tiny configuration (not for the real figures)."""
    hide = argparse.SUPPRESS
    for stage in ("data", "train", "eval", "analyze"):
        parser.add_argument(f"--extra-{stage}-args", default="", help=hide)
    parser.add_argument("--runs-root", type=Path, default=RUNS, help=hide)
    parser.add_argument("--results-root", type=Path, default=RESULTS, help=hide)


def extra_args(args: argparse.Namespace) -> dict:
    return {stage: shlex.split(getattr(args, f"extra_{stage}_args")) for stage in ("data", "train", "eval", "analyze")}


def main() -> None:
    parser = argparse.ArgumentParser(description="One (variant, seed) unit of the study: data, SFT + GRPO, tests, analysis, results copied.")
    parser.add_argument("variant", help=f"{', '.join(BASES)}, optionally with -peX / -pxY (injection probabilities)")
    parser.add_argument("seed", type=int)
    parser.add_argument("--aug-k", type=int, default=AUG_K, help="orders per SFT problem in question-aug/answer-aug")
    parser.add_argument("--refresh", action="store_true",
                        help="for a finished unit whose run dir is still here: run the steps it lacks and recopy its results")
    parser.add_argument("--task", default=DEFAULT_TASK, choices=[name for name in TASKS if get_task(name).presets],
                        help="the task of the unit (another than the study's runs apart, at its default preset)")
    parser.add_argument("--rl", choices=sorted(RL_SETTINGS),
                        help="only the RL of the study unit in this RL setting, from the unit's SFT model (built first where it is not here)")
    add_hidden_options(parser)
    parser.set_defaults(runs_root=None, results_root=None)
    args = parser.parse_args()
    try:
        parse_variant(args.variant)
    except ValueError as err:
        parser.error(str(err))
    runs_root, results_root = task_roots(args.task)
    runs_root = args.runs_root or runs_root  # with --rl: where the study unit is
    setting, study_run, study = task_setting(args.task), None, None
    if args.rl:
        if args.task != DEFAULT_TASK:
            parser.error("--rl reruns the RL of the iGSM study's units; it takes no --task")
        study_run, study = runs_root / unit_name(args.variant, args.seed), results_root / unit_name(args.variant, args.seed)
        (runs_root, results_root), setting = rl_roots(args.rl), rl_setting(args.rl)
    with ExitStack() as locks:
        try:
            for run in ([study_run] if study_run else []) + [runs_root / unit_name(args.variant, args.seed)]:
                locks.enter_context(unit_lock(ROOT / short_path(run)))  # an --rl unit may rebuild its study unit's SFT
        except UserError as err:
            sys.exit(str(err))
        run_locked_unit(args, runs_root, args.results_root or results_root, setting, study_run, study)


def run_locked_unit(args: argparse.Namespace, runs_root: Path, results_root: Path, setting: dict,
                    study_run: Path | None, study: Path | None) -> None:
    """main()'s work once the unit is locked; with --rl (``study_run`` and ``study`` given) the SFT
    model comes from the study unit's run dir, rebuilt first where it is gone."""
    sft_from = study_metrics = origin = None
    try:
        if args.rl:
            sft_from, study_metrics = study_run / _LAYOUT.sft, study / _LAYOUT.metrics
            recorded = (study / "unit.json").exists()
            if not (sft_from / "config.json").exists():
                rebuild_sft(short_path(study_run), lambda: read_json(study / "unit.json") if recorded else study_commands(
                    args.variant, args.seed, short_path(study_run), args.aug_k, extra_args(args)))
            origin = sft_origin_record(short_path(study_run), recorded)
        run_unit(args.variant, args.seed, runs_root=runs_root, results_root=results_root, aug_k=args.aug_k,
                 setting=setting, extra=extra_args(args), refresh=args.refresh, sft_from=sft_from,
                 study_metrics=study_metrics, origin=origin)
    except subprocess.CalledProcessError as err:
        sys.exit(f"unit {unit_name(args.variant, args.seed)} failed: {shlex.join(map(str, err.cmd[2:]))} exited {err.returncode}")


if __name__ == "__main__":
    main()
