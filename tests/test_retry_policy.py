"""The lake tasks retry transient failures only (tasks/retry_policy.py)."""

from __future__ import annotations

import botocore.exceptions
import grpc
import psycopg
import pytest
from deltalake.exceptions import CommitFailedError
from prefect import flow, task
from pyspark.errors.exceptions.connect import AnalysisException, SparkConnectGrpcException

from lakehouse.backends.lake import LakeNotWritableError
from lakehouse.backends.protocol import ContractViolation
from lakehouse.tasks.gates import GateFailedError
from lakehouse.tasks.quarantine import AccountingError
from lakehouse.tasks.retry_policy import LAKE_RETRIES, is_transient


def _client_error(code: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": code}}, "PutObject")


@pytest.mark.parametrize("exc", [
    OSError("Generic S3 error: connection reset"), ConnectionResetError(), TimeoutError("read timed out"),
    CommitFailedError("a concurrent transaction wrote first"), psycopg.OperationalError("server closed the connection"),
    botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), _client_error("SlowDown"),
    SparkConnectGrpcException("failed to connect to all addresses", grpc_status_code=grpc.StatusCode.UNAVAILABLE),
    SparkConnectGrpcException('details = "internal error: task context not found for operation"',
                              grpc_status_code=grpc.StatusCode.INTERNAL),
], ids=repr)
def test_transient_failures_are_retried(exc):
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    FileNotFoundError("no landing folder"), PermissionError("read-only"), LakeNotWritableError("read-only lake"),
    ContractViolation("customer_id: not_nullable x3"), AccountingError("rows lost"), GateFailedError("gate"),
    ValueError("expected a date"), RuntimeError("a bug"), _client_error("AccessDenied"),
    # An analysis error names the column; a column called UNAVAILABLE does not make it transient.
    AnalysisException("attribute UNAVAILABLE is missing from the schema", grpc_status_code=grpc.StatusCode.INTERNAL),
    AnalysisException("task context not found for operation", grpc_status_code=grpc.StatusCode.INTERNAL),
    SparkConnectGrpcException("internal error: cannot resolve column", grpc_status_code=grpc.StatusCode.INTERNAL),
], ids=repr)
def test_failures_that_would_repeat_are_not_retried(exc):
    assert not is_transient(exc)


@pytest.mark.parametrize(("error", "calls"), [(OSError, 3), (ContractViolation, 1)])
def test_a_lake_task_is_tried_again_only_after_a_transient_failure(prefect_harness, error, calls):
    tries = []

    @task(**{**LAKE_RETRIES, "retry_delay_seconds": 0})
    def flaky() -> int:
        tries.append(1)
        raise error("failed")

    @flow
    def run() -> object:
        return flaky(return_state=True)

    state = run(return_state=True)
    assert state.is_failed()
    assert len(tries) == calls
