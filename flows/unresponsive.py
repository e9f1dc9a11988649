"""Unresponsive runs of the scheduled deployments: a worker (or its machine) killed mid-run leaves its flow run in
``Running`` on the server, holding the deployment's concurrency slot, so the next scheduled run waits. Prefect's
answer for a self-hosted server is heartbeats plus an automation (docs.prefect.io, "detect and respond to zombie
flows"): every flow run of our deployments sends a ``prefect.flow-run.heartbeat`` event every
:data:`HEARTBEAT_S` seconds, and an automation marks a run ``Crashed`` when ``crashed_after_s`` pass after a
heartbeat (or after it entered ``Running``) with neither another heartbeat nor a final state. Not covered: a run
whose worker died while it was still ``Pending`` (its process never started); its deployment slot comes back when
the lease expires (Prefect's ``initial_deployment_lease_duration``, 300 s by default). ``Crashed`` releases the concurrency slot; the next run
then resumes the build from the LLM call cache and the warehouse (:mod:`flows.resume`).

:func:`ensure_crash_detection` creates (or updates, when deployed again) one automation per work pool, scoped to
the deployments it is given; ``emoforge deploy`` calls it and passes :data:`HEARTBEAT_S` to the runs' environment.
"""

from __future__ import annotations

from datetime import timedelta

from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

HEARTBEAT_S = 30  # Prefect's minimum heartbeat interval
DEFAULT_CRASHED_AFTER_S = 90  # three missed heartbeats, as Prefect's recipe
FINAL_EVENTS = ("prefect.flow-run.Completed", "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed")


def automation_name(pool: str) -> str:
    return f"emoforge: crash unresponsive runs of work pool {pool}"


def heartbeat_env() -> dict[str, str]:
    """The environment that makes a flow run send heartbeats (the deployments' ``job_variables.env``)."""
    return {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}


def check_window(crashed_after_s: float) -> None:
    """ValueError unless ``crashed_after_s`` leaves room for a heartbeat (a live run must never look silent)."""
    if crashed_after_s <= HEARTBEAT_S:
        raise ValueError(f"{crashed_after_s:g}s without a heartbeat: the window must exceed the runs' heartbeat "
                         f"interval ({HEARTBEAT_S}s), or a live run would be marked crashed between two heartbeats")


def crash_automation(pool: str, deployment_ids: list[str], crashed_after_s: float) -> Automation:
    """The automation: a flow run of ``deployment_ids`` silent for ``crashed_after_s`` after a heartbeat -> Crashed."""
    check_window(crashed_after_s)
    return Automation(
        name=automation_name(pool),
        description=f"Marks a flow run of emoforge's deployments in work pool {pool!r} Crashed when it sends no "
                    f"heartbeat for {crashed_after_s:g}s (its worker or machine died); frees its concurrency slot.",
        trigger=EventTrigger(
            # a run's silence is timed from its last heartbeat, or from Running (a server-side event, so a run
            # killed before its first heartbeat left is caught too)
            after={"prefect.flow-run.heartbeat", "prefect.flow-run.Running"},
            expect={"prefect.flow-run.heartbeat", *FINAL_EVENTS},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification({
                "prefect.resource.role": "deployment",
                "prefect.resource.id": [f"prefect.deployment.{d}" for d in deployment_ids]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=crashed_after_s),
        ),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"no heartbeat for {crashed_after_s:g}s: the worker or its machine stopped (emoforge's "
                    "unresponsive-run automation); the next run resumes from the cache")],
    )


def ensure_crash_detection(pool: str, deployment_ids: list[str],
                           crashed_after_s: float = DEFAULT_CRASHED_AFTER_S) -> str:
    """Create the pool's automation, or update it (same name) when it exists; returns its id. Needs
    ``PREFECT_API_URL`` (or a Prefect settings context) pointing at the server."""
    wanted = crash_automation(pool, deployment_ids, crashed_after_s)
    try:
        existing = Automation.read(name=wanted.name)
    except ValueError:  # not found
        return str(wanted.create().id)
    wanted.id = existing.id
    wanted.update()
    return str(existing.id)


__all__ = ["DEFAULT_CRASHED_AFTER_S", "HEARTBEAT_S", "check_window", "crash_automation", "ensure_crash_detection", "heartbeat_env"]
