"""Output paths: `~` expanded, and a file where a directory must go named before any work."""

import pytest

from depmask.cli import main
from depmask.paths import output_dir
from tests.conftest import EMBEDDED


def test_output_dir_expands_home_and_names_a_file_in_the_way(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert output_dir("output", "~/runs/x") == tmp_path / "runs" / "x"
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match=r"`output` \('~/f'\) is a file; give a directory"):
        output_dir("output", "~/f")
    with pytest.raises(ValueError, match=r"`out` \('.*f/x/y'\) lies below a file \(.*/f\)"):
        output_dir("out", tmp_path / "f" / "x" / "y")


def test_commands_name_an_output_that_is_a_file_before_their_work(tmp_path):
    """`eval predictor` scored every state, `mdlm evaluate` decoded every setting, `mdlm fit` trained,
    and then each failed on its first write."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"`output` \(.*file'\) is a file"):
        main(["eval", "decode", "--model.path", str(tmp_path / "none"), "--tasks", "[sort]", "--n", "2",
              "--output", str(blocker)])
    with pytest.raises(ValueError, match=r"`out` \(.*file'?\) is a file|lies below a file"):
        main(["mdlm", "evaluate", "--model", str(EMBEDDED), "--n", "2", "--out", str(blocker / "eval.json")])
    with pytest.raises(ValueError, match=r"`out_dir` \(.*file'\) is a file"):
        main(["quickstart", "--out_dir", str(blocker)])


def test_a_harvest_output_under_home_is_expanded(tmp_path, monkeypatch):
    from depmask.data_gen import HarvestConfig

    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = HarvestConfig(model="~/model", output="~/harvest", tasks=["sort"])
    assert cfg.output == str(tmp_path / "harvest") and cfg.model == str(tmp_path / "model")


def test_a_harvest_keeps_its_prompts_files_spelling():
    """Only `~` is expanded: `prompts_file` is recorded and compared on resume, and normalising
    `./prompts/` to `prompts` refused the resume of a harvest started before."""
    from depmask.data_gen import HarvestConfig

    cfg = HarvestConfig(model="models/tiny-tasks/", output="out/", tasks=[], prompts_file="./prompts/", gen_length=8)
    assert (cfg.prompts_file, cfg.model, cfg.output) == ("./prompts/", "models/tiny-tasks/", "out/")
