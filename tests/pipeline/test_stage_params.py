"""The params each DVC stage reads (stfmamba/pipeline.py) against dvc.yaml, and against real DVC.

(a) the declaration matches the committed dvc.yaml; `check` names stage and key when dvc.yaml
    lacks a key or lists one too many, and when a config dataclass gains a field; `write` repairs
    dvc.yaml and leaves every other line alone; the derivation agrees with the trainer's own lists.
(b) in a temporary git + DVC repository, a stage whose params are the generated ones for
    train_phase_a: after `dvc repro`, changing any result-changing key makes DVC report the stage
    changed, changing any other scalar key of params.yaml (an excluded key, a Phase-B-only key, an
    architecture flag) does not. The loop over ~100 keys runs real DVC (``dvc.repo.Repo.status``,
    a fresh repo object per key) in one subprocess: a `dvc status` process per key would take ~2
    minutes here; the key of the issue and an excluded one also go through the `dvc status` CLI.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from dvc_helpers import env, git_init, run
from stfmamba import config as C
from stfmamba import pipeline as P

ROOT = Path(__file__).resolve().parents[2]
DVC_YAML = ROOT / "dvc.yaml"


def expanded() -> dict[str, set[str]]:
    return {s: P._expand(keys) for s, keys in P.stage_params().items()}


# --------------------------------------------------------------------------- (a) declaration vs dvc.yaml
def test_dvc_yaml_matches_declaration():
    assert P.check(DVC_YAML) == []
    assert P.main(["check", "--dvc-yaml", str(DVC_YAML)]) == 0
    declared, listed = P.stage_params(), P.read_dvc_params(DVC_YAML)
    assert set(listed) <= set(declared)
    assert set(declared) - set(listed) <= {"weights"}   # added to dvc.yaml by the weights branch


def test_check_fails_naming_stage_and_key(tmp_path, capsys):
    text = DVC_YAML.read_text()
    lines = text.splitlines(keepends=True)
    # drop training.mask_loss_weight from train_phase_a only (the first occurrence is in that stage)
    start = next(i for i, ln in enumerate(lines) if ln.startswith("  train_phase_a:"))
    i = next(i for i in range(start, len(lines)) if lines[i].strip() == "- training.mask_loss_weight")
    broken = tmp_path / "dvc.yaml"
    broken.write_text("".join(lines[:i] + ["      - training.num_workers\n"] + lines[i + 1:]))
    problems = P.check(broken)
    assert len(problems) == 2, problems
    assert any(p.startswith("train_phase_a: reads training.mask_loss_weight but") for p in problems)
    assert any(p.startswith("train_phase_a:") and "lists training.num_workers" in p for p in problems)
    assert P.main(["check", "--dvc-yaml", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "train_phase_a" in err and "training.mask_loss_weight" in err
    # write repairs it, touching nothing but params lists
    assert P.write(broken) == ["train_phase_a"]
    assert P.check(broken) == []
    assert broken.read_text() == text


def test_write_keeps_everything_else(tmp_path):
    f = tmp_path / "dvc.yaml"
    f.write_text(DVC_YAML.read_text().replace("    params: [demo]\n", "    params: [demo, budget]\n")
                 .replace("      - eval.batch_size\n", "", 1))
    changed = P.write(f)
    assert set(changed) == {"demo", "eval_phase_a"}
    assert f.read_text() == DVC_YAML.read_text()   # comments, flow lists, anchors of deps: byte for byte


def _with_trunk_init(params_text: str, value: str) -> str:
    lines = [ln for ln in params_text.splitlines() if not ln.startswith("  trunk_init:")]
    i = next(i for i, ln in enumerate(lines) if ln.startswith("  pretrained:"))   # model's (the first)
    return "\n".join(lines[:i + 1] + [f"  trunk_init: {value}"] + lines[i + 1:]) + "\n"


def test_trunk_init_file_is_a_dep_kept_in_step(tmp_path):
    """model.trunk_init (and training.distill_from) name train_frame's output: `check` fails until `write` makes it a dep of both
    video training stages (real DVC then orders train_frame first), `write` removes the dep again
    for `none`, and the training stage refuses to start on a dvc.yaml without it."""
    base = (ROOT / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(_with_trunk_init(base, "none"))
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(DVC_YAML.read_text())
    P.write(dvc_yaml)
    plain = dvc_yaml.read_text()
    assert "# model.trunk_init" not in plain and P.check(dvc_yaml) == []

    (tmp_path / "params.yaml").write_text(_with_trunk_init(base, "models/frame.pt"))
    problems = P.check(dvc_yaml)
    assert [p.split(":")[0] for p in problems] == ["train_phase_a", "train_phase_b"], problems
    assert all("model.trunk_init='models/frame.pt' is not a dep" in p for p in problems)
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "train.py"), "--phase", "a"], cwd=tmp_path,
                          capture_output=True, text=True, env=env(), timeout=300)
    assert proc.returncode != 0 and "train_phase_a: model.trunk_init='models/frame.pt' is not a dep" in proc.stderr
    assert P.write(dvc_yaml) == ["train_phase_a", "train_phase_b"]
    assert P.check(dvc_yaml) == []
    deps = P.read_dvc_deps(dvc_yaml)
    assert "models/frame.pt" in deps["train_phase_a"] and "models/frame.pt" in deps["train_phase_b"]
    assert "models/frame.pt" not in deps["train_frame"]
    git_init(tmp_path)
    run([sys.executable, "-m", "dvc", "init", "-q"], tmp_path)
    dag = run([sys.executable, "-m", "dvc", "dag", "--md", "train_phase_a"], tmp_path).stdout
    assert "train_frame" in dag and "train_phase_a" in dag       # train_frame is upstream of Phase A now

    both = _with_trunk_init(base, "models/frame.pt").replace("  distill_from: none", "  distill_from: models/frame.pt")
    (tmp_path / "params.yaml").write_text(both)              # both keys name the file: one dep line naming both
    assert P.check(dvc_yaml) == [] and P.write(dvc_yaml) == ["train_phase_a", "train_phase_b"]
    assert dvc_yaml.read_text().count("      - models/frame.pt  # model.trunk_init, training.distill_from") == 2
    assert P.read_dvc_deps(dvc_yaml)["train_phase_a"].count("models/frame.pt") == 1

    (tmp_path / "params.yaml").write_text(_with_trunk_init(base, "none"))
    assert [p.split(":")[0] for p in P.check(dvc_yaml)] == ["train_phase_a", "train_phase_b"]   # a needless rerun
    P.write(dvc_yaml)
    assert dvc_yaml.read_text() == plain

    teacher = base.replace("  distill_from: none", "  distill_from: models/frame.pt")   # the teacher alone
    (tmp_path / "params.yaml").write_text(_with_trunk_init(teacher, "none"))
    problems = P.check(dvc_yaml)
    assert all("training.distill_from='models/frame.pt' is not a dep" in p for p in problems) and len(problems) == 2
    P.write(dvc_yaml)
    assert P.check(dvc_yaml) == [] and "  # training.distill_from\n" in dvc_yaml.read_text()


def test_new_config_field_is_declared_and_check_fails(monkeypatch):
    """A new TrainingConfig field (a subclass here) is a param of the training stages by derivation,
    so the committed dvc.yaml no longer passes `check` until `write` adds it."""
    @dataclasses.dataclass(frozen=True)
    class Training2(C.TrainingConfig):
        new_knob: float = 0.5

    bases = [P._unchecked(b, training=Training2()) for b in P._bases()]
    monkeypatch.setitem(P.SECTIONS, "training", Training2)
    monkeypatch.setattr(P, "_bases", lambda: bases)
    declared = P.stage_params()
    for stage in ("train_phase_a", "train_phase_b", "train_frame"):
        assert "training.new_knob" in declared[stage]
    problems = P.check(DVC_YAML, declared)
    assert {p.split(":")[0] for p in problems} == {"train_phase_a", "train_phase_b", "train_frame"}
    assert all("reads training.new_knob but" in p for p in problems), problems


def test_declaration_checks_against_an_extra_key():
    declared = P.stage_params()
    declared["eval_cross"] = [*declared["eval_cross"], "training.seed"]
    assert P.check(DVC_YAML, declared) == [
        f"eval_cross: reads training.seed but {DVC_YAML} does not list it (a change would not rerun the stage); "
        "run `python -m stfmamba.pipeline write`"]


def test_what_each_phase_reads():
    e = expanded()
    a, b, fr = e["train_phase_a"], e["train_phase_b"], e["train_frame"]
    arch = {f"features.{k}" for k in C.FeatureFlags.ARCHITECTURE}
    assert not arch & a and arch <= b                          # Phase A: V7.3 architecture
    assert {"training.mask_loss_weight", "training.hll_loss_weight"} <= a & b
    assert not {"training.mask_loss_weight", "training.hll_loss_weight", "features.use_contrastive_hll"} & fr
    assert {"training.pretrained_lr_mult", "training.bn_policy"} <= a & b and "training.bn_policy" in fr
    assert "training.pretrained_lr_mult" not in fr              # the frame baseline fine-tunes every layer
    assert {"training.lr", "training.epochs_phase_a"} <= a and not {"training.lr_phase_b", "training.epochs_phase_b"} & a
    assert {"training.lr_phase_b", "training.epochs_phase_b"} <= b and not {"training.lr", "training.epochs_phase_a"} & b
    # the frame baseline: baseline.* instead of the keys frame_baseline() overrides
    assert {f"baseline.{k}" for k in ("arch", "pretrained", "img_size", "num_frames", "epochs", "lr", "batch_size",
                                      "clips_per_video")} <= fr
    assert not {"model.arch", "model.num_frames", "model.pretrained", "model.stem_dim", "training.batch_size",
                "training.lr", "training.epochs_phase_a", "training.clips_per_video", "baseline.eval_frames",
                "features.use_multiscale_drift"} & fr
    assert "model.img_size" in fr                               # used when baseline.img_size is 0
    for stage, keys in e.items():                               # nothing that cannot change a result
        assert not {k for k in keys if k.rsplit(".", 1)[1] in P.EXCLUDED}, stage
    assert "baseline.eval_frames" in e["eval_frame"] and "baseline.eval_frames" not in e["eval_phase_b"]
    assert P.stage_params()["weights"] == ["model.arch", "model.spatial_backbone", "model.pretrained",
                                           "baseline.arch", "baseline.pretrained"]
    assert P.stage_params()["train_phase_b"].count("model") == 1 and "features" in P.stage_params()["train_phase_b"]


def test_derivation_uses_the_trainers_own_lists():
    from stfmamba.evaluation import run as ev_run
    from stfmamba.models.checkpoint import INPUT_KEYS
    from stfmamba.training import state
    from stfmamba.training.trainer import PHASES

    assert {k: v.make_config for k, v in PHASES.items()} == P.PHASE_CONFIGS
    for phase in PHASES:
        assert P.ignored_keys(phase) == state.ignored_keys(phase)
    # the resume logic's run-only keys are the training keys the declaration excludes
    training = {f.name for f in dataclasses.fields(C.TrainingConfig)}
    assert set(state.RUN_ONLY_KEYS) == {f"training.{n}" for n in P.EXCLUDED if n in training}
    assert P._constant("stfmamba.models.checkpoint", "INPUT_KEYS") == INPUT_KEYS
    assert P._constant("stfmamba.evaluation.run", "CROP_KEYS") == ev_run.CROP_KEYS


# --------------------------------------------------------------------------- (b) real DVC
def _other(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float)):
        return v * 2 + 1
    if isinstance(v, str):
        return v + "_x"
    if isinstance(v, list):
        return [*v, "x"]
    if v is None:
        return "x"
    raise TypeError(v)


# keys train_phase_a must NOT rerun for: EXCLUDED (cannot change a result), Phase B's and the
# baseline's own keys, the architecture flags, evaluation settings
NOT_PHASE_A = ["training.num_workers", "training.checkpoint_every", "training.checkpoint_dir", "training.durable_copy",
               "training.lr_phase_b", "training.epochs_phase_b", "features.use_wss", "features.use_hydra",
               "baseline.lr", "eval.batch_size", "demo.seed"]

STATUS_LOOP = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from dvc.repo import Repo
    root, keys = Path(sys.argv[1]), json.loads(sys.argv[2])
    pfile = root / "params.yaml"
    original = pfile.read_text()
    import yaml
    out = {}
    for key, value in keys:
        doc = yaml.safe_load(original)
        sec, name = key.split(".", 1)
        doc[sec][name] = value
        pfile.write_text(yaml.safe_dump(doc, sort_keys=False))
        out[key] = Repo(str(root)).status(targets=["train_phase_a"])   # a fresh Repo: nothing cached
        pfile.write_text(original)
    print(json.dumps(out))
""")


@pytest.mark.timeout(300)
def test_every_result_changing_key_reruns_the_stage(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    git_init(proj)
    run(["dvc", "init", "-q"], proj)
    shutil.copy(ROOT / "params.yaml", proj / "params.yaml")
    params = P.stage_params()["train_phase_a"]          # what `write` puts in dvc.yaml
    stage = {"cmd": "python -c \"open('out.txt', 'w').write('trained')\"", "params": params, "outs": ["out.txt"]}
    (proj / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train_phase_a": stage}}, sort_keys=False))
    run(["dvc", "repro", "-q"], proj)
    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-qm", "repro"], proj)
    assert json.loads(run(["dvc", "status", "--json"], proj).stdout) == {}

    doc = yaml.safe_load((proj / "params.yaml").read_text())
    read = sorted(P._expand(params))
    assert {"training.mask_loss_weight", "training.pretrained_lr_mult", "training.bn_policy", "model.d_state",
            "features.use_tps", "budget.cost_per_hour"} <= set(read)
    assert not set(NOT_PHASE_A) & set(read)
    # every scalar key of params.yaml (not only the declared ones): DVC must rerun exactly for the declared
    every = [f"{sec}.{k}" for sec, body in doc.items() for k, v in body.items() if not isinstance(v, dict)]
    assert set(read) <= set(every)
    changes = [(k, _other(doc[k.split(".")[0]][k.split(".", 1)[1]])) for k in every]
    p = subprocess.run([sys.executable, "-c", STATUS_LOOP, ".", json.dumps(changes)], cwd=proj, env=env(),
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    status = json.loads(p.stdout.strip().splitlines()[-1])
    missed = [k for k in read if "train_phase_a" not in status[k]]
    assert not missed, f"changing these keys does not rerun train_phase_a: {missed}"
    rerun = [k for k in every if k not in read and status[k]]
    assert not rerun, f"changing these keys reruns train_phase_a: {rerun}"

    # and the user's own command line, for the key of the issue and an excluded one
    original = (proj / "params.yaml").read_text()
    for key, value, changed in (("training.mask_loss_weight", 1.0, True), ("training.num_workers", 0, False)):
        sec, name = key.split(".")
        d = yaml.safe_load(original)
        d[sec][name] = value
        (proj / "params.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
        out = json.loads(run(["dvc", "status", "--json"], proj).stdout)
        assert ("train_phase_a" in out) is changed, (key, out)
        (proj / "params.yaml").write_text(original)
