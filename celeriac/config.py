"""Every setting celeriac knows, and ``Settings``, the mapping behind ``app.conf``.

The table below is the one place that names a setting, its default, the type it
expects, the old UPPERCASE name(s) Celery 3 used for it, and whether celeriac
honours it. ``Settings`` reads and writes through it: old names are translated to
the new lowercase key, and a name the table does not know is kept but reported
once with ``UnknownSettingWarning`` (an upper-case one only when it looks like a
task-queue setting, so that a web framework's own settings pass quietly).

A setting celeriac does not honour says why in ``Setting.ignored``; giving it a
value other than its default (by any path: attribute, item, ``update``,
``config_from_object``, old names, a namespace) warns once per process with
``IgnoredSettingWarning``, naming the setting and giving the reason. A setting is
honoured only when celeriac reads it and does what Celery does with it;
``tests/unit/test_settings_coverage.py`` holds every honoured one to a test.

Importing this module reads no environment variable and imports no user module:
``Settings.resolved_broker_url`` and friends read the environment when called,
and ``config_from_object`` imports when called.

Example::

    conf = Settings()
    conf.config_from_object("celeryconfig")      # a module with broker_url = ...
    conf["CELERY_TASK_SERIALIZER"] = "json"       # old names still work
    conf.task_serializer                          # -> 'json'
    conf.resolved_broker_url()                    # CELERIAC_BROKER_URL wins if set
"""

from __future__ import annotations

import copy
import difflib
import importlib
import math
import os
import re
import sys
import types
import warnings
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

__all__ = [
    "Setting", "SETTINGS", "OLD_NAMES", "canonical_name",
    "Settings", "UnknownSettingWarning", "IgnoredSettingWarning", "seconds",
]


class UnknownSettingWarning(UserWarning):
    """A setting name that celeriac does not know was stored in ``app.conf``."""


class IgnoredSettingWarning(UserWarning):
    """A setting celeriac does not honour was given a value other than its default.

    Issued once per setting name per process; the message names the setting and
    says why it has no effect here.
    """


@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration setting.

    Attributes:
        name: The lowercase name (the key in ``SETTINGS`` and ``app.conf``).
        default: The value used when the user sets nothing. ``None`` may also
            mean "worked out when used" (for example ``worker_concurrency``).
        type: The type (or tuple of types) a value should have; ``None`` is
            always accepted where the default is ``None``. Floats accept ints.
            Informational: values are not checked or converted.
        old: Old UPPERCASE names that mean the same setting.
        doc: One line saying what the setting does.
        ignored: Empty when celeriac honours the setting; otherwise why setting
            it has no effect here (setting it warns with this reason).
        harmless: Values of an ignored setting that ask for what celeriac does
            anyway (``broker_connection_retry_on_startup=True``); they do not warn.
    """

    name: str
    default: Any
    type: type | tuple[type, ...]
    old: tuple[str, ...] = ()
    doc: str = ""
    ignored: str = ""
    harmless: tuple[Any, ...] = ()

    @property
    def honoured(self) -> bool:
        """Whether celeriac does what Celery does with this setting."""
        return not self.ignored


_S = Setting
_SEQ = (list, tuple, set)
_NUM = (int, float)
_LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
_TASK_LOG_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"
)


# Why a setting has no effect, for the families of settings that share a reason.
_AMQP_QOS = ("no effect: celeriac's RabbitMQ consumers set their QoS per consumer, which quorum "
             "queues accept, so there is nothing to detect")
_EVENTS = ("no effect: celeriac events runs in the foreground only (no --detach, --pidfile "
           "or -f); run it under a process supervisor")
_EVENT_QUEUES = ("no effect: on Redis events travel by pub/sub (SQLite: a table kept a minute), "
                 "which has no per-monitor queue; on RabbitMQ monitor queues are exclusive "
                 "and transient, as Celery 5.7 declares them")
_CONTROL = "beat does not answer remote control; only workers do"
_CONTROL_QUEUES = ("no effect: control queues are exclusive and transient on RabbitMQ, as Celery "
                   "5.7 declares them; Redis and SQLite have none")
_SIGNING = "celeriac cannot sign messages yet (there is no 'auth' serializer)"
_NO_EXEC = ("no effect: a detached celeriac program goes on in the Python that started it "
            "(it forks, it does not run a new interpreter)")


def _no_backend(kind: str) -> str:
    return f"celeriac has no {kind} result backend"


def _daemon_options(prefix: str, program: str, logfile: str, others: str,
                    executable: str) -> tuple[Setting, ...]:
    """The six settings Celery 5.4 added for detaching a program (logfile, pidfile...):
    the defaults of the program's -f, --pidfile, --uid, --gid and --umask."""
    return (
        _S(f"{prefix}_logfile", None, str, (), f"File {program} logs to; None means stderr.",
           ignored=logfile),
        _S(f"{prefix}_pidfile", None, str, (), f"File {program} writes its pid to; None: none.",
           ignored=others),
        _S(f"{prefix}_uid", None, (int, str), (), f"User {program} switches to when detached.",
           ignored=others),
        _S(f"{prefix}_gid", None, (int, str), (), f"Group {program} switches to when detached.",
           ignored=others),
        _S(f"{prefix}_umask", None, (int, str), (), f"umask {program} uses for files it creates.",
           ignored=others),
        _S(f"{prefix}_executable", None, str, (), f"Python {program} runs when detached.",
           ignored=executable),
    )


_TABLE: tuple[Setting, ...] = (
    # General: content types, time zone, modules to import.
    _S("accept_content", ["json"], _SEQ, ("CELERY_ACCEPT_CONTENT",),
       "Serializers (names or MIME types) a worker decodes; others are rejected."),
    _S("result_accept_content", None, _SEQ, (),
       "Serializers accepted when reading results; None means accept_content.",
       ignored="no effect: results are read with result_serializer, which celeriac always accepts"
               " (a stored result carries no content type to check)", harmless=(["json"],)),
    _S("enable_utc", True, bool, ("CELERY_ENABLE_UTC",),
       "Dates in messages are UTC; when False the local zone is used."),
    _S("timezone", None, str, ("CELERY_TIMEZONE",),
       "Time zone name for schedules and local times; None means UTC."),
    _S("imports", (), (tuple, list), ("CELERY_IMPORTS",),
       "Modules a worker imports at start (task modules, signal handlers)."),
    _S("include", (), (tuple, list), ("CELERY_INCLUDE",),
       "Like imports, imported after them."),

    # Beat: the periodic task scheduler.
    _S("beat_schedule", {}, dict, ("CELERYBEAT_SCHEDULE",),
       "Periodic tasks: name -> {'task', 'schedule', 'args', 'kwargs', 'options'}."),
    _S("beat_scheduler", None, (str, type), ("CELERYBEAT_SCHEDULER",),
       "Scheduler class or 'module:Class'; None means the built-in persistent one "
       "(Celery: 'celery.beat:PersistentScheduler')."),
    _S("beat_schedule_filename", "celerybeat-schedule", str, ("CELERYBEAT_SCHEDULE_FILENAME",),
       "File where the persistent scheduler keeps last run times."),
    _S("beat_sync_every", 0, int, ("CELERYBEAT_SYNC_EVERY",),
       "Save the schedule after this many sent tasks; 0 means on a timer.",
       ignored="no effect: beat writes its state file after every task it sends, never in "
               "batches", harmless=(1,)),
    _S("beat_max_loop_interval", 0, float, ("CELERYBEAT_MAX_LOOP_INTERVAL",),
       "Longest sleep between schedule checks in seconds; 0: the scheduler's own."),
    _S("beat_cron_starting_deadline", None, int, ("CELERYBEAT_CRON_STARTING_DEADLINE",),
       "How far back (seconds) a missed crontab run still fires; None: always."),
    _S("beat_enable_remote_control", False, bool, ("CELERYBEAT_ENABLE_REMOTE_CONTROL",),
       "Beat answers remote control commands.", ignored=_CONTROL),
    _S("beat_remote_control_max_tick_age", None, float,
       ("CELERYBEAT_REMOTE_CONTROL_MAX_TICK_AGE",),
       "Beat reports itself unhealthy when its last tick is older than this.", ignored=_CONTROL),
    *_daemon_options("beat", "beat", "", "", _NO_EXEC),

    # Broker: where task messages go.
    _S("broker_url", None, (str, list), ("BROKER_URL",),
       "Broker URL, or a list of failover URLs; None means the embedded SQLite file."),
    _S("broker_read_url", None, (str, list), ("BROKER_READ_URL",),
       "Broker URL for consuming; None means broker_url."),
    _S("broker_write_url", None, (str, list), ("BROKER_WRITE_URL",),
       "Broker URL for publishing; None means broker_url."),
    _S("broker_transport", None, str, ("BROKER_TRANSPORT",),
       "Transport name when broker_url has no scheme.",
       ignored="not read: the scheme of broker_url names the transport (redis://, sqlite://, "
               "memory://)"),
    _S("broker_transport_options", {}, dict, ("BROKER_TRANSPORT_OPTIONS",),
       "Extra options for the transport (visibility_timeout, priority_steps, ...)."),
    _S("broker_connection_timeout", 4, float, ("BROKER_CONNECTION_TIMEOUT",),
       "Seconds to wait for a broker connection before giving up (Redis: the socket "
       "connect timeout; the socket_connect_timeout transport option wins)."),
    _S("broker_connection_retry", True, bool, ("BROKER_CONNECTION_RETRY",),
       "Reconnect when the broker connection is lost.",
       ignored="read at start-up only: once running, a celeriac worker always reconnects "
               "to a lost broker, backed off up to 5 s"),
    _S("broker_connection_retry_on_startup", None, bool, ("BROKER_CONNECTION_RETRY_ON_STARTUP",),
       "Retry the first connection; None means follow broker_connection_retry."),
    _S("broker_connection_max_retries", 100, int, ("BROKER_CONNECTION_MAX_RETRIES",),
       "Reconnection attempts before giving up; None or 0 means forever."),
    _S("broker_channel_error_retry", False, bool, ("BROKER_CHANNEL_ERROR_RETRY",),
       "Also reconnect after an invalid response from the broker.",
       ignored="no effect: a celeriac consumer always reconnects after a channel or "
               "connection error, backed off up to 5 s"),
    _S("broker_failover_strategy", None, object, ("BROKER_FAILOVER_STRATEGY",),
       "How to pick the next URL of a failover list: 'round-robin', 'shuffle' or a "
       "callable (Redis brokers)."),
    _S("broker_heartbeat", 120, int, ("BROKER_HEARTBEAT",),
       "AMQP heartbeat in seconds of RabbitMQ connections; 0 turns them off (Redis and "
       "SQLite: worker liveness is worker_heartbeat_interval and worker_lost_timeout)."),
    _S("broker_heartbeat_checkrate", 3.0, float, ("BROKER_HEARTBEAT_CHECKRATE",),
       "Heartbeats are checked broker_heartbeat / this often.",
       ignored="no effect: a RabbitMQ connection sends its heartbeats from a thread every "
               "broker_heartbeat / 3 seconds and finds a silent server at its next read"),
    _S("broker_login_method", None, str, ("BROKER_LOGIN_METHOD",),
       "AMQP login method (for example AMQPLAIN, EXTERNAL)."),
    _S("broker_native_delayed_delivery_queue_type", "quorum", str,
       ("BROKER_NATIVE_DELAYED_DELIVERY_QUEUE_TYPE",),
       "RabbitMQ queue type of the delay levels celery_delayed_0..27 (quorum or classic)."),
    _S("broker_pool_limit", 10, int, ("BROKER_POOL_LIMIT",),
       "Most connections kept open in the producer pool; None or 0: no pool.",
       ignored="no effect: each process keeps one producer connection, shared by its threads; the"
               " Redis transport's pool size is max_connections in broker_transport_options"),
    _S("broker_pool_acquire_timeout", None, float, ("BROKER_POOL_ACQUIRE_TIMEOUT",),
       "Seconds to wait for a free pooled connection; None: forever.",
       ignored="no effect: each process keeps one producer connection, shared by its threads; the"
               " Redis transport's pool size is max_connections in broker_transport_options"),
    _S("broker_use_ssl", False, (bool, dict), ("BROKER_USE_SSL",),
       "TLS for the broker connection: True or a dict of ssl options (Redis brokers)."),
    _S("broker_host", None, str, ("BROKER_HOST",), "Deprecated: use broker_url.",
       ignored="not read: give the host, port, user, password and virtual host in broker_url "
               "(Celery deprecated these)"),
    _S("broker_port", None, int, ("BROKER_PORT",), "Deprecated: use broker_url.",
       ignored="not read: give the host, port, user, password and virtual host in broker_url "
               "(Celery deprecated these)"),
    _S("broker_user", None, str, ("BROKER_USER",), "Deprecated: use broker_url.",
       ignored="not read: give the host, port, user, password and virtual host in broker_url "
               "(Celery deprecated these)"),
    _S("broker_password", None, str, ("BROKER_PASSWORD",), "Deprecated: use broker_url.",
       ignored="not read: give the host, port, user, password and virtual host in broker_url "
               "(Celery deprecated these)"),
    _S("broker_vhost", None, str, ("BROKER_VHOST",), "Deprecated: use broker_url.",
       ignored="not read: give the host, port, user, password and virtual host in broker_url "
               "(Celery deprecated these)"),
    _S("broker_dead_letter_queue", "celeriac.dead", str, (),
       "celeriac: queue receiving messages that cannot be decoded or keep killing workers."),
    _S("broker_max_redeliveries", 5, int, (),
       "celeriac: a message whose worker was lost this many times while holding it goes "
       "to the dead-letter queue instead of back to its queue."),

    # Cache result backend (memcached).
    _S("cache_backend", None, str, ("CELERY_CACHE_BACKEND",),
       "Cache backend name; prefer a cache+ URL in result_backend."),
    _S("cache_backend_options", {}, dict, ("CELERY_CACHE_BACKEND_OPTIONS",),
       "Options for the pymemcache client (docs/memcached.md); options that would lose "
       "results, and unknown ones, raise."),

    # Cassandra / Astra DB result backend.
    _S("cassandra_servers", None, list, (), "Cassandra hosts.", ignored=_no_backend("Cassandra")),
    _S("cassandra_port", None, int, (), "Cassandra port (driver default 9042).",
       ignored=_no_backend("Cassandra")),
    _S("cassandra_keyspace", None, str, (), "Keyspace holding the results.",
       ignored=_no_backend("Cassandra")),
    _S("cassandra_table", None, str, ("CASSANDRA_COLUMN_FAMILY",), "Table holding the results.",
       ignored=_no_backend("Cassandra")),
    _S("cassandra_read_consistency", None, str, (), "Read consistency level (ONE, QUORUM...).",
       ignored=_no_backend("Cassandra")),
    _S("cassandra_write_consistency", None, str, (), "Write consistency level.",
       ignored=_no_backend("Cassandra")),
    _S("cassandra_entry_ttl", None, float, (), "Seconds before a stored result expires.",
       ignored=_no_backend("Cassandra")),
    _S("cassandra_bundle_path", None, str, (),
       "Spelling of cassandra_secure_bundle_path in Celery's table.",
       ignored=_no_backend("Cassandra")),
    _S("cassandra_secure_bundle_path", None, str, (), "Astra DB secure connect bundle zip.",
       ignored=_no_backend("Cassandra")),
    _S("cassandra_auth_provider", None, str, (), "cassandra.auth provider class name.",
       ignored=_no_backend("Cassandra")),
    _S("cassandra_auth_kwargs", None, dict, (), "Arguments for the auth provider.",
       ignored=_no_backend("Cassandra")),
    _S("cassandra_options", {}, dict, (), "Arguments for cassandra.cluster.Cluster.",
       ignored=_no_backend("Cassandra")),

    # S3 result backend.
    _S("s3_access_key_id", None, str, (), "S3 access key id.", ignored=_no_backend("S3")),
    _S("s3_secret_access_key", None, str, (), "S3 secret access key.", ignored=_no_backend("S3")),
    _S("s3_bucket", None, str, (), "S3 bucket holding the results.", ignored=_no_backend("S3")),
    _S("s3_base_path", None, str, (), "Key prefix inside the bucket.", ignored=_no_backend("S3")),
    _S("s3_endpoint_url", None, str, (), "Endpoint of an S3-compatible service.",
       ignored=_no_backend("S3")),
    _S("s3_region", None, str, (), "AWS region.", ignored=_no_backend("S3")),

    # Azure Block Blob result backend.
    _S("azureblockblob_container_name", "celery", str, (), "Container holding the results.",
       ignored=_no_backend("Azure Block Blob")),
    _S("azureblockblob_retry_initial_backoff_sec", 2, int, (), "First retry delay in seconds.",
       ignored=_no_backend("Azure Block Blob")),
    _S("azureblockblob_retry_increment_base", 2, int, (), "Base of the exponential backoff.",
       ignored=_no_backend("Azure Block Blob")),
    _S("azureblockblob_retry_max_attempts", 3, int, (), "Most retry attempts.",
       ignored=_no_backend("Azure Block Blob")),
    _S("azureblockblob_base_path", "", str, (), "Key prefix inside the container.",
       ignored=_no_backend("Azure Block Blob")),
    _S("azureblockblob_connection_timeout", 20, int, (), "Connect timeout in seconds.",
       ignored=_no_backend("Azure Block Blob")),
    _S("azureblockblob_read_timeout", 120, int, (), "Read timeout in seconds.",
       ignored=_no_backend("Azure Block Blob")),

    # Google Cloud Storage result backend.
    _S("gcs_bucket", None, str, (), "GCS bucket holding the results.",
       ignored=_no_backend("Google Cloud Storage")),
    _S("gcs_project", None, str, (), "GCS project.", ignored=_no_backend("Google Cloud Storage")),
    _S("gcs_base_path", "", str, (), "Key prefix inside the bucket.",
       ignored=_no_backend("Google Cloud Storage")),
    _S("gcs_ttl", 0, float, (), "Seconds results live (needs a bucket lifecycle rule).",
       ignored=_no_backend("Google Cloud Storage")),
    _S("gcs_threadpool_maxsize", 10, int, (), "Threads (and connections) for GCS calls.",
       ignored=_no_backend("Google Cloud Storage")),
    _S("firestore_project", None, str, (), "Firestore project for chord counters; None: gcs.",
       ignored=_no_backend("Google Cloud Storage")),

    # Remote control: the broadcast queues workers listen on.
    _S("control_queue_ttl", 300.0, float, (),
       "Seconds a control command waits for a worker (RabbitMQ's x-message-ttl)."),
    _S("control_queue_expires", 10.0, float, (),
       "Seconds an unused control queue lives (RabbitMQ's x-expires)."),
    _S("control_queue_exclusive", True, bool, (), "Control reply queues are exclusive.",
       ignored=_CONTROL_QUEUES),
    _S("control_queue_durable", False, bool, (), "Control exchange and queues survive restarts.",
       ignored=_CONTROL_QUEUES),
    _S("control_exchange", "celery", str, (), "Name of the control exchange (prefix)."),

    # Document store result backends: Couchbase, ArangoDB, MongoDB, CosmosDB, DynamoDB.
    _S("couchbase_backend_settings", None, dict, ("CELERY_COUCHBASE_BACKEND_SETTINGS",),
       "Couchbase connection settings.", ignored=_no_backend("Couchbase")),
    _S("arangodb_backend_settings", None, dict, ("CELERY_ARANGODB_BACKEND_SETTINGS",),
       "ArangoDB connection settings.", ignored=_no_backend("ArangoDB")),
    _S("mongodb_backend_settings", None, dict, ("CELERY_MONGODB_BACKEND_SETTINGS",),
       "MongoDB database, collection and client options.", ignored=_no_backend("MongoDB")),
    _S("cosmosdbsql_database_name", "celerydb", str, (), "CosmosDB database.",
       ignored=_no_backend("CosmosDB")),
    _S("cosmosdbsql_collection_name", "celerycol", str, (), "CosmosDB collection.",
       ignored=_no_backend("CosmosDB")),
    _S("cosmosdbsql_consistency_level", "Session", str, (), "CosmosDB consistency level.",
       ignored=_no_backend("CosmosDB")),
    _S("cosmosdbsql_max_retry_attempts", 9, int, (), "Most retries of a CosmosDB request.",
       ignored=_no_backend("CosmosDB")),
    _S("cosmosdbsql_max_retry_wait_time", 30, int, (), "Seconds of retrying a request.",
       ignored=_no_backend("CosmosDB")),
    _S("dynamodb_endpoint_url", None, str, (), "Endpoint of a DynamoDB-compatible service.",
       ignored=_no_backend("DynamoDB")),

    # Elasticsearch result backend.
    _S("elasticsearch_retry_on_timeout", None, bool, ("CELERY_ELASTICSEARCH_RETRY_ON_TIMEOUT",),
       "Retry on another node after a timeout.", ignored=_no_backend("Elasticsearch")),
    _S("elasticsearch_max_retries", None, int, ("CELERY_ELASTICSEARCH_MAX_RETRIES",),
       "Retries before an error is raised.", ignored=_no_backend("Elasticsearch")),
    _S("elasticsearch_timeout", None, float, ("CELERY_ELASTICSEARCH_TIMEOUT",),
       "Request timeout in seconds.", ignored=_no_backend("Elasticsearch")),
    _S("elasticsearch_save_meta_as_text", True, bool,
       ("CELERY_ELASTICSEARCH_SAVE_META_AS_TEXT",),
       "Store result metadata as text rather than JSON.", ignored=_no_backend("Elasticsearch")),

    # Events: task and worker monitoring messages.
    _S("event_queue_expires", 60.0, float, ("CELERY_EVENT_QUEUE_EXPIRES",),
       "Seconds an unused monitor queue lives (RabbitMQ's x-expires; Redis and SQLite have "
       "no monitor queues)."),
    _S("event_queue_ttl", 5.0, float, ("CELERY_EVENT_QUEUE_TTL",),
       "Seconds an event waits in a monitor queue (RabbitMQ's x-message-ttl)."),
    _S("event_queue_prefix", "celeryev", str, ("CELERY_EVENT_QUEUE_PREFIX",),
       "Prefix of monitor queue names (RabbitMQ)."),
    _S("event_queue_exclusive", True, bool, ("CELERY_EVENT_QUEUE_EXCLUSIVE",),
       "Monitor queues are exclusive to their connection.", ignored=_EVENT_QUEUES),
    _S("event_queue_durable", False, bool, ("CELERY_EVENT_QUEUE_DURABLE",),
       "Monitor queues survive broker restarts.", ignored=_EVENT_QUEUES),
    _S("event_serializer", "json", str, ("CELERY_EVENT_SERIALIZER",),
       "Serializer of event messages.",
       ignored="not read: events are always JSON, the one serializer every monitor reads"),
    _S("event_exchange", "celeryev", str, ("CELERY_EVENT_EXCHANGE",),
       "Name of the event exchange."),
    *_daemon_options("events", "the events monitor", _EVENTS, _EVENTS, _EVENTS),

    # Redis result backend.
    _S("redis_host", None, str, ("CELERY_REDIS_HOST",), "Deprecated: use a redis:// URL.",
       ignored="not read: give the host, port and database in the redis:// result_backend URL "
               "(Celery deprecated these)"),
    _S("redis_port", None, int, ("CELERY_REDIS_PORT",), "Deprecated: use a redis:// URL.",
       ignored="not read: give the host, port and database in the redis:// result_backend URL "
               "(Celery deprecated these)"),
    _S("redis_db", None, int, ("CELERY_REDIS_DB",), "Deprecated: use a redis:// URL.",
       ignored="not read: give the host, port and database in the redis:// result_backend URL "
               "(Celery deprecated these)"),
    _S("redis_username", None, str, ("CELERY_REDIS_USERNAME",), "Redis user name."),
    _S("redis_password", None, str, ("CELERY_REDIS_PASSWORD",), "Redis password."),
    _S("redis_max_connections", None, int, ("CELERY_REDIS_MAX_CONNECTIONS",),
       "Size of the result backend's connection pool; None: no limit."),
    _S("redis_socket_timeout", 120.0, float, ("CELERY_REDIS_SOCKET_TIMEOUT",),
       "Seconds a Redis read or write may take."),
    _S("redis_socket_connect_timeout", None, float, ("CELERY_REDIS_SOCKET_CONNECT_TIMEOUT",),
       "Seconds a Redis connect may take."),
    _S("redis_retry_on_timeout", False, bool, ("CELERY_REDIS_RETRY_ON_TIMEOUT",),
       "Retry a Redis command once after a timeout."),
    _S("redis_socket_keepalive", False, bool, ("CELERY_REDIS_SOCKET_KEEPALIVE",),
       "TCP keepalive on Redis connections."),
    _S("redis_backend_use_ssl", None, dict, ("CELERY_REDIS_BACKEND_USE_SSL",),
       "TLS options for the Redis result backend (needs a rediss:// URL)."),
    _S("redis_backend_health_check_interval", None, int, (),
       "Seconds between Redis connection health checks."),
    _S("redis_backend_credential_provider", None, object, (),
       "redis-py credential provider (object or 'module:Class').",
       ignored="not read yet: give the user name and password in the URL, or in redis_username "
               "and redis_password"),
    _S("redis_client_name", None, str, (), "CLIENT SETNAME used by the result backend."),

    # Results: where and how task return values are stored.
    _S("result_backend", None, str, ("CELERY_RESULT_BACKEND",),
       "Result store URL; None means the app's default (see the app)."),
    _S("result_backend_transport_options", {}, dict,
       ("CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS",),
       "Extra options for the result store's client."),
    _S("result_backend_always_retry", False, bool, ("CELERY_RESULT_BACKEND_ALWAYS_RETRY",),
       "Retry recoverable result store errors instead of raising."),
    _S("result_backend_max_retries", math.inf, float, ("CELERY_RESULT_BACKEND_MAX_RETRIES",),
       "Most retries of a result store call."),
    _S("result_backend_base_sleep_between_retries_ms", 10, int,
       ("CELERY_RESULT_BACKEND_BASE_SLEEP_BETWEEN_RETRIES_MS",),
       "First backoff between result store retries, in ms."),
    _S("result_backend_max_sleep_between_retries_ms", 10000, int,
       ("CELERY_RESULT_BACKEND_MAX_SLEEP_BETWEEN_RETRIES_MS",),
       "Longest backoff between result store retries, in ms."),
    _S("result_backend_thread_safe", False, bool, (),
       "Share one result store client between threads.",
       ignored="no effect: celeriac's result backends are always safe to share between threads "
               "(one client per process, a connection per thread)", harmless=(True,)),
    _S("override_backends", None, dict, (),
       "Result backend aliases: scheme -> 'module:Class'."),
    _S("result_cache_max", -1, int, ("CELERY_MAX_CACHED_RESULTS",),
       "Results cached by the client; -1 disables, 0 or None: no limit.",
       ignored="no effect: each AsyncResult keeps its own ready result; there is no shared "
               "client-side cache to size"),
    _S("result_compression", None, str, ("CELERY_RESULT_COMPRESSION",),
       "Compression of stored results (gzip, bzip2...)."),
    _S("result_exchange", "celeryresults", str, ("CELERY_RESULT_EXCHANGE",),
       "Exchange of the old amqp result backend.",
       ignored="no effect: the amqp result backend Celery removed used it; rpc:// replies go "
               "to the default exchange, as Celery's do"),
    _S("result_exchange_type", "direct", str, ("CELERY_RESULT_EXCHANGE_TYPE",),
       "Exchange type of the old amqp result backend.",
       ignored="no effect: the amqp result backend Celery removed used it; rpc:// replies go "
               "to the default exchange, as Celery's do"),
    _S("result_expires", timedelta(days=1), (timedelta, int, float),
       ("CELERY_TASK_RESULT_EXPIRES", "CELERY_RESULT_EXPIRES"),
       "How long results are kept (timedelta or seconds); None or 0: forever."),
    _S("result_chord_expires", None, float, ("CELERY_RESULT_CHORD_EXPIRES",),
       "How long chord counters are kept; None means result_expires."),
    _S("result_failure_expires", None, float, ("CELERY_RESULT_FAILURE_EXPIRES",),
       "How long failed results are kept; None means result_expires."),
    _S("result_persistent", None, bool, ("CELERY_RESULT_PERSISTENT",),
       "rpc backend: result messages survive broker restarts (delivery mode 2)."),
    _S("result_extended", False, bool, ("CELERY_RESULT_EXTENDED",),
       "Store name, args, kwargs, worker, retries, queue with the result."),
    _S("result_serializer", "json", str, ("CELERY_RESULT_SERIALIZER",),
       "Serializer of stored results."),
    _S("result_chord_retry_interval", 1.0, float, ("CELERY_RESULT_CHORD_RETRY_INTERVAL",),
       "Seconds between checks of a chord's header by celery.chord_unlock, which only "
       "Celery clients send (celeriac counts chord parts in the result store)."),
    _S("result_chord_join_timeout", 3.0, float, ("CELERY_RESULT_CHORD_JOIN_TIMEOUT",),
       "Seconds to wait when joining a chord header's results.",
       ignored="no effect: the last header task gets every part's result from the chord counter "
               "in the same call, with no join to time out"),

    # Message signing.
    _S("security_key", None, str, ("CELERY_SECURITY_KEY",),
       "Path of the private key that signs messages.", ignored=_SIGNING),
    _S("security_key_password", None, (bytes, str), ("CELERY_SECURITY_KEY_PASSWORD",),
       "Password of the private key.", ignored=_SIGNING),
    _S("security_certificate", None, str, ("CELERY_SECURITY_CERTIFICATE",),
       "Path of the X.509 certificate that signs messages.", ignored=_SIGNING),
    _S("security_cert_store", None, str, ("CELERY_SECURITY_CERT_STORE",),
       "Directory or glob of trusted certificates.", ignored=_SIGNING),
    _S("security_digest", "sha256", str, ("CELERY_SECURITY_DIGEST",),
       "Digest used to sign messages.", ignored=_SIGNING),

    # Database (SQLAlchemy) result backend.
    _S("database_url", None, str, ("CELERY_RESULT_DBURI",),
       "SQLAlchemy URL; usually given as db+URL in result_backend."),
    _S("database_engine_options", {"pool_pre_ping": True, "pool_recycle": 3600}, dict,
       ("CELERY_RESULT_ENGINE_OPTIONS",),
       "Keyword arguments for sqlalchemy.create_engine."),
    _S("database_engine_callback", None, object, (),
       "Called with the new engine, to adjust it."),
    _S("database_short_lived_sessions", False, bool, ("CELERY_RESULT_DB_SHORT_LIVED_SESSIONS",),
       "Open a new session per operation (helps with stale connections)."),
    _S("database_table_schemas", None, dict, (),
       "Schema per table: {'task': ..., 'group': ...}."),
    _S("database_table_names", None, dict,
       ("CELERY_RESULT_DB_TABLENAMES", "CELERY_RESULT_DB_TABLE_NAMES"),
       "Table names: {'task': ..., 'group': ...}."),
    _S("database_create_tables_at_setup", True, bool, (),
       "Create the tables when the backend starts, not at first use."),

    # Tasks: calling, routing and running.
    _S("task_acks_late", False, bool, ("CELERY_ACKS_LATE",),
       "Ack a message after the task ran, not before."),
    _S("task_acks_on_failure_or_timeout", True, bool, ("CELERY_ACKS_ON_FAILURE_OR_TIMEOUT",),
       "With acks_late, still ack tasks that failed or timed out."),
    _S("task_acks_on_failure", None, bool, ("CELERY_ACKS_ON_FAILURE",),
       "With acks_late, ack failed tasks; None: task_acks_on_failure_or_timeout.",
       ignored="not read yet: with acks_late, task_acks_on_failure_or_timeout decides for "
               "failures and time-outs alike"),
    _S("task_acks_on_timeout", None, bool, ("CELERY_ACKS_ON_TIMEOUT",),
       "With acks_late, ack timed-out tasks; None: task_acks_on_failure_or_timeout.",
       ignored="not read yet: with acks_late, task_acks_on_failure_or_timeout decides for "
               "failures and time-outs alike"),
    _S("task_always_eager", False, bool, ("CELERY_ALWAYS_EAGER", "CELERY_TASK_ALWAYS_EAGER"),
       "Run tasks in the caller instead of sending them."),
    _S("task_eager_propagates", False, bool,
       ("CELERY_EAGER_PROPAGATES_EXCEPTIONS", "CELERY_EAGER_PROPAGATES"),
       "Eagerly run tasks raise their exceptions."),
    _S("task_store_eager_result", False, bool, ("CELERY_STORE_EAGER_RESULT",),
       "Eagerly run tasks store their results."),
    _S("task_annotations", None, object, ("CELERY_ANNOTATIONS",),
       "Task attribute overrides: a dict by task name ('*' for all) or objects."),
    _S("task_compression", None, str, ("CELERY_MESSAGE_COMPRESSION", "CELERY_COMPRESSION"),
       "Compression of task messages (gzip, bzip2...)."),
    _S("task_create_missing_queues", True, bool, ("CELERY_CREATE_MISSING_QUEUES",),
       "Queues named in routes but not in task_queues are created."),
    _S("task_create_missing_queue_type", "classic", str, ("CELERY_CREATE_MISSING_QUEUE_TYPE",),
       "RabbitMQ type of automatically created queues (classic or quorum)."),
    _S("task_create_missing_queue_exchange_type", None, str,
       ("CELERY_CREATE_MISSING_QUEUE_EXCHANGE_TYPE",),
       "Exchange type of automatically created queues; None: unchanged.",
       ignored="no effect: a queue created for a route gets a direct exchange of its own "
               "name, as Celery's default"),
    _S("task_inherit_parent_priority", False, bool, ("CELERY_INHERIT_PARENT_PRIORITY",),
       "Tasks sent from a task (and the next chain step) get its priority."),
    _S("task_default_delivery_mode", 2, (int, str), ("CELERY_DEFAULT_DELIVERY_MODE",),
       "2 or 'persistent' (survives restarts), 1 or 'transient'.",
       ignored="no effect: celeriac always publishes task messages persistent (delivery mode "
               "2), so that a RabbitMQ restart keeps them",
       harmless=("persistent",)),
    _S("task_default_queue", "celery", str, ("CELERY_DEFAULT_QUEUE",),
       "Queue of tasks that have no route."),
    _S("task_default_queue_type", "classic", str, ("CELERY_DEFAULT_QUEUE_TYPE",),
       "RabbitMQ type of the default queue (classic or quorum)."),
    _S("task_default_exchange", None, str, ("CELERY_DEFAULT_EXCHANGE",),
       "Exchange of the default queue; None means the queue's name (RabbitMQ)."),
    _S("task_default_exchange_type", "direct", str, ("CELERY_DEFAULT_EXCHANGE_TYPE",),
       "Exchange type of the default queue (RabbitMQ)."),
    _S("task_default_routing_key", None, str, ("CELERY_DEFAULT_ROUTING_KEY",),
       "Routing key of the default queue; None means the queue's name (RabbitMQ)."),
    _S("task_default_rate_limit", None, (str, int, float), ("CELERY_DEFAULT_RATE_LIMIT",),
       "Rate limit of tasks that set none ('10/s', '100/m'); None: no limit."),
    _S("task_default_priority", None, int, ("CELERY_DEFAULT_PRIORITY",),
       "Priority of tasks that set none."),
    _S("task_ignore_result", False, bool, ("CELERY_IGNORE_RESULT",),
       "Do not store return values."),
    _S("task_store_errors_even_if_ignored", False, bool,
       ("CELERY_STORE_ERRORS_EVEN_IF_IGNORED",),
       "Store failures even when results are ignored."),
    _S("task_protocol", 2, int, ("CELERY_TASK_PROTOCOL",),
       "Task message protocol version.",
       ignored="no effect: celeriac sends protocol 2 only (Celery's default since 4.0); its "
               "workers run protocol 1 messages too"),
    _S("task_publish_retry", True, bool, ("CELERY_TASK_PUBLISH_RETRY", "CELERY_PUBLISH_RETRY"),
       "Retry sending a task when the broker connection fails."),
    _S("task_publish_retry_policy",
       {"max_retries": 3, "interval_start": 0, "interval_max": 1, "interval_step": 0.2}, dict,
       ("CELERY_TASK_PUBLISH_RETRY_POLICY", "CELERY_PUBLISH_RETRY_POLICY"),
       "max_retries, interval_start, interval_step, interval_max for sending."),
    _S("task_queues", None, (list, tuple, dict), ("CELERY_QUEUES",),
       "Queues workers consume from; None means just task_default_queue."),
    _S("task_queue_max_priority", None, int, ("CELERY_QUEUE_MAX_PRIORITY",),
       "x-max-priority of declared queues (RabbitMQ; the Redis and SQLite transports always "
       "order priorities 0-9)."),
    _S("task_reject_on_worker_lost", None, bool,
       ("CELERY_REJECT_ON_WORKER_LOST", "CELERY_TASK_REJECT_ON_WORKER_LOST"),
       "With acks_late, requeue a task whose worker process died."),
    _S("task_retry_on_worker_lost", False, bool, ("CELERY_RETRY_ON_WORKER_LOST",),
       "Retry a task whose worker process died.",
       ignored="not read yet: a task whose pool process died is requeued (acks_late) or failed "
               "with WorkerLostError, never retried"),
    _S("task_remote_tracebacks", False, bool, ("CELERY_REMOTE_TRACEBACKS",),
       "Raised task errors carry the worker's traceback (needs tblib)."),
    _S("task_repr_maxlevels", 3, int, ("CELERY_REPR_MAXLEVELS",),
       "Nesting kept in the argsrepr/kwargsrepr headers that monitors show."),
    _S("task_args_repr_function", None, object, (),
       "Callable or 'module:func' that shows task arguments in logs; None: built-in.",
       ignored="no effect: the worker does not log task arguments"),
    _S("task_routes", None, object, ("CELERY_ROUTES",),
       "Routers: a dict (name or glob -> queue), a function, a path, or a list of them."),
    _S("task_send_sent_event", False, bool,
       ("CELERY_SEND_TASK_SENT_EVENT", "CELERY_SEND_SENT_EVENT"),
       "Send a task-sent event for every task."),
    _S("task_serializer", "json", str, ("CELERY_TASK_SERIALIZER",),
       "Serializer of task messages."),
    _S("task_soft_time_limit", None, float,
       ("CELERYD_TASK_SOFT_TIME_LIMIT", "CELERYD_SOFT_TIME_LIMIT"),
       "Seconds before SoftTimeLimitExceeded is raised in a task."),
    _S("task_time_limit", None, float, ("CELERYD_TASK_TIME_LIMIT", "CELERYD_TIME_LIMIT"),
       "Seconds before a task's process is killed."),
    _S("task_track_started", False, bool, ("CELERY_TRACK_STARTED", "CELERY_TASK_TRACK_STARTED"),
       "Store the STARTED state when a task begins."),
    _S("task_allow_error_cb_on_chord_header", False, bool,
       ("CELERY_ALLOW_ERROR_CB_ON_CHORD_HEADER",),
       "link_error on a chord also links its header tasks."),

    # Worker: the process that runs tasks.
    _S("worker_concurrency", None, int, ("CELERYD_CONCURRENCY",),
       "Processes or threads running tasks; None means the CPU count."),
    _S("worker_prefetch_multiplier", 4, int, ("CELERYD_PREFETCH_MULTIPLIER",),
       "Messages reserved per concurrency slot; 0 means no limit (fetched 1000 at a time)."),
    _S("worker_disable_prefetch", False, bool, ("CELERYD_DISABLE_PREFETCH",),
       "Fetch a message only when a slot is free.",
       ignored="not read yet: messages prefetched behind a long task go back to the queue after "
               "worker_prefetch_release_after (1 s) instead"),
    _S("worker_enable_prefetch_count_reduction", True, bool,
       ("CELERYD_ENABLE_PREFETCH_COUNT_REDUCTION",),
       "After a reconnect, raise the prefetch count back gradually.",
       ignored="no effect: celeriac has no broker-side prefetch count to lower after a reconnect;"
               " a consumer fetches only what its slot can take"),
    _S("worker_eta_task_limit", None, int, ("CELERYD_ETA_TASK_LIMIT",),
       "Most ETA tasks a worker holds at once; None: no limit.",
       ignored="no effect: ETA tasks wait in the broker, not in the worker's memory, so a worker "
               "holds none to limit"),
    _S("worker_max_tasks_per_child", None, int, ("CELERYD_MAX_TASKS_PER_CHILD",),
       "Tasks a pool process runs before it is replaced; None: no limit."),
    _S("worker_max_memory_per_child", None, int, ("CELERYD_MAX_MEMORY_PER_CHILD",),
       "Resident KiB after which a pool process is replaced; None: no limit."),
    _S("worker_pool", "prefork", str, ("CELERYD_POOL",),
       "Pool: prefork, threads, solo or asyncio."),
    _S("worker_pool_putlocks", True, bool, ("CELERYD_POOL_PUTLOCKS",),
       "Wait for a free pool slot before taking a task.",
       ignored="no effect: each pool slot fetches its own messages, so a message never waits for "
               "a full pool"),
    _S("worker_pool_restarts", False, bool, ("CELERYD_POOL_RESTARTS",),
       "Allow the pool_restart remote control command.",
       ignored="not read: celeriac has no pool_restart command (restart the worker to reload "
               "code)"),
    _S("worker_pool_start_method", "fork", str, ("CELERYD_POOL_START_METHOD",),
       "multiprocessing start method of the prefork pool.",
       ignored="not read: the prefork pool always forks; 'spawn' and 'forkserver' are not "
               "supported"),
    _S("worker_proc_alive_timeout", 4.0, float, ("CELERYD_PROC_ALIVE_TIMEOUT",),
       "Seconds a new pool process has to start.",
       ignored="no effect: pool processes are forked from the worker with no start-up handshake "
               "to time out"),
    _S("worker_lost_wait", 10.0, float, ("CELERYD_WORKER_LOST_WAIT",),
       "Seconds to wait for a late result before raising WorkerLostError.",
       ignored="no effect: the worker learns from the operating system at once that a pool "
               "process died, and settles its task then; there is no late result to wait for"),
    _S("worker_direct", False, bool, ("CELERY_WORKER_DIRECT",),
       "Each worker also consumes its own <hostname>.dq queue.",
       ignored="not read yet: workers do not consume a <hostname>.dq queue"),
    _S("worker_disable_rate_limits", False, bool, ("CELERY_DISABLE_RATE_LIMITS",),
       "Ignore all rate limits."),
    _S("worker_deduplicate_successful_tasks", False, bool,
       ("CELERYD_DEDUPLICATE_SUCCESSFUL_TASKS",),
       "Skip redelivered acks_late tasks that already succeeded."),
    _S("worker_enable_remote_control", True, bool, ("CELERY_ENABLE_REMOTE_CONTROL",),
       "Workers answer remote control commands (inspect, control, status)."),
    _S("worker_send_task_events", False, bool, ("CELERY_SEND_EVENTS",),
       "Send task events (the -E flag)."),
    _S("worker_state_db", None, str, ("CELERYD_STATE_DB",),
       "File keeping worker state (revoked ids) across restarts.",
       ignored="no effect: revocations live in the broker and survive restarts without a state "
               "file"),
    _S("worker_timer_precision", 1.0, float, ("CELERYD_TIMER_PRECISION",),
       "Longest sleep of the ETA timer in seconds.",
       ignored="no effect: ETA messages wait in the broker; the worker has no in-memory ETA "
               "timer"),
    _S("worker_timer", None, str, ("CELERYD_TIMER",),
       "ETA timer class; None means the pool's own.",
       ignored="no effect: ETA messages wait in the broker; the worker has no in-memory ETA "
               "timer"),
    _S("worker_agent", None, str, ("CELERYD_AGENT",),
       "Agent class started with the worker.",
       ignored="not read: the parts of celeriac's worker cannot be replaced by class name"),
    _S("worker_autoscaler", None, (str, type), ("CELERYD_AUTOSCALER",),
       "Autoscaler class or path used with --autoscale; None (or Celery's "
       "'celery.worker.autoscale:Autoscaler') means the built-in one, else a subclass of "
       "celeriac.worker.autoscale:Autoscaler."),
    _S("worker_consumer", None, (str, type), ("CELERYD_CONSUMER",),
       "Consumer class or path; None means the built-in one "
       "(Celery: 'celery.worker.consumer:Consumer').",
       ignored="not read: the parts of celeriac's worker cannot be replaced by class name"),
    _S("worker_cancel_long_running_tasks_on_connection_loss", False, bool,
       ("CELERYD_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS",),
       "Cancel running acks_late tasks when the broker connection drops.",
       ignored="not read: a running task is not cancelled when the broker connection drops; its "
               "message stays this worker's while the worker lives"),
    _S("worker_soft_shutdown_timeout", 0.0, float, ("CELERYD_SOFT_SHUTDOWN_TIMEOUT",),
       "Seconds running tasks get before a cold shutdown kills them.",
       ignored="not read yet: a warm shutdown lets running tasks finish however long they take; a"
               " second signal stops at once"),
    _S("worker_enable_soft_shutdown_on_idle", False, bool,
       ("CELERYD_ENABLE_SOFT_SHUTDOWN_ON_IDLE",),
       "Wait worker_soft_shutdown_timeout even with no task running.",
       ignored="not read yet: a warm shutdown lets running tasks finish however long they take; a"
               " second signal stops at once"),
    _S("worker_detect_quorum_queues", True, bool, ("CELERYD_DETECT_QUORUM_QUEUES",),
       "Turn off global QoS when a quorum queue is consumed.", ignored=_AMQP_QOS),
    _S("worker_hijack_root_logger", True, bool, ("CELERYD_HIJACK_ROOT_LOGGER",),
       "Replace the root logger's handlers; False adds one only where none is set."),
    _S("worker_log_color", None, bool, ("CELERYD_LOG_COLOR",),
       "Coloured logs, only ever on a terminal (never in a log file); False: never."),
    _S("worker_log_format", _LOG_FORMAT, str, ("CELERYD_LOG_FORMAT", "CELERY_WORKER_LOG_FORMAT"),
       "Format of worker log lines."),
    _S("worker_log_datefmt", None, str, ("CELERYD_LOG_DATEFMT",),
       "Date format of worker log lines."),
    _S("worker_task_log_format", _TASK_LOG_FORMAT, str,
       ("CELERYD_TASK_LOG_FORMAT", "CELERY_WORKER_TASK_LOG_FORMAT"),
       "Format of log lines of task loggers (get_task_logger), with task_name and task_id."),
    _S("worker_task_log_datefmt", None, str, ("CELERYD_TASK_LOG_DATEFMT",),
       "Date format of task log lines."),
    _S("worker_redirect_stdouts", True, bool,
       ("CELERY_REDIRECT_STDOUTS", "CELERYD_REDIRECT_STDOUTS"),
       "Send print() and other stdout/stderr output to the log (pool processes too)."),
    _S("worker_redirect_stdouts_level", "WARNING", str,
       ("CELERY_REDIRECT_STDOUTS_LEVEL", "CELERYD_REDIRECT_STDOUTS_LEVEL"),
       "Log level of redirected print output."),
    *_daemon_options("worker", "the worker", "", "", _NO_EXEC),
    _S("worker_heartbeat_interval", 2.0, float, (),
       "celeriac: seconds between refreshes of a worker's liveness key."),
    _S("worker_prefetch_release_after", 1.0, float, (),
       "celeriac: a task running this many seconds gives the messages prefetched behind "
       "it back to the queue, so a long task never holds up short ones (0 disables)."),
    _S("worker_revoke_expires", 10800.0, float, (),
       "celeriac: seconds a revocation is kept in the broker (Celery's worker keeps "
       "them 3 hours in memory)."),
    _S("worker_lost_timeout", 10.0, float, (),
       "celeriac: a consumer silent this long is dead; its unacked messages are redelivered."),
    _S("worker_async_concurrency", 100, int, (),
       "celeriac: coroutines the asyncio pool runs at once."),
    _S("once", None, dict, (),
       "celery_once's ONCE: the lock backend of QueueOnce tasks and its settings "
       "(celeriac.contrib.once)."),
)

#: Every setting by its lowercase name.
SETTINGS: dict[str, Setting] = {s.name: s for s in _TABLE}

#: Old UPPERCASE name -> new lowercase name, for the names listed in ``Setting.old``.
OLD_NAMES: dict[str, str] = {old: s.name for s in _TABLE for old in s.old}

# Every alias: the old names, plus each new name in upper case (as Celery accepts).
_ALIASES: dict[str, str] = {s.name.upper(): s.name for s in _TABLE} | OLD_NAMES
_UPPER_NAMES: list[str] = sorted(_ALIASES)
_NEW_NAMES: list[str] = sorted(SETTINGS)
_MUTABLE_DEFAULTS = frozenset(
    s.name for s in _TABLE if isinstance(s.default, (dict, list, set))
)
_ONE_OR_MANY = frozenset({"accept_content", "result_accept_content"})
_CODE_TYPES = (
    types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
    type, property, classmethod, staticmethod,
)
_BROKER_ENV = ("CELERIAC_BROKER_URL", "CELERY_BROKER_URL")
_BACKEND_ENV = ("CELERIAC_RESULT_BACKEND", "CELERY_RESULT_BACKEND")
_SECRET_NAME = re.compile(
    r"pass|secret|token|signature|api_?key|access_key|security_key|auth|credential", re.IGNORECASE
)
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]+@")


def canonical_name(name: str) -> str:
    """Return the lowercase name for ``name``, translating old and upper-case names.

    Args:
        name: A setting name, new or old.

    Returns:
        The new name when ``name`` is known under any spelling, else ``name``.
    """
    if name in SETTINGS:
        return name
    return _ALIASES.get(name, name)


def seconds(value: timedelta | float | str | None) -> float | None:
    """Turn a duration setting into float seconds.

    Args:
        value: A ``timedelta``, a number of seconds (or its text), or ``None``.

    Returns:
        The seconds as a float, or ``None`` for ``None``.

    Raises:
        TypeError: ``value`` is not a duration.
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise TypeError(f"expected seconds as a number or a timedelta, got {value!r}")


def _fresh_defaults() -> dict[str, Any]:
    data = {name: s.default for name, s in SETTINGS.items()}
    for name in _MUTABLE_DEFAULTS:
        data[name] = copy.deepcopy(data[name])
    return data


# Upper-case names are the convention of the web frameworks' own settings (Flask's
# app.config keeps only upper-case keys, Django's settings are upper-case), which the
# seed pattern ``celery.conf.update(app.config)`` pours in whole: DEBUG, SECRET_KEY,
# MAIL_SERVER... An unknown upper-case name is reported only when it is spelt like a
# task-queue setting. The families are those no common web extension uses (REDIS_URL,
# CACHE_TYPE, SECURITY_*, S3_BUCKET are Flask extensions' keys), so they stay quiet.
_QUEUE_PREFIXES = ("CELERY_", "CELERYD_", "CELERYBEAT_", "CELERYMON_", "BROKER_",
                   "RESULT_", "TASK_", "WORKER_", "BEAT_", "EVENT_", "EVENTS_", "CONTROL_")


def _reported_unknown(name: str, value: Any, data: Mapping[Any, Any]) -> bool:
    """Whether storing the unknown setting ``name`` deserves ``UnknownSettingWarning``.

    A lower-case name always does: it is how celeriac's own settings are spelt, so it is
    a typo or a setting celeriac lacks. An upper-case one does when it looks like a
    task-queue setting (``_QUEUE_PREFIXES``), unless it is ``CELERY_<setting>`` holding
    the value that setting already has (``CELERY_BROKER_URL`` beside ``broker=`` in the
    Flask seed's ``make_celery``): nothing is lost then.
    """
    if not name.isupper():
        return True
    if not name.startswith(_QUEUE_PREFIXES):
        return False
    meant = name[7:].lower() if name.startswith("CELERY_") else None
    return not (meant in SETTINGS and _same_value(value, data.get(meant)))


def _unknown_message(name: str) -> str:
    upper = name.upper()
    if upper.startswith("CELERY_") and upper[7:].lower() in SETTINGS:
        return (
            f"unknown setting {name!r}: did you mean {upper[7:].lower()!r}? "
            "(config_from_object(..., namespace='CELERY') strips the prefix)"
        )
    if name.isupper():
        match = difflib.get_close_matches(name, _UPPER_NAMES, n=1, cutoff=0.8)
    else:
        match = difflib.get_close_matches(name.lower(), _NEW_NAMES, n=1, cutoff=0.8)
    if match:
        return f"unknown setting {name!r}: did you mean {match[0]!r}?"
    return f"unknown setting {name!r}; celeriac ignores it (keeping it in app.conf)"


#: Names of ignored settings already reported by this process (see ``_warn_ignored``).
_IGNORED_WARNED: set[str] = set()


def _same_value(value: Any, other: Any) -> bool:
    """``value == other``, counting a list and a tuple of the same items as equal."""
    if isinstance(value, (list, tuple)) and isinstance(other, (list, tuple)):
        value, other = list(value), list(other)
    try:
        return bool(value == other)
    except Exception:  # noqa: BLE001 - an object whose == fails is not the default
        return False


def _warn_ignored(setting: Setting, given: str, value: Any, stacklevel: int) -> None:
    """Warn, once per process, that ``setting`` (set as ``given``) has no effect here.

    Setting it to its default, or to a value that asks for what celeriac does
    anyway (``Setting.harmless``), does not warn.
    """
    name = setting.name
    if name in _IGNORED_WARNED or _same_value(value, setting.default) or any(
            _same_value(value, ok) for ok in setting.harmless):
        return
    _IGNORED_WARNED.add(name)
    spelled = f" (set as {given!r})" if given != name else ""
    warnings.warn(f"celeriac ignores the setting {name!r}{spelled}: {setting.ignored}",
                  IgnoredSettingWarning, stacklevel=stacklevel)


def _copy_value(value: Any) -> Any:
    if isinstance(value, (dict, list, set)):
        try:
            return copy.deepcopy(value)
        except Exception:  # an unpicklable member: share the members, not the container
            return copy.copy(value)
    return value


def _censor(value: Any) -> Any:
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1********@", value) if "://" in value else value
    if isinstance(value, (list, tuple)):
        return type(value)(_censor(v) for v in value)
    if isinstance(value, Mapping):
        return {
            k: "********" if isinstance(k, str) and v and _SECRET_NAME.search(k) else _censor(v)
            for k, v in value.items()
        }
    return value


def _first_env(names: tuple[str, ...]) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def _import_module(name: str) -> Any:
    """Import ``name`` with the working directory on ``sys.path``, as Celery does."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    finally:
        if added:
            try:
                sys.path.remove(cwd)
            except ValueError:
                pass


def _import_object(path: str) -> Any:
    """Resolve ``'pkg.module'``, ``'pkg.module:attr'`` or ``'pkg.module.attr'``."""
    module_name, colon, attr = path.partition(":")
    if not colon:
        try:
            return _import_module(path)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if "." not in path or not (path == missing or path.startswith(missing + ".")):
                raise
            module_name, _, attr = path.rpartition(".")
    obj = _import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"{module_name!r} has no attribute {attr!r} (from {path!r})",
                              name=module_name) from None
    return obj


def _source_pairs(obj: Any) -> list[tuple[str, Any, bool]]:
    """``(name, value, from_attributes)`` for every candidate setting in ``obj``."""
    if isinstance(obj, Settings):
        return [(k, v, False) for k, v in obj.changes().items()]
    if isinstance(obj, Mapping):
        return [(k, v, False) for k, v in obj.items()]
    pairs = []
    for name in dir(obj):
        if name.startswith("_") or not (name.isupper() or name.islower()):
            continue
        try:
            value = getattr(obj, name)
        except Exception:  # a property that fails is not a setting
            continue
        pairs.append((name, value, True))
    return pairs


def _strip_namespace(name: str, prefix: str) -> str | None:
    """Map ``CELERY_BROKER_URL`` to ``broker_url`` for ``prefix='CELERY_'``; None: skip."""
    if not isinstance(name, str) or not name.upper().startswith(prefix):
        return None
    rest = name[len(prefix):]
    if not rest:
        return None
    if rest.lower() in SETTINGS:
        return rest.lower()
    if rest.upper() in _ALIASES:  # CELERY_CELERYD_CONCURRENCY
        return rest.upper()
    if name.upper() in _ALIASES:  # CELERY_ALWAYS_EAGER, CELERY_DEFAULT_QUEUE
        return name.upper()
    return rest.lower()


class Settings(MutableMapping[str, Any]):
    """The configuration of one app (``app.conf``): defaults plus the user's values.

    Settings are read and written as items or attributes, under their new or
    old names. Every known setting always has a value (its default until set),
    so ``len``, iteration and ``in`` include defaults; deleting a known setting
    restores its default. Unknown names are stored too, with one
    ``UnknownSettingWarning`` per name (upper-case ones only when they look like a
    task-queue setting: see ``_reported_unknown``).

    Args:
        values: Initial values, as for ``update``.
        **kwargs: More initial values.
    """

    __slots__ = ("_data", "_changed", "_warned")
    _data: dict[Any, Any]
    _changed: dict[Any, None]
    _warned: set[str]

    def __init__(self, values: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        object.__setattr__(self, "_data", _fresh_defaults())
        object.__setattr__(self, "_changed", {})
        object.__setattr__(self, "_warned", set())
        if values is not None or kwargs:
            self.update(values, **kwargs)

    # -- mapping protocol ---------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            new = _ALIASES.get(key) if isinstance(key, str) else None
            if new is None:
                raise
            return self._data[new]

    def __setitem__(self, key: str, value: Any) -> None:
        self._set(key, value, stacklevel=3)

    def __delitem__(self, key: str) -> None:
        key = canonical_name(key) if isinstance(key, str) else key
        if key in SETTINGS:
            self._data[key] = _copy_value(SETTINGS[key].default)
        else:
            del self._data[key]
        self._changed.pop(key, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        if key in self._data:
            return True
        return isinstance(key, str) and _ALIASES.get(key) in self._data

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key`` (new or old name), or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    def setdefault(self, key: str, default: Any = None) -> Any:
        """Set ``key`` to ``default`` unless the user already set it; return its value.

        Unlike a plain mapping, a known setting still at its table default counts
        as not set, so ``app.add_defaults`` can fill it.
        """
        name = canonical_name(key) if isinstance(key, str) else key
        if name in self._changed or (name in self._data and name not in SETTINGS):
            return self._data[name]
        self._set(key, default, stacklevel=3)
        return self._data[name]

    def clear(self) -> None:
        """Forget every user value: known settings go back to their defaults."""
        self._data.clear()
        self._data.update(_fresh_defaults())
        self._changed.clear()

    def update(self, mapping: Any = None, /, **kwargs: Any) -> None:
        """Set many values; old and new names may be mixed, and the new name wins.

        Args:
            mapping: A mapping, or an iterable of ``(name, value)`` pairs.
            **kwargs: More values.
        """
        pairs: list[tuple[Any, Any]] = []
        if mapping is not None:
            pairs.extend(mapping.items() if isinstance(mapping, Mapping) else mapping)
        pairs.extend(kwargs.items())
        self._apply(pairs, stacklevel=4)

    # -- attribute access ---------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._data[name]
        except KeyError:
            pass
        new = _ALIASES.get(name)
        if new is not None:
            return self._data[new]
        raise AttributeError(f"{_unknown_message(name)} (no such setting)")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in Settings.__slots__:
            object.__setattr__(self, name, value)
        else:
            self._set(name, value, stacklevel=3)

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | {k for k in self._data if isinstance(k, str)})

    # -- copying and pickling -----------------------------------------------------

    def copy(self) -> Settings:
        """Return an independent copy: changing one never changes the other."""
        new = Settings.__new__(Settings)
        object.__setattr__(new, "_data", {k: _copy_value(v) for k, v in self._data.items()})
        object.__setattr__(new, "_changed", dict(self._changed))
        object.__setattr__(new, "_warned", set(self._warned))
        return new

    __copy__ = copy

    def __getstate__(self) -> dict[str, Any]:
        return {"changes": self.changes(), "warned": set(self._warned)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "_data", _fresh_defaults())
        object.__setattr__(self, "_changed", dict.fromkeys(state["changes"]))
        object.__setattr__(self, "_warned", set(state["warned"]))
        self._data.update(state["changes"])

    def __repr__(self) -> str:
        return f"<Settings: {len(self._changed)} changed of {len(self._data)}>"

    # -- loading ------------------------------------------------------------------

    def config_from_object(
        self, obj: Any, namespace: str | None = None, silent: bool = False
    ) -> bool:
        """Load settings from a module, class, object or mapping.

        Args:
            obj: A module name (``'celeryconfig'``), ``'pkg.module:attr'``,
                ``'pkg.module.attr'``, a module, a class, an instance or a
                mapping. From modules, classes and instances only public
                UPPERCASE or lowercase attributes are taken, and modules,
                functions and classes are skipped unless named like a setting.
            namespace: Take only names starting with ``namespace + '_'``, with
                that prefix removed and the rest lowercased: ``'CELERY'`` maps
                ``CELERY_BROKER_URL`` to ``broker_url`` (the Django pattern).
            silent: Return ``False`` instead of raising when ``obj`` cannot be
                imported.

        Returns:
            ``True`` when settings were loaded, ``False`` when an import failed
            and ``silent`` was set.

        Raises:
            ImportError: ``obj`` names something that cannot be imported.
        """
        if isinstance(obj, str):
            try:
                obj = _import_object(obj)
            except ImportError:
                if silent:
                    return False
                raise
        prefix = None
        if namespace:
            prefix = namespace.upper() if namespace.endswith("_") else namespace.upper() + "_"
        pairs = []
        for name, value, from_attributes in _source_pairs(obj):
            if prefix is not None:
                mapped = _strip_namespace(name, prefix)
                if mapped is None:
                    continue
                name = mapped
            if (
                from_attributes
                and isinstance(value, _CODE_TYPES)
                and (isinstance(value, types.ModuleType) or canonical_name(name) not in SETTINGS)
            ):
                continue
            pairs.append((name, value))
        self._apply(pairs)
        return True

    def config_from_envvar(self, variable_name: str, silent: bool = False) -> bool:
        """Load settings from the module named by an environment variable.

        Args:
            variable_name: The environment variable holding a module name.
            silent: Return ``False`` instead of raising when the variable is
                unset or the module cannot be imported.

        Returns:
            Whether settings were loaded.

        Raises:
            ImproperlyConfigured: The variable is not set.
            ImportError: The module cannot be imported.
        """
        module_name = os.environ.get(variable_name)
        if not module_name:
            if silent:
                return False
            from .exceptions import ImproperlyConfigured

            raise ImproperlyConfigured(
                f"the environment variable {variable_name!r} is not set; it should name "
                "the configuration module to load (for example 'celeryconfig')"
            )
        return self.config_from_object(module_name, silent=silent)

    # -- resolved values ----------------------------------------------------------

    def resolved_broker_url(self) -> str | None:
        """The broker URL in force: ``$CELERIAC_BROKER_URL``, ``$CELERY_BROKER_URL``, then conf.

        The environment is read at each call. ``None`` means nothing is configured
        (the app then uses its embedded default).
        """
        return _first_env(_BROKER_ENV) or self._data.get("broker_url")

    def resolved_broker_read_url(self) -> str | None:
        """The broker URL for consuming: env, ``broker_read_url``, then the broker URL."""
        return (
            _first_env(("CELERIAC_BROKER_READ_URL", "CELERY_BROKER_READ_URL"))
            or self._data.get("broker_read_url")
            or self.resolved_broker_url()
        )

    def resolved_broker_write_url(self) -> str | None:
        """The broker URL for publishing: env, ``broker_write_url``, then the broker URL."""
        return (
            _first_env(("CELERIAC_BROKER_WRITE_URL", "CELERY_BROKER_WRITE_URL"))
            or self._data.get("broker_write_url")
            or self.resolved_broker_url()
        )

    def resolved_result_backend(self) -> str | None:
        """The result backend in force: ``$CELERIAC_RESULT_BACKEND``,
        ``$CELERY_RESULT_BACKEND``, then conf, else ``None``. Read at each call."""
        return _first_env(_BACKEND_ENV) or self._data.get("result_backend")

    # -- inspection ---------------------------------------------------------------

    def changes(self) -> dict[str, Any]:
        """Return the values the user set (under their new names), without defaults."""
        return {key: self._data[key] for key in self._changed}

    def value_set_for(self, key: str) -> bool:
        """Return whether the user set ``key`` (under any of its names)."""
        return canonical_name(key) in self._changed

    def table(self, with_defaults: bool = False, censored: bool = True) -> dict[str, Any]:
        """Return the settings as a plain dict, for display (``inspect conf``, reports).

        Args:
            with_defaults: Include settings the user did not set.
            censored: Mask passwords in URLs and values of secret-looking names.

        Returns:
            Public (not ``_``-prefixed) settings by name.
        """
        source = self._data if with_defaults else self.changes()
        out = {k: v for k, v in source.items() if isinstance(k, str) and not k.startswith("_")}
        return _censor(out) if censored else out

    # -- internals ----------------------------------------------------------------

    def _set(self, key: Any, value: Any, stacklevel: int) -> None:
        if isinstance(key, str):
            given = key
            if key not in SETTINGS:
                key = _ALIASES.get(key, key)
                if (key not in SETTINGS and not key.startswith("_") and key not in self._warned
                        and _reported_unknown(key, value, self._data)):
                    self._warned.add(key)
                    warnings.warn(_unknown_message(key), UnknownSettingWarning,
                                  stacklevel=stacklevel)
            if key in _ONE_OR_MANY and isinstance(value, str):
                value = [value]
            setting = SETTINGS.get(key)
            if setting is not None and setting.ignored:
                _warn_ignored(setting, given, value, stacklevel + 1)
        self._data[key] = value
        self._changed[key] = None

    def _apply(self, pairs: Iterable[tuple[Any, Any]], stacklevel: int = 4) -> None:
        """Set ``pairs``, old names first so that a new name given too wins."""
        old: list[tuple[Any, Any]] = []
        new: list[tuple[Any, Any]] = []
        for key, value in pairs:
            is_old = isinstance(key, str) and key not in SETTINGS and key in _ALIASES
            (old if is_old else new).append((key, value))
        for key, value in old + new:
            self._set(key, value, stacklevel=stacklevel)
