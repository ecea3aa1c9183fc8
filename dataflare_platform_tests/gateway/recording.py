"""A run coordinator that notes, for each submitted run, which principal the webserver
process saw in ``CURRENT_PRINCIPAL`` (what the platform's run coordinator relies on), then
queues the run like Dagster's own."""

from dagster._core.run_coordinator import QueuedRunCoordinator

from dataflare_platform.access.principal import CURRENT_PRINCIPAL

SEEN: list[tuple[str, str | None]] = []
HEADERS: list[tuple[str, str | None]] = []


class PrincipalRecordingCoordinator(QueuedRunCoordinator):
    def submit_run(self, context):
        principal = CURRENT_PRINCIPAL.get()
        SEEN.append((context.dagster_run.run_id, principal.id if principal else None))
        HEADERS.append(
            (context.dagster_run.run_id, context.get_request_header("x-dataflare-principal"))
        )
        return super().submit_run(context)
