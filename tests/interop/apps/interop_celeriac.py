"""The celeriac app of the interop tests (``celeriac -A interop_celeriac worker``)."""

import interop_shared as shared

from celeriac import Celery

app = Celery("interop_celeriac", broker=shared.BROKER_URL, backend=shared.RESULT_BACKEND)
# quick liveness checks, so a killed test worker's messages come back soon
app.conf.worker_heartbeat_interval = 0.5
app.conf.worker_lost_timeout = 3.0

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
