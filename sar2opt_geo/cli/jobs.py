"""``submit`` (run a job spec on one executor) and ``status`` (how far a job got)."""

from __future__ import annotations

import json
import shlex

import click

from sar2opt_geo.cli.base import Progress, cli, setup_logging
from sar2opt_geo.cli.options import overwrite_opt, quiet_opt, scheduler_opt, verbose_opt, workers_opt
from sar2opt_geo.errors import Interrupted, Sar2OptError


class JobFailed(Sar2OptError):
    """Some scenes of a job failed (the summary above lists them)."""


@cli.command()
@click.argument("job", type=click.Path(dir_okay=False))
@scheduler_opt
@workers_opt
@click.option(
    "--resume",
    is_flag=True,
    help="Skip scenes whose output was made with this job's model, options and input; redo other existing "
    "outputs; continue scenes this job left unfinished from their finished blocks.",
)
@overwrite_opt
@click.option("--dry-run", is_flag=True, help="Validate the spec and list the scenes; run nothing.")
@quiet_opt
@verbose_opt
def submit(job, scheduler, workers, resume, overwrite, dry_run, quiet, verbose):
    """Translate the scenes of the job spec JOB (YAML) one after another on one cluster."""
    from sar2opt_geo.distributed import make_executor
    from sar2opt_geo.jobs import load_job

    setup_logging(verbose, quiet)
    spec = load_job(job)
    scenes = spec.scenes()
    if dry_run:
        for sc in scenes:
            o = sc.options
            click.echo(
                f"{sc.index:>3}  {sc.key} -> {sc.output}  (tile {o.tile_size}/{o.overlap}, "
                f"chunk {o.chunk_size}, device {o.device}, model {o.model})"
            )
        return

    current = {}  # the scene being translated, for the message on Ctrl-C

    def progress_factory(sc):
        current["scene"] = sc
        return Progress(f"[{sc.index + 1}/{len(scenes)}] {sc.key}", quiet)

    def on_scene(res):
        current.pop("scene", None)
        if quiet:
            return
        if res.state == "done" and res.tiles is None:
            click.echo(f"skipped {res.scene.key}: {res.scene.output} already exists, {res.note}", err=True)
        elif res.state == "done":
            click.echo(
                f"done    {res.scene.key} -> {res.scene.output}: {res.evaluations} of {res.tiles} tiles "
                f"evaluated in {res.seconds:.1f} s" + (f" (redone: {res.note})" if res.note else ""),
                err=True,
            )
        else:
            click.echo(f"FAILED  {res.scene.key}: {res.error}", err=True)

    from sar2opt_geo.jobs import refuse_concurrent_submit, run_job

    refuse_concurrent_submit(spec)  # before a cluster is started for nothing

    try:
        with make_executor(workers, scheduler, verbose=bool(verbose)) as ex:
            results = run_job(
                spec,
                ex,
                resume=resume,
                overwrite=overwrite,
                on_scene=on_scene,
                progress_factory=progress_factory,
            )
    except KeyboardInterrupt:
        again = ["sar2opt-geo", "submit", job, "--resume"]
        again += ["--scheduler", scheduler] if scheduler else (["--workers", str(workers)] if workers else [])
        # the CLI's entry point prints an Interrupted's message as it is (exit code 130)
        raise Interrupted(_interrupted(current.get("scene"), shlex.join(again))) from None
    failed = [r for r in results if r.state == "failed"]
    click.echo(f"{len(results) - len(failed)} of {len(results)} scenes done; state in {spec.state_path}")
    if failed:
        for r in failed:
            click.echo(f"  failed: {r.scene.key}: {r.error}")
        raise JobFailed(f"{len(failed)} of {len(results)} scenes failed")


def _interrupted(scene, again: str) -> str:
    """What Ctrl-C kept, where, and the commands to continue or discard it."""
    from sar2opt_geo.workstate import WorkState

    if scene is None:
        return f"Interrupted; continue with `{again}`"
    work = WorkState(scene.output).root
    if work.exists():
        return (
            f"Interrupted during {scene.key}: its finished blocks are kept in {work}; continue with "
            f"`{again}` or discard them with `rm -r {shlex.quote(str(work))}`"
        )
    return f"Interrupted during {scene.key} (no finished block kept); continue with `{again}`"


@cli.command()
@click.argument("job", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(job, as_json):
    """Each scene's state and progress for the job spec JOB."""
    from sar2opt_geo.jobs import job_status, load_job

    spec = load_job(job)
    rows = job_status(spec)
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    width = max([len(r.key) for r in rows] + [5])
    click.echo(f"{'scene':<{width}}  {'state':<11}  progress")
    for r in rows:
        line = f"{r.key:<{width}}  {r.state:<11}  {r.progress()}"
        if r.error or r.note:
            line += f"  ({r.error or r.note})"
        click.echo(line)
    counts = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    click.echo(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
