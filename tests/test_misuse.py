"""Misuse and bad inputs, class by class, each with the one line it gets and no file of the
user's changed: outputs that exist, writes cut short, devices and folders that are not there,
numbers out of range, and checkpoints that cannot do what is asked. (Weights files:
``test_weights_files.py``; caches keyed on content: ``test_search.py``.) The table of these
classes is in ``docs/misuse.md``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import run_cli, tiny_args, write_pairs
from lightning_siamese.cli.main import main
from lightning_siamese.errors import ConfigError, OutputError, OutputExistsError
from lightning_siamese.files import content_digest
from lightning_siamese.outputs import claim_file, replace_folder
from lightning_siamese.training.prediction_writer import EMBEDDINGS_FILE, WriteEmbeddings


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


def user_file(path: Path, text: str = "mine") -> str:
    """A file of the user's at ``path``; its digest, to show it is unchanged afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return content_digest(path)


# Outputs that exist -----------------------------------------------------------------------------


def test_wise_ft_refuses_to_write_over_its_own_checkpoint(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "model.ckpt"
    shutil.copy(trained_run[2], checkpoint)
    before = content_digest(checkpoint)
    args = ["wise-ft", "--ckpt", str(checkpoint), "--alpha", "0.5", "--out", str(checkpoint)]
    assert main(args) == 2
    (line,) = error_lines(capsys)
    assert "is the checkpoint being mixed" in line and "--force" in line
    theirs = tmp_path / "other.ckpt"
    digest = user_file(theirs)
    assert main([*args[:-1], str(theirs)]) == 2
    assert "already exists and is not this command's earlier output" in error_lines(capsys)[0]
    assert content_digest(checkpoint) == before and content_digest(theirs) == digest


def test_data_builders_never_write_into_other_pairs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    theirs = tmp_path / "theirs"
    write_pairs(theirs, 3)
    digest = user_file(theirs / "pairs.csv", "name,group\n")
    listing = sorted(p.relative_to(theirs) for p in theirs.rglob("*"))
    assert main(["data", "glyphs", "--out", str(theirs), "--font-pairs", "1"]) == 2
    (line,) = error_lines(capsys)
    assert f"the pair folder {theirs} already holds files" in line and "--force" in line
    assert sorted(p.relative_to(theirs) for p in theirs.rglob("*")) == listing
    assert content_digest(theirs / "pairs.csv") == digest
    # A set built here is rebuilt whole: the second build (fewer fonts) leaves no old file.
    ours = tmp_path / "glyphs"
    assert main(["data", "glyphs", "--out", str(ours), "--font-pairs", "2"]) == 0
    assert main(["data", "glyphs", "--out", str(ours), "--font-pairs", "1"]) == 0
    assert len(list((ours / "left").iterdir())) == 62
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # A file changed or added in a set built here makes it somebody else's again.
    (ours / "pairs.csv").write_text("name,group\n")
    assert main(["data", "glyphs", "--out", str(ours), "--font-pairs", "1"]) == 2
    assert (ours / "pairs.csv").read_text() == "name,group\n"
    assert main(["data", "glyphs", "--out", str(ours), "--font-pairs", "1", "--force"]) == 0
    user_file(ours / "left" / "mine.png")
    assert main(["data", "glyphs", "--out", str(ours), "--font-pairs", "1"]) == 2
    assert "mine.png" not in error_lines(capsys)[0] and (ours / "left" / "mine.png").is_file()
    # The current folder (or one above it) is never swapped out.
    assert main(["data", "glyphs", "--out", str(Path.cwd()), "--force"]) == 2
    assert "is the current folder or holds it" in error_lines(capsys)[0]
    # Asked for, the other folder is replaced.
    assert main(["data", "glyphs", "--out", str(theirs), "--font-pairs", "1", "--force"]) == 0
    assert not (theirs / "left" / "0000.png").exists()


def test_pictures_exports_and_evaluations_replace_only_their_own(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _, checkpoint = trained_run
    picture = tmp_path / "grid.png"
    digest = user_file(picture)
    show = ["data", "show", str(root), "--out", str(picture), "--rows", "2"]
    assert main(show) == 2
    assert "the picture" in error_lines(capsys)[0]
    assert content_digest(picture) == digest
    assert main([*show, "--force"]) == 0 and main(show) == 0  # then it is ours: replaced

    export = ["export", "--ckpt", str(checkpoint), "--format", "pt2", "--no-check"]
    exported = tmp_path / "net.pt2"
    assert main([*export, "--out", str(exported)]) == 0
    assert main([*export, "--out", str(exported)]) == 0  # its own, unchanged: replaced
    sidecar = json.loads((tmp_path / "net.pt2.json").read_text())
    assert sidecar["digest"] == content_digest(exported)
    with exported.open("ab") as handle:  # changed by the user since: no longer replaced
        handle.write(b"\0")
    capsys.readouterr()
    assert main([*export, "--out", str(exported)]) == 2
    assert "the exported file" in error_lines(capsys)[0]

    folder = tmp_path / "evaluation"
    digest = user_file(folder / "notes.txt")
    evaluate = ["evaluate", "--ckpt", str(checkpoint), "--root", str(root), "--out", str(folder)]
    assert main(evaluate) == 2
    assert "the evaluation folder" in error_lines(capsys)[0]
    assert main([*evaluate, "--force"]) == 0 and main(evaluate) == 0
    assert content_digest(folder / "notes.txt") == digest
    (folder / "retrieval.csv").write_text("my edits")  # changed since: no longer replaced
    assert main(evaluate) == 2
    assert (folder / "retrieval.csv").read_text() == "my edits"


def test_search_and_predict_outputs_of_the_user_stop_before_any_work(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _, checkpoint = trained_run
    montage = tmp_path / "search.png"
    digest = user_file(montage)
    gallery = tmp_path / "gallery"
    shutil.copytree(root / "right", gallery)
    search = ["search", "--ckpt", str(checkpoint), "--gallery", str(gallery)]
    assert main([*search, "--query", str(gallery), "--out", str(montage)]) == 2
    assert "the montage" in error_lines(capsys)[0]
    assert content_digest(montage) == digest
    assert not (gallery / ".lightning-siamese").exists()  # nothing embedded

    run = tmp_path / "run"
    (run / "predictions" / EMBEDDINGS_FILE).mkdir(parents=True)  # a folder in its place
    one_process = SimpleNamespace(broadcast=lambda value: value)
    trainer = SimpleNamespace(is_global_zero=True, default_root_dir=str(run), strategy=one_process)
    with pytest.raises(OutputExistsError, match="is a folder; move it, or predict into another"):
        WriteEmbeddings().on_predict_start(trainer, None)  # type: ignore[arg-type]
    (run / "predictions" / EMBEDDINGS_FILE).rmdir()
    digest = user_file(run / "predictions" / EMBEDDINGS_FILE)
    with pytest.raises(OutputExistsError, match="the predictions file"):
        WriteEmbeddings().on_predict_start(trainer, None)  # type: ignore[arg-type]
    assert content_digest(run / "predictions" / EMBEDDINGS_FILE) == digest


# Writes cut short -------------------------------------------------------------------------------


def test_an_export_cut_short_leaves_the_old_file_and_sidecar(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_siamese.applications import export

    out = tmp_path / "net.pt2"
    args = ["export", "--ckpt", str(trained_run[2]), "--format", "pt2", "--no-check"]
    assert main([*args, "--out", str(out)]) == 0
    before = {path.name: content_digest(path) for path in tmp_path.iterdir()}

    def half_then_interrupted(net: object, path: Path, *args: object) -> None:
        Path(path).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setitem(export.EXPORTERS, "pt2", half_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--out", str(out)])
    assert {path.name: content_digest(path) for path in tmp_path.iterdir()} == before


def test_a_folder_build_cut_short_leaves_the_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "set"
    user_file(target / "old.txt")

    def build() -> None:
        with replace_folder(target) as building:
            (building / "new.txt").write_text("half")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build()
    assert [p.name for p in tmp_path.iterdir()] == ["set"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]


def test_writes_cut_short_are_cleaned_up_by_the_next_write(tmp_path: Path) -> None:
    """A write killed midway leaves its hidden partial file; the next write of the same file
    removes it, but not one that a write in progress holds. A folder swap cut short between
    its renames gets the old folder back."""
    from lightning_siamese.files import atomic_write, hold

    target = tmp_path / "metrics.json"
    killed = tmp_path / ".metrics.json.0123.partial"
    killed.write_text("half")
    in_progress = tmp_path / ".metrics.json.4567.partial"
    with in_progress.open("wb") as handle:
        hold(handle)
        with atomic_write(target, "w") as out:
            out.write("{}")
        assert not killed.exists() and in_progress.exists()
    assert target.read_text() == "{}"

    folder = tmp_path / "set"
    (tmp_path / ".set.89ab.old").mkdir()
    user_file(tmp_path / ".set.89ab.old" / "pairs.csv")
    with replace_folder(folder) as building:  # starts by putting the old folder back
        assert (folder / "pairs.csv").is_file()
        (building / "new.csv").write_text("new")
    assert [p.name for p in folder.iterdir()] == ["new.csv"]


# The environment --------------------------------------------------------------------------------


def test_devices_that_are_not_there_are_one_line(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    root, _, checkpoint = trained_run
    gallery = ["--gallery", str(root / "right"), "--query", str(root / "left")]
    cases = {
        ("evaluate", "--root", str(root), "--device", "cuda"): "no CUDA device",
        ("search", *gallery, "--device", "cuda:1"): "no CUDA device",
        ("search", *gallery, "--device", "gpu"): "is not a device",
        ("search", *gallery, "--device", "meta"): "not a device these commands run on",
    }
    for (command, *rest), message in cases.items():
        out = ["--out", str(tmp_path / command / "out.png")]
        assert main([command, "--ckpt", str(checkpoint), *rest, *out]) == 2
        (line,) = error_lines(capsys)
        assert message in line, line
    args = [*tiny_args(root, tmp_path / "run"), "--trainer.accelerator=gpu"]
    assert main(["fit", *args]) == 2
    assert "--trainer.accelerator gpu: this machine has no such device" in error_lines(capsys)[0]
    assert not (tmp_path / "run").exists()


def test_folders_that_cannot_be_written_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a_file = tmp_path / "file"
    user_file(a_file)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        claim_file(a_file / "x.png", "the picture")
    assert main(["data", "glyphs", "--out", str(a_file / "set"), "--font-pairs", "1"]) == 2
    assert "is a file, not a folder" in error_lines(capsys)[0]
    # What the system refuses on writing (read-only file system, full disk, permissions): the
    # tests run as root, so the refusal is made here.
    from lightning_siamese.data import glyphs

    def refused(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "set" / "left"))

    monkeypatch.setattr(glyphs, "_draw", refused)
    assert main(["data", "glyphs", "--out", str(tmp_path / "set"), "--font-pairs", "1"]) == 2
    (line,) = error_lines(capsys)
    assert line.startswith(f"error: cannot use {tmp_path / 'set' / 'left'}: Permission denied")


def test_paths_the_system_cannot_use_and_settings_lightning_refuses_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["data", "check", str(tmp_path / ("x" * 300))]) == 2
    assert "File name too long; choose a shorter path" in error_lines(capsys)[0]
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate': choose one of fit, " in error_lines(capsys)[0]
    root, run = tmp_path / "pairs", tmp_path / "run"
    write_pairs(root, 20)
    assert main(["fit", *tiny_args(root, run), "--trainer.devices=0"]) == 2
    assert "(a --trainer setting Lightning refuses)" in error_lines(capsys)[0]
    # Lightning's own BatchNorm synchronisation would convert the frozen layers too.
    sync = ["--trainer.strategy=ddp", "--trainer.devices=1", "--trainer.sync_batchnorm=true"]
    for variable in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)  # DDP sets them in this process
    try:
        assert main(["fit", *tiny_args(root, run), "--trainer.accelerator=cpu", *sync]) == 2
    finally:
        if torch.distributed.is_initialized():  # leave no process group behind
            torch.distributed.destroy_process_group()
    assert "leave trainer.sync_batchnorm false" in error_lines(capsys)[0]
    # A memory of negatives needs a loss that takes more negatives than its own.
    assert main(["fit", *tiny_args(root, run), "--model.memory_size=8"]) == 2
    assert "needs InfoNCE or mining" in error_lines(capsys)[0]


def test_numbers_out_of_range_are_refused_by_the_parser(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        ("data", "show", str(tmp_path), "--out", "x.png", "--rows", "0"): "must be >= 1",
        ("data", "glyphs", "--out", str(tmp_path / "g"), "--size", "0"): "must be 8 to 4096",
        ("data", "glyphs", "--out", str(tmp_path / "g"), "--font-pairs", "9"): "must be 1 to 8",
        ("search", "--ckpt", "x", "--gallery", "g", "--query", "q", "--top-k", "0"): ">= 1",
        (
            "search",
            "--ckpt",
            "x",
            "--gallery",
            "g",
            "--query",
            "q",
            "--num-workers",
            "10**9",
        ): "invalid integer",
        ("evaluate", "--ckpt", "x", "--root", "r", "--batch-size", "99999999999"): "1 to 65536",
        ("export", "--ckpt", "x", "--format", "pt2", "--tolerance", "nan"): "finite number",
        ("data", "show", str(tmp_path), "--out", "pictures/"): "is not a file name",
    }
    for args, message in cases.items():
        with pytest.raises(SystemExit) as exit_:
            main(list(args))
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_settings_out_of_range_and_not_finite_are_refused() -> None:
    from lightning_siamese.data.splits import check_fractions
    from lightning_siamese.models.embedding import EmbeddingNet
    from lightning_siamese.models.losses import make_loss

    with pytest.raises(ConfigError, match="embedding_dim, pool_size and image_size must be >= 1"):
        EmbeddingNet("timm/test_resnet", "none", embedding_dim=0, image_size=32)
    with pytest.raises(ConfigError, match="margin must be a finite number"):
        make_loss("triplet", float("nan"), "squared_l2", False, "none", False, 0.1)
    with pytest.raises(ConfigError, match="split_fractions"):
        check_fractions([0.5, 0.5, float("nan")])  # every comparison with NaN is false


def test_the_library_refuses_values_the_commands_refuse(
    trained_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from lightning_siamese.applications.export import export_model
    from lightning_siamese.applications.search import search
    from lightning_siamese.errors import ExportError

    root, _, checkpoint = trained_run
    with pytest.raises(ConfigError, match="top_k_matches must be an integer >= 1"):
        search(checkpoint, root / "right", root / "left", top_k_matches=0)
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1"):
        search(checkpoint, root / "right", root / "left", batch_size=0, use_cache=False)
    with pytest.raises(ExportError, match="tolerance must be a finite number"):
        export_model(checkpoint, "pt2", out=tmp_path / "x.pt2", tolerance=float("nan"))


def test_predict_with_no_readable_image_is_an_error(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _, best = trained_run
    broken = tmp_path / "broken"
    user_file(broken / "cat.png", "not a picture")
    run = tmp_path / "run"
    args = [*tiny_args(root, run), f"--ckpt_path={best}", f"--data.predict_root={broken}"]
    assert main(["predict", *args]) == 2
    assert "--data.predict_root: no readable image (1 unreadable: " in error_lines(capsys)[0]
    assert not (run / "predictions" / EMBEDDINGS_FILE).exists()


def test_the_package_s_own_cache_is_no_problem_of_a_pair_folder(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning_siamese.data.pairs import discover_pairs

    built = tmp_path / "glyphs"
    assert main(["data", "glyphs", "--out", str(built), "--font-pairs", "1"]) == 0
    gallery = ["--gallery", str(built / "right"), "--query", str(built / "left" / "0030-0.png")]
    out = ["--out", str(tmp_path / "s.png")]
    assert main(["search", "--ckpt", str(trained_run[2]), *gallery, *out]) == 0
    assert (built / "right" / ".lightning-siamese").is_dir()
    assert discover_pairs(built).problems == []
    assert main(["data", "glyphs", "--out", str(built), "--font-pairs", "1"]) == 0  # still ours


def test_pairs_csv_read_in_part_or_contradicting_itself_is_named(tmp_path: Path) -> None:
    from lightning_siamese.data.pairs_csv import read_groups

    (tmp_path / "pairs.csv").write_text("name,group\na,1\nb,2\na,3\n")
    groups, problems = read_groups(tmp_path, {"a", "b"})
    assert groups == {"b": "2"} and "listed twice with different groups ('a')" in problems[0][1]
    (tmp_path / "pairs.csv").write_bytes(b"name,group\n" + b"a,1\n" * 5000 + b"b,\xe9\n")
    groups, problems = read_groups(tmp_path, {"a", "b"})
    assert groups == {} and "groups are ignored" in problems[0][1]  # none of a part read


# Checkpoints that cannot do what is asked -------------------------------------------------------


def test_checkpoint_misuse_is_one_line(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, trained, _ = trained_run
    run = tmp_path / "run"
    shutil.copytree(trained / "checkpoints", run / "checkpoints")
    best = next((run / "checkpoints").glob("epoch*.ckpt"))
    args = tiny_args(root, run)

    def fails(subcommand: str, *extra: str) -> str:
        assert main([subcommand, *args, *extra]) == 2
        (line,) = error_lines(capsys)
        return line

    # `best` means the best of a fit in the same process; a new one is told the file.
    assert "pass --ckpt_path" in fails("test", "--ckpt_path=best")
    # A network option the checkpoint contradicts would be ignored: refused.
    line = fails("test", f"--ckpt_path={best}", "--model.backbone=resnet18")
    assert "backbone='resnet18' (the checkpoint's: 'timm/test_resnet')" in line
    # A weights-only file cannot resume a fit; it says how to start from it.
    content = torch.load(best, weights_only=True)
    for key in ("optimizer_states", "loops", "lr_schedulers", "callbacks"):
        content.pop(key, None)
    weights_only = tmp_path / "mixed.ckpt"
    torch.save({**content, "wise_ft": {"alpha": 0.5}}, weights_only)
    line = fails("fit", f"--ckpt_path={weights_only}")
    assert "cannot resume a fit" in line and f"--model.weights {weights_only}" in line
    # Nothing to load: never an untrained model evaluated in its place.
    assert "no last*.ckpt in" in fails(
        "test", "--ckpt_path=last", f"--trainer.default_root_dir={tmp_path / 'none'}"
    )
    assert "--ckpt_path is empty" in fails("test", "--ckpt_path=")
    assert "is a folder" in fails("test", f"--ckpt_path={run / 'checkpoints'}")
    assert "no hpc_ckpt_" in fails("test", "--ckpt_path=hpc")
    # A mix cannot be mixed again (the alpha it records would not be the mix's).
    mix = tmp_path / "mix.ckpt"
    torch.save({**torch.load(best, weights_only=True), "wise_ft": {"alpha": 0.5}}, mix)
    assert main(["wise-ft", "--ckpt", str(mix), "--alpha", "0.5"]) == 2
    assert "is already a WiSE-FT mix" in error_lines(capsys)[0]
    # A truncated last.ckpt: named, with the newest checkpoint that loads.
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:4000])
    line = fails("test", "--ckpt_path=last")
    assert "last.ckpt: not a readable checkpoint" in line and f"pass --ckpt_path {best}" in line
    # Weights that are not finite: named, for the CLI and for search/evaluate.
    content["state_dict"]["net.head.2.weight"] = torch.full_like(
        content["state_dict"]["net.head.2.weight"], float("nan")
    )
    broken = tmp_path / "nan.ckpt"
    torch.save(content, broken)
    assert "NaN or infinite values (net.head.2.weight)" in fails("test", f"--ckpt_path={broken}")
    evaluate = [
        "evaluate",
        "--ckpt",
        str(broken),
        "--root",
        str(root),
        "--out",
        str(tmp_path / "e"),
    ]
    assert main(evaluate) == 2
    assert "NaN or infinite" in error_lines(capsys)[0]


def test_a_config_of_the_user_in_the_run_folder_is_never_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, run = tmp_path / "pairs", tmp_path / "run"
    write_pairs(root, 20)
    digest = user_file(run / "config.yaml", "# my settings\nmodel:\n  margin: 0.3\n")
    assert main(["fit", *tiny_args(root, run)]) == 2
    (line,) = error_lines(capsys)
    assert "the run's config file" in line and "--trainer.default_root_dir" in line
    assert content_digest(run / "config.yaml") == digest


def test_a_checkpoint_is_rebuilt_at_its_size_without_its_starting_weights(
    trained_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """``test --ckpt_path``: the model takes the checkpoint's image size when the data's is
    not given (not the backbone's default), and does not read the weights file the fit
    started from (the checkpoint holds every tensor)."""
    from lightning_siamese.cli.lightning_cli import run

    root, _, best = trained_run
    content = torch.load(best, weights_only=True)
    content["hyper_parameters"]["weights"] = str(tmp_path / "deleted-since.pth")
    checkpoint = tmp_path / "model.ckpt"
    torch.save(content, checkpoint)
    args = [*tiny_args(root, tmp_path / "run"), "--data.image_size=null"]
    cli = run(["test", *args, f"--ckpt_path={checkpoint}"])
    assert cli.model.hparams["image_size"] == 32 == cli.datamodule.image_size
    assert cli.trainer.callback_metrics["test/recall@1"] >= 0


def test_a_runtime_option_is_used_and_a_training_one_named(
    trained_run: tuple[Path, Path, Path],
) -> None:
    """What the CLI rebuilds a checkpoint's model with, against options on the command line."""
    from lightning_siamese.cli.ckpt_path import reconcile

    saved = torch.load(trained_run[2], weights_only=True)["hyper_parameters"]
    given = {**saved, "margin": 0.25, "frozen_graph": "eager", "optimizer": "adam-from-config"}
    warnings: list[str] = []
    hparams = reconcile(given, saved, None, warnings.append)
    assert hparams["frozen_graph"] == "eager"  # how it computes: as given
    assert hparams["margin"] == saved["margin"]  # what it learned: the checkpoint's, and said
    assert "optimizer" not in hparams  # not saved (None): the config's stays
    (warning,) = warnings
    assert f"margin=0.25 (the checkpoint's {saved['margin']} is used)" in warning
    # Settings at their defaults were not given: the checkpoint's count without a word.
    default = reconcile({**saved, "backbone": "resnet50"}, saved, None, warnings.append)
    assert default["backbone"] == saved["backbone"] and len(warnings) == 1
    with pytest.raises(ConfigError, match=re.escape("image_size=64 (the checkpoint's: 32)")):
        reconcile({**saved, "image_size": 64}, saved, 64, warnings.append)


def test_ctrl_c_during_a_checkpoint_save_stops_like_ctrl_c(tmp_path: Path) -> None:
    root, run = tmp_path / "pairs", tmp_path / "run"
    write_pairs(root, 20)
    callback = {"class_path": "interrupt_callbacks.InterruptWhileSaving", "init_args": {"epoch": 1}}
    result = run_cli(
        "fit", *tiny_args(root, run), "--trainer.max_epochs=2", "--trainer.logger=false",
        "--validate_before_fit=false", f"--trainer.callbacks+={json.dumps(callback)}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-2000:]  # Lightning's graceful stop
    assert "Detected KeyboardInterrupt, attempting graceful shutdown" in result.stdout
    assert "Traceback" not in result.stdout
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 0  # the previous checkpoint, whole
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")) == []
