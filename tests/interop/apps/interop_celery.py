"""The Celery app of the interop tests (``celery -A interop_celery worker``)."""

import interop_shared as shared
from celery import Celery

app = Celery("interop_celery", broker=shared.BROKER_URL, backend=shared.RESULT_BACKEND)
app.conf.broker_connection_retry_on_startup = True
app.conf.worker_hijack_root_logger = True

add = app.task(name="interop.add")(shared.add)
echo = app.task(name="interop.echo")(shared.echo)
fail = app.task(name="interop.fail")(shared.fail)
fail_custom = app.task(name="interop.fail_custom")(shared.fail_custom)
progress = app.task(name="interop.progress", bind=True)(shared.progress)
retry_once = app.task(name="interop.retry_once", bind=True)(shared.retry_once)
whoami = app.task(name="interop.whoami", bind=True)(shared.whoami)
noresult = app.task(name="interop.noresult", bind=True, ignore_result=True)(shared.noresult)
record = app.task(name="interop.record", bind=True)(shared.record)
order = app.task(name="interop.order")(shared.order)
errback = app.task(name="interop.errback")(shared.errback)
errback_by_id = app.task(name="interop.errback_by_id")(shared.errback_by_id)
