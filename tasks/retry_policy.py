"""Which task failures Prefect retries: the transient ones (network, timeouts, an unavailable or busy service,
a concurrent Delta commit), never a failure that would fail again the same way (a contract violation, a gate,
bad settings, SQL, a bug).

A retry of a deterministic failure only delays the error the user has to read, by the whole backoff (2 s and
4 s for the lake tasks, 2, 10 and 30 s for the Snowflake publish). Exception classes of optional libraries
are looked up in ``sys.modules``: an exception of a library that was never imported cannot be raised.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect.tasks import exponential_backoff

from lakehouse.backends.lake import LakeNotWritableError

# OSErrors that say something about the path or the machine, not about the moment: a retry fails the same way.
_PERMANENT_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError,
                        LakeNotWritableError)
# (module, class names) of optional libraries whose errors are transient.
_TRANSIENT_CLASSES = (
    ("deltalake.exceptions", ("CommitFailedError",)),  # another writer committed first; the retry re-reads
    ("snowflake.connector.errors", ("OperationalError", "InterfaceError", "ServiceUnavailableError",
                                    "GatewayTimeoutError", "RequestTimeoutError", "BadGatewayError",
                                    "OtherHTTPRetryableError")),
    ("psycopg", ("OperationalError",)),
    ("botocore.exceptions", ("ConnectionError", "HTTPClientError")),
)
_TRANSIENT_AWS_CODES = frozenset({"Throttling", "ThrottlingException", "SlowDown", "RequestTimeout",
                                  "ServiceUnavailable", "InternalError", "RequestLimitExceeded"})
_TRANSIENT_GRPC = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")  # a Spark Connect server's answers
# Sail's INTERNAL answers that name its own scheduler, not the plan: seen once when a bronze append ran on a
# 2-core machine with three test processes beside it ("internal error: task context not found for operation").
_TRANSIENT_SAIL_INTERNAL = ("task context not found",)


def is_transient(exc: BaseException) -> bool:
    """Whether a retry of the failed task may succeed."""
    if isinstance(exc, OSError):  # also ConnectionError, TimeoutError and delta-rs' object store errors
        return not isinstance(exc, _PERMANENT_OS_ERRORS)
    for module_name, names in _TRANSIENT_CLASSES:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, tuple(getattr(module, n) for n in names if hasattr(module, n))):
            return True
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None and isinstance(exc, botocore.ClientError):
        return exc.response.get("Error", {}).get("Code") in _TRANSIENT_AWS_CODES
    connect = sys.modules.get("pyspark.errors.exceptions.connect")
    if connect is not None and isinstance(exc, connect.SparkConnectGrpcException):
        code = exc.getGrpcStatusCode().name
        if code == "INTERNAL" and type(exc) is connect.SparkConnectGrpcException:  # not an analysis error
            return any(text in str(exc) for text in _TRANSIENT_SAIL_INTERNAL)
        return code in _TRANSIENT_GRPC  # not INTERNAL (an analysis error), not UNKNOWN
    return False


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's ``retry_condition_fn``: retry the failed task only if its exception is transient."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the failed task's own exception, judged here
        return is_transient(exc)
    return False


#: The extract tasks' retries: twice, after about 2 and 4 s, whatever the failure: a source system can stay down
#: after its connector's own retries (backends/sources), and a retry may find it back.
SOURCE_RETRIES: dict[str, Any] = {"retries": 2, "retry_delay_seconds": exponential_backoff(backoff_factor=2),
                                  "retry_jitter_factor": 0.5}
#: The lake tasks' retries (bronze, silver, gold): the same, for transient failures only.
LAKE_RETRIES: dict[str, Any] = {**SOURCE_RETRIES, "retry_condition_fn": retry_if_transient}
