"""Local, real Apache Kafka broker tooling (jars from Maven Central, KRaft single node).

See :mod:`tools.localkafka.broker` and ``python -m tools.localkafka --help``.
"""

from .broker import (
    KAFKA_VERSION,
    PERF_TOOLS,
    POM_PATH,
    KafkaStartError,
    LocalKafka,
    cache_dir,
    classpath,
    ensure_jars,
    java_executable,
    perf_tool_cmd,
)

__all__ = [
    "KAFKA_VERSION",
    "PERF_TOOLS",
    "POM_PATH",
    "KafkaStartError",
    "LocalKafka",
    "cache_dir",
    "classpath",
    "ensure_jars",
    "java_executable",
    "perf_tool_cmd",
]
