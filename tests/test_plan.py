"""Plans: content-hashed run ids, stable, and changed only where a setting changes."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from conftest import TINY_STUDY, merged, with_setting
from transferlens.cli import main
from transferlens.errors import UserInputError
from transferlens.io import atomic_save_safetensors
from transferlens.models import build_model
from transferlens.study.loading import parse_study
from transferlens.study.plan import plan_study

# Two targets, two seeds, both sweeps, and longer arms (the pretraining epochs are checked).
BASE = merged(
    TINY_STUDY,
    targets=[*TINY_STUDY["targets"], {"label": "quickdraw", "data": {"domain": "quickdraw"}}],
    training={"pretrain": {"epochs": 4}, "pt": {"epochs": 2}, "rit": {"epochs": 2}},
    seeds=[0, 1],
    block_shuffle={"targets": ["real"], "block_sizes": [None, 4, 8, 0]},
    pretrain_checkpoints={"targets": ["quickdraw"], "epochs": [0, 2, "final"]},
)


def _plan(study: dict):
    return plan_study(parse_study(study, "p.yaml"), "p.yaml")


def _ids_by_arm(plan) -> dict[str, set[str]]:
    arms: dict[str, set[str]] = {"source": set(), "PT": set(), "RIT": set()}
    for run in plan:
        arms[run.meta.init or "source"].add(run.run_id)
    return arms


def test_run_id_is_kind_and_sha256_of_the_canonical_spec():
    plan = _plan(BASE)
    for run in plan:
        data = run.spec.model_dump(mode="json")
        for place in ("device", "num_workers", "eval_batch_size"):
            del data[place]
        del data["data"]["root"]
        # Fields added after the first run folders are named only when switched on, so
        # the ids of runs that do not use them are the ids they always had.
        assert data.pop("warmup_epochs") == 0 and data.pop("grad_clip_norm") is None
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        assert run.run_id == f"{run.meta.kind}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def test_same_study_same_ids_and_order():
    first, second = _plan(BASE), _plan(copy.deepcopy(BASE))
    assert list(first.runs) == list(second.runs)
    assert len(set(first.runs)) == len(first)


def test_grid_counts_and_deduplication():
    plan = _plan(BASE)
    targets, seeds = 2, 2
    main_runs = targets * seeds * 2
    # None, 4, 8 (= the image size: unshuffled, the same as None) and 0: three distinct;
    # the unshuffled block run is noaug, so not a main run.
    block_runs = 3 * seeds * 2
    checkpoint_runs = 3 * seeds - seeds  # 'final' is the main P-T run
    assert len(plan) == 1 + main_runs + block_runs + checkpoint_runs
    final_pt = plan.select(init="PT", target="quickdraw", group="main")
    assert len(final_pt) == seeds
    assert all("pretrain_checkpoints" in run.meta.groups for run in final_pt)
    assert all(run.meta.pretrain_epoch == 4 for run in final_pt)


def test_dependencies_point_at_the_source_checkpoint():
    plan = _plan(BASE)
    source = plan.source_run
    assert source.depends_on is None and source.meta.init == ""
    for run in plan.select(init="PT"):
        assert run.depends_on.run_id == source.run_id
        assert run.depends_on.epoch == run.meta.pretrain_epoch == run.spec.init.epoch
        assert run.spec.init.run == source.run_id  # an id, not a path
    for run in plan.select(init="RIT"):
        assert run.depends_on is None and run.spec.init.kind == "random"
    epochs = sorted({run.meta.pretrain_epoch for run in plan.select(init="PT", target="quickdraw")})
    assert epochs == [0, 2, 4]


def test_block_shuffle_runs_pair_seeds_with_shuffle_seeds():
    plan = _plan(BASE)
    runs = plan.select(group="block_shuffle")
    assert {run.meta.block_size for run in runs} == {None, 4, 0}  # 8 = image size = unshuffled
    for run in runs:
        assert run.spec.data.augment is False and run.meta.augment is False
        assert run.spec.data.block_size == run.meta.block_size
        if run.meta.block_size is None:
            assert run.meta.shuffle_seed is None
        else:
            assert (
                run.spec.data.shuffle_seed
                == run.meta.shuffle_seed
                == 1234 + BASE["seeds"].index(run.meta.seed)
            )
    for run in plan.select(group="main"):
        assert run.spec.data.augment is True and run.spec.data.block_size is None


def test_sweeps_can_repeat_fewer_seeds_than_the_main_grid():
    study = copy.deepcopy(BASE)
    study["seeds"] = [0, 1, 2]
    study["block_shuffle"]["seeds"] = [1]
    study["pretrain_checkpoints"]["seeds"] = [0, 2]
    plan = _plan(study)
    assert {run.meta.seed for run in plan.select(group="main")} == {0, 1, 2}
    shuffled = [run for run in plan.select(group="block_shuffle") if run.meta.block_size]
    assert {run.meta.seed for run in shuffled} == {1}
    # The sweep's first (only) seed pairs with the first default shuffle seed.
    assert {run.meta.shuffle_seed for run in shuffled} == {1234}
    early = [r for r in plan.select(group="pretrain_checkpoints") if r.meta.pretrain_epoch != 4]
    assert sorted(run.meta.seed for run in early) == [0, 0, 2, 2]
    # The sweeps' seeds change nothing else: the main grid is the same runs.
    unswept = _plan(with_setting(BASE, ["seeds"], [0, 1, 2]))
    assert {r.run_id for r in plan.select(group="main")} == {
        r.run_id for r in unswept.select(group="main")
    }


def test_shuffle_seeds_pair_with_the_sweeps_own_seeds():
    study = copy.deepcopy(BASE)
    study["block_shuffle"].update(seeds=[5], shuffle_seeds=[7, 8])
    with pytest.raises(UserInputError, match="block_shuffle.shuffle_seeds: needs one seed per"):
        parse_study(study, "p.yaml")
    study["block_shuffle"]["seeds"] = [5, 5]
    with pytest.raises(UserInputError, match="block_shuffle.seeds"):
        parse_study(study, "p.yaml")


@pytest.mark.parametrize(
    "change, changed_arms",
    [
        ((["training", "rit", "lr"], 0.3), {"RIT"}),
        ((["training", "pt", "lr"], 0.01), {"PT"}),
        ((["training", "pretrain", "lr"], 0.2), {"source", "PT"}),  # P-T names its source
        ((["source", "seed"], 3), {"source", "PT"}),
        ((["training", "pt", "num_workers"], 4), set()),  # where/how fast, not what
        ((["training", "rit", "warmup_epochs"], 2), {"RIT"}),
        ((["training", "rit", "warmup_epochs"], 0), set()),  # the off value names nothing
        ((["training", "pt", "grad_clip_norm"], 1.0), {"PT"}),
        ((["training", "rit", "eval_batch_size"], 64), set()),
        ((["devices"], "0,1"), set()),
        ((["analyses"], {"cka": {}}), set()),
    ],
)
def test_a_change_renames_only_the_runs_it_touches(change, changed_arms):
    before = _ids_by_arm(_plan(BASE))
    after = _ids_by_arm(_plan(with_setting(BASE, *change)))
    for arm in before:
        if arm in changed_arms:
            assert not before[arm] & after[arm], arm
        else:
            assert before[arm] == after[arm], arm


def test_one_target_setting_replans_only_that_target():
    before = _plan(BASE)
    after = _plan(with_setting(BASE, ["targets", 1, "data", "train_size"], 24))
    changed = set(before.runs) ^ set(after.runs)
    touched = {before.runs[i].meta.target for i in changed if i in before.runs}
    assert touched == {"quickdraw"}
    kept = set(before.runs) & set(after.runs)
    assert {before.runs[i].meta.target for i in kept} == {"source", "real"}


def test_adding_a_seed_keeps_every_existing_run():
    before = _plan(BASE)
    after = _plan(with_setting(BASE, ["seeds"], [0, 1, 2]))
    assert set(before.runs) < set(after.runs)
    assert {after.runs[i].meta.seed for i in set(after.runs) - set(before.runs)} == {2}


def test_data_root_does_not_rename_runs(tmp_path, monkeypatch):
    study = copy.deepcopy(BASE)
    study["targets"][0] = {"label": "photo", "data": {"name": "pacs", "domain": "photo"}}
    study["block_shuffle"]["targets"] = ["photo"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = plan_study(parse_study(study, "p", data_root=tmp_path / "a"))
    second = plan_study(parse_study(study, "p", data_root=tmp_path / "b"))
    assert list(first.runs) == list(second.runs)
    assert first.select(target="photo")[0].spec.data.root == str((tmp_path / "a").resolve())


def test_weights_file_source_has_no_source_run(tmp_path):
    weights = tmp_path / "w.safetensors"  # weights that fit the study's model
    atomic_save_safetensors(
        build_model("fixup_resnet10", 2, stem="cifar", width=4).state_dict(), weights
    )
    study = copy.deepcopy(BASE)
    study["source"] = {"weights": str(weights)}
    study["pretrain_checkpoints"] = None
    plan = _plan(study)
    assert plan.source_run is None
    for run in plan.select(init="PT"):
        assert run.depends_on is None and run.spec.init.kind == "file"
        assert run.meta.pretrain_epoch is None


def test_plan_command_prints_counts_without_running(tmp_path, capsys, study_file):
    path = study_file(BASE, name="p.yaml")
    out = tmp_path / "study"
    assert main(["plan", str(path), "--out", str(out), "--list"]) == 0
    text = capsys.readouterr().out
    plan = _plan(BASE)
    assert f"{len(plan)} runs (0 complete)" in text
    assert "P (source)" in text and "RI-T" in text and "P-T" in text
    for run_id in plan.runs:
        assert run_id in text
    assert not out.exists()  # nothing was run or written


def test_pretrained_weights_source():
    study = copy.deepcopy(BASE)
    study["model"] = {"name": "resnet18"}
    study["source"] = {"pretrained": {"weights": "IMAGENET1K_V1"}}
    study["pretrain_checkpoints"] = None
    del study["training"]["pretrain"]
    plan = _plan(study)
    assert plan.source_run is None
    for run in plan.select(init="PT"):
        assert run.spec.init.kind == "pretrained" and run.depends_on is None
        assert run.spec.init.build_kwargs("resnet18") == {"weights": "IMAGENET1K_V1"}
    assert _plan(study).runs.keys() == plan.runs.keys()
