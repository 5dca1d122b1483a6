"""The real-model route for `demask`, end to end with the embedded model standing in for
LLaDA-8B: `configs/harvest/llada-gsm8k.yaml` (GSM8K train prompts from a local file) →
`configs/train/head-llada.yaml` → `configs/eval/gsm8k-llada.yaml` decoding with that head.

Only the lengths, the capture layer and the device are overridden (the embedded model has 4
layers and no GPU here); what is checked is that the three shipped configs fit together: the
harvest's benchmark prompts and blocks, a head trained on them that knows its base model, and
the eval config accepting it.
"""

import json

import pytest

from depmask.cli import main
from depmask.data_gen.dataset import load_harvest
from depmask.predictor import DependencyHead
from depmask.train.harvest_cli import harvest_cli
from tests.conftest import EMBEDDED, ROOT
from tests.data_gen.harvest_inputs import _gsm8k_file

CONFIGS = ROOT / "configs"
STAND_IN = ["--model.path", str(EMBEDDED), "--model.mask_id", "2", "--model.device", "cpu", "--model.dtype", "float32",
            "--model.capture_layers", "[3]"]


def test_harvest_train_and_decode_with_the_llada_configs(tmp_path):
    data = _gsm8k_file(tmp_path / "gsm8k.jsonl", n=10)
    harvest = tmp_path / "harvest"
    summary = harvest_cli([
        "--config", str(CONFIGS / "harvest" / "llada-gsm8k.yaml"), "--harvest.model", str(EMBEDDED),
        "--harvest.dtype", "float32", "--harvest.capture_layers", "[3]", "--harvest.output", str(harvest),
        "--harvest.task_kwargs", json.dumps({"gsm8k": {"path": str(data), "shots": 0}}),
        "--harvest.examples_per_task", "10", "--harvest.states_per_example", "2",
        "--harvest.gen_length", "16", "--harvest.block_length", "8", "--harvest.batch_size", "5",
        "--trainer.accelerator", "cpu"])
    assert summary["total_rows"] == 20 and summary["total_examples"] == 10
    rows = load_harvest(harvest)
    assert {e.split(":")[1] for e in rows["example_id"]} == {"train"}
    assert set(rows["block"]) <= {0, 1} and len(set(rows["prompt_length"])) > 1  # text prompts differ

    head_dir = tmp_path / "head"
    main(["train", "fit", "--config", str(CONFIGS / "train" / "head-llada.yaml"), "--data.harvest", str(harvest),
          "--model.export_dir", str(head_dir), "--checkpoint.dirpath", str(tmp_path / "run"),
          "--trainer.max_epochs", "1", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
          "--trainer.accelerator", "cpu", "--data.num_workers", "0", "--data.val_fraction", "0.3"])
    head = DependencyHead.from_pretrained(head_dir)
    assert head.config["dim"] == 128 and head.config["layers"] == 2
    assert head.base_fingerprint == json.loads((harvest / "harvest.json").read_text())["fingerprint"]

    out = tmp_path / "eval"
    main(["eval", "decode", "--config", str(CONFIGS / "eval" / "gsm8k-llada.yaml"), *STAND_IN,
          "--task_kwargs", json.dumps({"gsm8k": {"path": str(data), "shots": 0}}), "--n", "3",
          "--gen_length", "16", "--block_length", "8", "--output", str(out),
          "--policies", json.dumps([{"name": "demask", "knobs": {"head": str(head_dir)}, "sweep": {"epsilon": [0.3]}}])])
    (row,) = json.loads((out / "summary.json").read_text())
    assert (row["task"], row["policy"], row["n"]) == ("gsm8k", "demask", 3) and 2 <= row["nfe"] <= 16


@pytest.mark.parametrize("name, model_file", [("llada", "llada-8b-instruct"), ("dream", "dream-7b-instruct")])
def test_the_three_configs_name_each_others_outputs(name, model_file):
    """Dream's four eval configs named a head (`outputs/heads/dream`) that no shipped config made."""
    import yaml

    harvest = yaml.safe_load((CONFIGS / "harvest" / f"{name}-gsm8k.yaml").read_text())["harvest"]
    train = yaml.safe_load((CONFIGS / "train" / f"head-{name}.yaml").read_text())
    model = yaml.safe_load((CONFIGS / "model" / f"{model_file}.yaml").read_text())
    assert train["data"]["harvest"] == harvest["output"]
    evaluations = sorted((CONFIGS / "eval").glob(f"*-{name}.yaml"))
    assert len(evaluations) == 4
    for path in evaluations:
        evaluation = yaml.safe_load(path.read_text())
        (demask,) = [p for p in evaluation["policies"] if p["name"] == "demask"]
        assert demask["knobs"]["head"] == train["model"]["export_dir"], path.name
        assert evaluation["model"]["capture_layers"] == model["capture_layers"], path.name
    evaluation = yaml.safe_load((CONFIGS / "eval" / f"gsm8k-{name}.yaml").read_text())
    # the harvest decodes in the eval's setting, with the model config's dtype and capture layers
    assert (harvest["gen_length"], harvest["block_length"]) == (evaluation["gen_length"], evaluation["block_length"])
    assert harvest["capture_layers"] == model["capture_layers"] and harvest["dtype"] == model["dtype"]
    assert harvest["task_kwargs"]["gsm8k"].get("shots", 0) == 0  # eval's zero-shot prompts
