"""Where the Spark engine's session comes from: Spark Connect, a classic SparkSession, or embedded Sail.

- ``remote`` (``sc://host:port``): a Spark Connect server (Sail, or Spark's own).
- ``master`` (``yarn``, ``local[2]`` on a laptop with Java 17, or ``spark-submit`` for the master spark-submit
  chose, as on EMR Serverless): a classic SparkSession; Delta must be configured by the cluster (EMR ships
  delta-spark), or set ``spark.conf`` with the Delta extension and catalog.
- neither: an embedded Sail Spark Connect server started in this process on loopback (no JVM).

One session per process and target; pyspark is imported only here and in the engine.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import threading
from typing import TYPE_CHECKING, Any, Literal

from lakehouse.backends.protocol import EngineError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakehouse.deployments.settings import SparkSettings

# Spark computes timestamps in the session time zone; the lake's timestamps are UTC. PySpark 4 records the Python
# call site of every DataFrame and column call for its error messages' query context: on a classic session
# (EMR's) that is several py4j calls per call, and building silver.orders' conform plan took 9,721 py4j calls
# with it and 4,651 without (docs/performance.md). A classic session's ``spark.conf`` can turn it back on.
SESSION_CONF = {"spark.sql.session.timeZone": "UTC", "spark.sql.ansi.enabled": "true",
                "spark.python.sql.dataFrameDebugging.enabled": "false"}
# ``master`` value meaning: the session spark-submit configured (EMR Serverless sets the master itself).
SUBMITTED_MASTER = "spark-submit"

#: Sail settings of the embedded server, unless the environment sets them (``SAIL_<SECTION>__<KEY>``, Sail's
#: configuration reference). Rows per Arrow batch between Sail's operators: 8,192 by default; with 32,768 a
#: scale-10 day on the embedded server took 37.1 s against 40.0 s (medians of 5 alternating one-pass runs, each
#: stage faster; 65,536: 38.5 s over 3). It is not passed to a server the user runs (``--spark-remote``).
EMBEDDED_SAIL_ENV = {"SAIL_EXECUTION__BATCH_SIZE": "32768"}

_lock = threading.Lock()
_sessions: dict[tuple[str, str], Any] = {}
_embedded: Any = None


def session_for(settings: SparkSettings) -> tuple[SparkSession, Literal["classic", "connect", "sail"]]:
    """The session for ``settings`` and its kind: ``connect``, ``classic`` or ``sail`` (embedded)."""
    _require_pyspark()
    with _lock:
        if settings.remote:
            key = ("connect", settings.remote)
        elif settings.master:
            key = ("classic", settings.master)
        else:
            key = ("sail", "")
        if key not in _sessions:
            _sessions[key] = _start(key, settings)
        return _sessions[key], key[0]


def _start(key: tuple[str, str], settings: SparkSettings) -> SparkSession:
    kind, target = key
    if kind == "classic":
        return _classic(target, settings.conf)
    url = target if kind == "connect" else embedded_sail_url()
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    try:
        spark = ConnectSession.builder.remote(url).create()
        for k, v in SESSION_CONF.items():
            spark.conf.set(k, v)
    except Exception as exc:
        msg = f"expected a Spark Connect server at {url}, could not use it: {str(exc).splitlines()[0]}"
        raise EngineError(msg) from exc
    return spark


def _classic(master: str, conf: dict[str, str]) -> SparkSession:
    from pyspark.sql.session import SparkSession as ClassicSession

    java = os.environ.get("JAVA_HOME") or shutil.which("java")
    if not java:
        msg = (f"expected Java 17 for a classic Spark session (master {master!r}), found no java; "
               "use --spark-remote sc://host:port or leave both unset for the embedded Sail server")
        raise EngineError(msg)
    builder = ClassicSession.builder.appName("lakehouse")
    local = {}
    if master != SUBMITTED_MASTER:
        builder = builder.master(master)
        local = {"spark.ui.enabled": "false"}
    if master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        # Local Python workers run this interpreter (where the project is installed), not the first python3
        # on PATH: the landing read's tasks import the project (on a cluster, the job ships it: docs/emr.md).
        # PySpark reads the variable when the context starts.
        os.environ["PYSPARK_PYTHON"] = sys.executable
    for k, v in {**SESSION_CONF, **local, **conf}.items():
        builder = builder.config(k, v)
    return builder.getOrCreate()


def embedded_sail_url() -> str:
    """Start (once per process) a Sail Spark Connect server on loopback and return its URL."""
    global _embedded
    if _embedded is None:
        try:
            from pysail.spark import SparkConnectServer
        except ImportError as exc:
            msg = ("expected pysail for the embedded Spark engine (pip install '.[spark]'), it is not installed; "
                   "or pass --spark-remote sc://host:port")
            raise EngineError(msg) from exc
        for key, value in EMBEDDED_SAIL_ENV.items():  # read by the server as it starts
            os.environ.setdefault(key, value)
        server = SparkConnectServer(ip="127.0.0.1", port=0)
        server.start(background=True)
        _embedded = server
        atexit.register(stop_sessions)
    host, port = _embedded.listening_address
    return f"sc://{host}:{port}"


def stop_sessions() -> None:
    """Stop every session this process opened (before the servers they talk to go away)."""
    with _lock:
        for spark in _sessions.values():
            try:
                spark.stop()
            except Exception:  # noqa: BLE001, S110 - stopping is best effort
                pass
        _sessions.clear()


def _require_pyspark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        msg = "expected pyspark for --backend spark (pip install '.[spark]'); the laptop engine is --backend polars"
        raise EngineError(msg) from exc
