"""PBS: the batch scripts and the `ifcbflow cluster --cluster pbs` worker job carry the directives they promise.

No PBS server is needed (none runs in CI); the scripts' shell is checked by tests/test_deploy.py.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli.app import app

PBS_DIR = Path(__file__).resolve().parent.parent / "deploy" / "pbs"


def _directives(script: Path) -> list[str]:
    return [line for line in script.read_text().splitlines() if line.startswith("#PBS ")]


def test_classify_pbs_allocates_gpus_and_runs_one_worker_per_gpu() -> None:
    script = PBS_DIR / "classify.pbs"
    directives = _directives(script)
    select = next(d for d in directives if d.startswith("#PBS -l select="))
    assert "ngpus=" in select and "mpiprocs=1" in select
    assert any(d.startswith("#PBS -l walltime=") for d in directives)
    text = script.read_text()
    # One `ifcbflow worker` per node: one named, pinned worker per GPU (tests/test_deploy.py runs this command line).
    assert 'pbsdsh -n "$index" -- "$ifcbflow" worker --gpus "$gpus" --' in text
    assert '--scheduler-file "$SCHEDULER_FILE" "${protocol[@]}" "${network[@]}" "${tls[@]}"' in text
    assert "ifcbflow tls-certs" in text and "--tls-ca-file" in text, "workers started by pbsdsh need the certificates"
    assert 'ifcbflow classify "${classify_args[@]}" --cluster "$SCHEDULER_FILE" &' in text
    assert "--dashboard-address 127.0.0.1:0" in text


def test_train_pbs_is_rerunnable_and_resumes() -> None:
    script = PBS_DIR / "train.pbs"
    directives = _directives(script)
    assert "#PBS -r y" in directives
    assert any(d.startswith("#PBS -l select=") and "ngpus=" in d for d in directives)
    text = script.read_text()
    assert "timeout" in text and 'qrerun "$PBS_JOBID"' in text and "--replicas" in text


def test_cluster_command_prints_a_gpu_pbs_job(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "cluster",
            "--cluster",
            "pbs",
            "--queue",
            "gpuq",
            "--account",
            "plankton",
            "--walltime",
            "01:30:00",
            "--gpus-per-job",
            "2",
            "--cores",
            "2",
            "--memory",
            "32GiB",
            "--prologue",
            "module load cuda/12.4",
            "--tls-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for line in [
        "#PBS -q gpuq",
        "#PBS -A plankton",
        "#PBS -l walltime=01:30:00",
        "#PBS -l select=1:ncpus=2:ngpus=2:mem=32GB",
        "module load cuda/12.4",
    ]:
        assert line in lines, line
    worker = lines[-1]
    assert "--nworkers 2" in worker and "--resources GPU=1" in worker and "--preload pipeline.cluster.gpu_pin" in worker
    assert "--name" in worker, "dask appends -0, -1 to the name: what gpu_pin needs"
    assert "--protocol tls://" in worker and "--tls-key" in worker and "--no-dashboard" in worker


def test_cluster_command_rejects_an_unknown_batch_system() -> None:
    result = CliRunner().invoke(app, ["cluster", "--cluster", "lsf"])
    assert result.exit_code != 0 and "slurm, pbs" in result.output
