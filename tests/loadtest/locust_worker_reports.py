"""A Locust plug-in file for ``test_locust_distributed``: on the master, it counts the requests
and failures each worker reported (Locust's ``worker_report`` event, one per stats message) and
writes them as JSON to ``NAUTILUS_TEST_WORKER_REPORTS`` when the master quits. Defines no users.

Loaded beside the real locustfile: ``locust -f loadtest/locustfile.py,<this file> ...``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import MasterRunner

_requests: dict[str, int] = defaultdict(int)
_failures: dict[str, int] = defaultdict(int)
_reports: dict[str, int] = defaultdict(int)


@events.worker_report.add_listener
def _on_worker_report(client_id: str, data: dict[str, Any]) -> None:
    _reports[client_id] += 1
    for entry in data.get("stats", []):
        _requests[client_id] += int(entry.get("num_requests", 0))
        _failures[client_id] += int(entry.get("num_failures", 0))


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_kwargs: Any) -> None:
    path = os.environ.get("NAUTILUS_TEST_WORKER_REPORTS")
    if path and isinstance(environment.runner, MasterRunner):
        workers = {
            client_id: {
                "reports": _reports[client_id],
                "requests": _requests[client_id],
                "failures": _failures[client_id],
            }
            for client_id in _reports
        }
        with open(path, "w") as out:
            json.dump(workers, out)
