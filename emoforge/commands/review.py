"""Human review in Label Studio: `emoforge labelstudio start|stop|status|invite`, `emoforge review push|pull|status`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import httpx
import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from annotation.client import connect, server_url
from annotation.merge import merge_changes
from annotation.pull import open_problems, pull
from annotation.push import PushError, ReviewPolicy, push, select_for_review
from annotation.server import LabelStudioError, api_token, start, status, stop
from emoforge.commands._common import HomeOpt, console, fail, open_home
from flows.review_flow import review_poll_flow
from schemas.config import ConfigError, load_config
from schemas.taxonomy import TaxonomyError, load_taxonomy
from warehouse.agreement import agreement_summary
from warehouse.home_meta import resolve_config

UrlOpt = Annotated[Optional[str], typer.Option("--url", help="Label Studio URL (default: the server started for --home, or $EMOFORGE_LS_URL)")]
ProjectOpt = Annotated[Optional[str], typer.Option("--project", help="Label Studio project title [review.project]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _fail(message: str, as_json: bool, code: int = 2) -> "typer.Exit":
    """An error: ``{"error": ...}`` on stdout with ``--json`` (so a script always reads JSON), else the usual line."""
    if as_json:
        typer.echo(json.dumps({"error": message}))
        raise typer.Exit(code)
    return fail(message, code)


ls = typer.Typer(help="Run the Label Studio server used for human review (loopback only).", no_args_is_help=True)
review = typer.Typer(help="Send dialogues to human review and bring the decisions back.", no_args_is_help=True)


@ls.command("start")
def ls_start(
    home: HomeOpt = None,
    port: Annotated[Optional[int], typer.Option("--port", help="port on 127.0.0.1 (default $EMOFORGE_LS_PORT or 8081; 0 = any free)")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait for /health")] = 300.0,
) -> None:
    """Start Label Studio (credentials and token from EMOFORGE_LS_USERNAME/PASSWORD/TOKEN)."""
    path = open_home(home)
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                      transient=True) as prog:
            task = prog.add_task("starting Label Studio (first start migrates its database: about a minute)")
            info = start(path, port=port, timeout=timeout, progress=lambda s: prog.update(task))
    except LabelStudioError as exc:
        fail(str(exc))
    verb = "started" if info.get("started") else "already running"
    console.print(f"Label Studio {verb} at {info['url']} (pid {info['pid']}, data {info['data_dir']})")
    typer.echo(info["url"])

@ls.command("stop")
def ls_stop(home: HomeOpt = None) -> None:
    """Stop the Label Studio server of this home."""
    path = open_home(home)
    console.print("stopped" if stop(path) else "no Label Studio server was running for this home")

@ls.command("status")
def ls_status(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Is Label Studio running for this home, and healthy?"""
    path = open_home(home)
    st = status(path)
    if as_json:
        typer.echo(json.dumps(st, indent=1))
    elif st["running"]:
        console.print(f"running at {st['url']} (pid {st['pid']}), healthy: {st['healthy']}")
    else:
        console.print("not running")
    if not st["running"]:
        raise typer.Exit(1)

@ls.command("invite")
def ls_invite(home: HomeOpt = None, url: UrlOpt = None) -> None:
    """Print the invite link annotators sign up with (open sign-up is off)."""
    path = open_home(home)
    try:
        base = server_url(path, url)
        r = httpx.get(base + "/api/invite", headers={"Authorization": f"Token {api_token()}"}, timeout=30)
        r.raise_for_status()
    except (LabelStudioError, httpx.HTTPError) as exc:
        fail(f"cannot get the invite link: {exc}")
    typer.echo(base + r.json()["invite_url"])

@review.command("push")
def review_push(
    home: HomeOpt = None,
    url: UrlOpt = None,
    project: ProjectOpt = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="run configuration (YAML): taxonomy and the review: section")] = None,
    taxonomy: Annotated[Optional[str], typer.Option("--taxonomy", help="preset or taxonomy file")] = None,
    overlap: Annotated[Optional[int], typer.Option("--overlap", help="annotators per task [review.overlap]")] = None,
    audit_accepted: Annotated[Optional[float], typer.Option("--audit-accepted", help="audit rate of judge-accepted dialogues [review.audit_accepted]")] = None,
    audit_rejected: Annotated[Optional[float], typer.Option("--audit-rejected", help="audit rate of judge-rejected dialogues [review.audit_rejected]")] = None,
    no_uncertain: Annotated[bool, typer.Option("--no-uncertain", help="do not push the judges' uncertain band")] = False,
    no_disagreement: Annotated[bool, typer.Option("--no-disagreement", help="do not push judge disagreements")] = False,
    score_spread: Annotated[Optional[int], typer.Option("--score-spread", help="rubric score difference that counts as disagreement [review.score_spread]")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="audit sample seed [review.seed]")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="push at most this many dialogues [review.limit]")] = None,
    dialogue: Annotated[Optional[list[str]], typer.Option("--dialogue", help="push these dialogue ids (repeatable) instead of selecting")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only show what would be pushed")] = False,
    prefill_verdict: Annotated[Optional[bool], typer.Option("--prefill-verdict/--no-prefill-verdict", help="pre-select the llm judge's verdict and rating in the form [review.prefill_verdict; default: shown as information only]")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create/update the review project and push the dialogues that need human eyes (idempotent).

    Every setting defaults to the ``review:`` section of --config; a flag given on the command line wins."""
    path = open_home(home)
    try:
        # the home's taxonomy: a conflicting --taxonomy is refused, naming both
        cfg = resolve_config(path, load_config(config, taxonomy=taxonomy), origin="review push")
        rc = cfg.review.model_copy(update={k: v for k, v in dict(
            project=project, overlap=overlap, audit_accepted=audit_accepted, audit_rejected=audit_rejected,
            score_spread=score_spread, seed=seed, limit=limit, prefill_verdict=prefill_verdict).items()
            if v is not None})
        policy = ReviewPolicy(uncertain=rc.uncertain and not no_uncertain,
                              disagreement=rc.disagreement and not no_disagreement, score_spread=rc.score_spread,
                              audit_accepted=rc.audit_accepted, audit_rejected=rc.audit_rejected, seed=rc.seed,
                              limit=rc.limit)
        if dry_run:
            chosen = select_for_review(path, policy)
            out = {"selected": len(chosen), "by_reason": {}}
            for _, r in chosen:
                out["by_reason"][r] = out["by_reason"].get(r, 0) + 1
            if as_json:
                typer.echo(json.dumps(out))
            else:
                console.print(f"would push {out['selected']} dialogue(s): "
                              + (", ".join(f"{n} {r}" for r, n in out["by_reason"].items()) or "none"))
            return
        emotions = load_taxonomy(cfg.taxonomy).emotion_names
        client = connect(path, url)
        with Progress(console=console, transient=True) as prog:
            t = prog.add_task("importing tasks", total=None)
            rep = push(path, client, policy=policy, title=rc.project, emotions=emotions, overlap=rc.overlap,
                       dialogue_ids=list(dialogue) if dialogue else None, prefill_verdict=rc.prefill_verdict,
                       progress=lambda done, total: prog.update(t, completed=done, total=total))
    except (PushError, LabelStudioError, ConfigError, TaxonomyError) as exc:
        _fail(str(exc), as_json)
    out = rep.as_dict()
    if as_json:
        typer.echo(json.dumps(out))
        return
    console.print(f"project {out['project']!r} (id {out['project_id']}): {out['created']} task(s) created, "
                  f"{out['already_there']} already there; selected {out['selected']}")
    if rep.stale:
        console.print(f"[yellow]{len(rep.stale)} dialogue(s) changed since they were pushed (their tasks show the old text): "
                      f"{', '.join(rep.stale[:5])}[/]")

@review.command("pull")
def review_pull(
    home: HomeOpt = None,
    url: UrlOpt = None,
    project: ProjectOpt = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="run configuration (YAML): its review: section")] = None,
    as_json: JsonOpt = False,
    strict: Annotated[bool, typer.Option("--strict", help="exit 1 when any annotation has a problem")] = False,
    watch: Annotated[Optional[float], typer.Option("--watch", help="keep polling (Prefect flow) for this many minutes, until every task has its annotations")] = None,
    interval: Annotated[Optional[float], typer.Option("--interval", help="seconds between polls with --watch [review.poll_interval_s]")] = None,
) -> None:
    """Fetch, validate and store the annotations (idempotent); report each problem per task."""
    path = open_home(home)
    try:
        rc = load_config(config).review
    except ConfigError as exc:
        fail(str(exc))
    project = project or rc.project
    interval = interval if interval is not None else rc.poll_interval_s
    if watch is not None:
        try:
            reports = review_poll_flow(str(path), watch, interval, url, project)
        except (PushError, LabelStudioError) as exc:
            _fail(str(exc), as_json)
        last = reports[-1] if reports else {}
        if as_json:
            typer.echo(json.dumps({"polls": len(reports), **last}))
        else:
            console.print(f"{len(reports)} poll(s); last: " + ", ".join(f"{k} {v}" for k, v in last.items()))
        return
    try:
        rep = pull(path, connect(path, url), title=project)
    except (PushError, LabelStudioError) as exc:
        _fail(str(exc), as_json)
    out = rep.as_dict()
    if as_json:
        typer.echo(json.dumps(out | {"problem_list": [str(p) for p in rep.problems]}))
    else:
        console.print(f"{out['annotations']} annotation(s) on {out['tasks']} task(s): {out['new']} new, "
                      f"{out['updated']} updated, {out['unchanged']} unchanged, {out['withdrawn']} withdrawn, "
                      f"{out['skipped']} skipped, {out['not_stored']} not stored")
        for p in rep.problems:
            console.print(f"[yellow]problem[/] {p}", highlight=False)
    if strict and rep.problems:
        raise typer.Exit(1)

@review.command("status")
def review_status(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """What the reviews change (status overrides, corrected labels), open problems and agreement."""
    path = open_home(home)
    changes = merge_changes(path, limit=20)
    problems = open_problems(path)
    agree = agreement_summary(path)
    if as_json:
        typer.echo(json.dumps({"merge": changes, "open_problems": len(problems), "agreement": agree}, default=str))
        return
    console.print(f"human decisions: {changes['decided_by_human']} dialogue(s); labels corrected: "
                  f"{changes['labels_from_human']} turn(s); effective status counts: {changes['status_counts']}")
    for c in changes["status_changes"][:10]:
        console.print(f"  {c['dialogue_id']}: {c['judge_status']} -> {c['status']} ({c['reason']})")
    for c in changes["label_changes"][:10]:
        console.print(f"  {c['dialogue_id']} turn {c['idx'] + 1}: {c['old_label']} -> {c['label']} (intended {c['intended_emotion']})")
    console.print(f"open annotation problems: {len(problems)}")
    for p in problems[:10]:
        console.print(f"  task {p['task_id']} annotation {p['annotation_id']}: {'; '.join(p['problems'])}", highlight=False)
    va, ta = agree["verdict_agreement"], agree["turn_label_agreement"]
    console.print(f"agreement: verdict Fleiss kappa {va['fleiss_kappa']} over {va['items_multi_rated']} item(s); "
                  f"turn labels Fleiss kappa {ta['fleiss_kappa']} over {ta['items_multi_rated']} item(s)")


def register(app: typer.Typer) -> None:
    app.add_typer(ls, name="labelstudio")
    app.add_typer(review, name="review")
