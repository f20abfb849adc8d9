"""The run layout (coinfluence.run), the GRPO settings analyze reads from a run, and the pipeline
as a library call (coinfluence.pipeline)."""

import json
from dataclasses import asdict

from toy_data import toy_rows

from coinfluence.influence.analyze import AnalyzeOptions, resolve_options, trainer_config
from coinfluence.run import GRPO_FINAL, SFT, TRAINED_CHECKPOINTS, Run, checkpoint_step, grpo_checkpoint_step, run_of_checkpoint
from coinfluence.training.grpo import GRPOConfig


def test_run_paths_and_step_directories(tmp_path):
    run = Run(tmp_path)
    assert run.grpo_step(7) == tmp_path / "grpo" / "step-000007"
    assert run.eval_records("grpo/final") == tmp_path / "eval" / "grpo_final.jsonl"
    for step in (12, 3, 100):
        run.grpo_step(step).mkdir(parents=True)
    (run.grpo / "step-x").mkdir()
    run.grpo_final.mkdir()
    assert [s for s, _ in run.grpo_steps()] == [3, 12, 100]  # numeric order, other names left out
    assert checkpoint_step(run.grpo_step(12)) == 12 and checkpoint_step(run.sft) == 0
    assert checkpoint_step(run.sft_checkpoints / "checkpoint-000040") == 40
    # eval.json names checkpoints by their path inside the run
    assert grpo_checkpoint_step("grpo/step-000400") == 400
    assert [grpo_checkpoint_step(k) for k in (SFT, GRPO_FINAL, "sft/step-000400", "grpo/step-x", "grpo/step-000400@n8-t1")] == [None] * 5
    assert run.analysis_name(run.grpo_step(3)) == "grpo-step-000003" and run.analysis_name(tmp_path.parent) == tmp_path.parent.name


def test_readers_find_the_analysis_dir_analyze_names_for_each_trained_checkpoint(tmp_path):
    run = Run(tmp_path)
    for name in TRAINED_CHECKPOINTS:
        assert run.analysis_of(name) == run.analysis / run.analysis_name(run.checkpoint(name))
        assert run.analysis_summary(name).parent == run.analysis_of(name)
    assert run.checkpoint(SFT) == run.sft and run.checkpoint(GRPO_FINAL) == run.grpo_final
    assert run.analysis_of(GRPO_FINAL).name == "grpo-final" and run.analysis_name(tmp_path) == tmp_path.name
    assert run.timeseries.parent == run.analysis and run.data_config.parent == run.data


def test_record_merges_one_key_at_a_time(tmp_path):
    run = Run(tmp_path)
    run.record("sft", {"seed": 1})
    run.record("grpo", {"reward": "answer"})
    run.record("sft", {"seed": 2})
    assert json.loads(run.config_path.read_text()) == {"sft": {"seed": 2}, "grpo": {"reward": "answer"}}


def test_analyze_of_the_sft_model_reads_the_runs_grpo_settings(tmp_path):
    run = Run(tmp_path)
    run.sft.mkdir()
    settings = {**asdict(GRPOConfig()), "num_generations": 3, "max_completion_length": 7, "temperature": 0.5,
                "loss_type": "dr_grpo", "learning_rate": 2e-5, "reward": "steps"}
    run.record("grpo", settings)
    assert run_of_checkpoint(run.sft) == run
    for given_run in (None, tmp_path):  # the run the checkpoint sits in, or the one --run names
        knobs = resolve_options(AnalyzeOptions(), run.sft, given_run)
        assert (knobs["num_generations"], knobs["max_completion_length"], knobs["temperature"]) == (3, 7, 0.5)
        assert knobs["normalization"] == "constant" and knobs["learning_rate"] == 2e-5 and knobs["reward"] == "steps"
    assert trainer_config(run.sft, knobs).learning_rate == 2e-5
    # An option given outright still wins.
    assert resolve_options(AnalyzeOptions(num_generations=4), run.sft)["num_generations"] == 4


def test_a_run_without_a_grpo_record_falls_back_to_grpo_defaults(tmp_path):
    run = Run(tmp_path)
    run.sft.mkdir()
    run.record("train", {"stage": "all"})  # what runs recorded before the GRPO stage wrote its own key
    knobs = resolve_options(AnalyzeOptions(), run.sft)
    default = GRPOConfig()
    assert (knobs["num_generations"], knobs["max_completion_length"], knobs["temperature"]) == (
        default.num_generations, default.max_completion_length, default.temperature)
    assert knobs["normalization"] == "seq-mean" and knobs["reward"] is None


def test_the_pipeline_trains_evaluates_and_analyses_into_one_run(tmp_path):
    from coinfluence.io import write_jsonl
    from coinfluence.pipeline import Pipeline, run_pipeline
    from coinfluence.training.sft import SFTConfig

    data = tmp_path / "data"
    for split, (n, seed) in {"sft": (12, 0), "rl_train": (6, 1), "val_id": (2, 2), "test_id": (2, 3)}.items():
        write_jsonl(data / f"{split}.jsonl", toy_rows(n, seed))
    request = Pipeline(out=tmp_path / "run", data=data, model="nano", eval_size=2, progress=False,
                       sft=SFTConfig(max_steps=3, eval_steps=0, eval_size=2),
                       grpo=GRPOConfig(max_steps=1, prompts_per_step=2, num_generations=2, eval_steps=0, eval_size=2),
                       auto_completion_length=True)
    said = []
    result = run_pipeline(request, say=said.append,
                          analysis=AnalyzeOptions(queries=2, targets_n=2, kernel=False))
    run = Run(tmp_path / "run")
    assert result["run"] == run and [name for name, _ in result["checkpoints"]] == ["sft", "grpo/final"]
    assert set(result["results"]) == {"sft", "grpo/final"} and set(result["results"]["sft"]) == {"test_id"}
    config = run.config()
    assert {"train", "sft", "grpo"} <= set(config) and config["train"]["data"] == str(data)
    # The SFT model's analysis sampled with the GRPO stage's settings, recorded in RUN/config.json.
    summary = json.loads((run.analysis / "sft" / "summary.json").read_text())
    assert summary["options"]["max_completion_length"] == config["grpo"]["max_completion_length"] != GRPOConfig().max_completion_length
    assert summary["options"]["num_generations"] == 2 and result["analysis"]["out"] == str(run.analysis / "sft")
    assert any(line.startswith("sft: nano") for line in said)
