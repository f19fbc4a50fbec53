"""The URL table of the taskq REST API: every resource module's handlers, each under its path.

The only module that imports the resource modules, and only the extension app imports it: a new endpoint is
a handler class in its resource module plus one line here.
"""

from __future__ import annotations

from .attempts import AttemptsHandler
from .bulk import CancelHandler, ResultsHandler, WaitHandler
from .display import DisplayHandler
from .files import BlobHandler, ExceptionHandler, OutputHandler, ResultHandler
from .groups import GroupHandler, GroupsHandler
from .queue import ChangesHandler, MetricsHandler, StatsHandler, WarmHandler
from .schedules import ScheduleHandler, ScheduleRunsHandler, SchedulesHandler
from .task import LogsHandler, RetryHandler, TaskHandler
from .tasks import BatchHandler, TasksHandler


def handlers(base_url: str) -> list[tuple]:
    api = base_url.rstrip("/") + "/taskq/api"
    task = r"(?P<task_id>[^/]+)"
    schedule = r"(?P<schedule_id>[^/]+)"
    return [
        (f"{api}/tasks", TasksHandler),
        (f"{api}/tasks/batch", BatchHandler),
        (f"{api}/blobs/(?P<key>[^/]+)", BlobHandler),
        (f"{api}/tasks/cancel", CancelHandler),
        (f"{api}/tasks/wait", WaitHandler),
        (f"{api}/tasks/results", ResultsHandler),
        (f"{api}/tasks/{task}", TaskHandler),
        (f"{api}/tasks/{task}/retry", RetryHandler),
        (f"{api}/tasks/{task}/result", ResultHandler),
        (f"{api}/tasks/{task}/exception", ExceptionHandler),
        (f"{api}/tasks/{task}/logs", LogsHandler),
        (f"{api}/tasks/{task}/outputs/(?P<name>[^/]+)", OutputHandler, {"path": "/nonexistent"}),
        (f"{api}/stats", StatsHandler),
        (f"{api}/metrics", MetricsHandler),
        (f"{api}/warm", WarmHandler),
        (f"{api}/changes", ChangesHandler),
        (f"{api}/groups", GroupsHandler),
        (f"{api}/groups/(?P<group_id>[^/]+)", GroupHandler),
        (f"{api}/schedules", SchedulesHandler),
        (f"{api}/schedules/{schedule}", ScheduleHandler),
        (f"{api}/schedules/{schedule}/runs", ScheduleRunsHandler),
        (f"{api}/tasks/{task}/attempts", AttemptsHandler),
        (f"{api}/tasks/{task}/display", DisplayHandler),
    ]
