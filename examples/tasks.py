"""The quickstart's tasks. No broker is configured, so celeriac uses ./celeriac.sqlite3."""

import asyncio

from celeriac import Celery

app = Celery("tasks")


@app.task
def add(x, y):
    return x + y


@app.task
async def fetch_title(url):
    await asyncio.sleep(0.1)  # stands in for an HTTP call
    return f"title of {url}"


@app.task
def divide(x, y):
    return x / y
