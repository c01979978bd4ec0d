"""Django integration (``pip install 'celeriac[django]'``).

What Celery's Django fix-up, django-celery-results and django-celery-beat give, in one
package:

- ``fixup``: installed by the app when ``DJANGO_SETTINGS_MODULE`` is set (or the app is
  configured from ``django.conf:settings``): ``django.setup()`` before task modules are
  imported, ``autodiscover_tasks()`` over the installed Django apps, database
  connections closed before the pool forks and around each task;
- ``task.DjangoTask``: Celery's name for a task class with ``delay_on_commit()`` and
  ``apply_async_on_commit()`` (every celeriac task has both);
- ``celeriac.contrib.django.results``: a Django app; ``result_backend = 'django-db'``
  keeps results in its ``TaskResult``/``GroupResult`` models (admin pages included),
  ``'django-cache'`` in Django's cache;
- ``celeriac.contrib.django.beat``: a Django app; ``celeriac -A proj beat -S django``
  reads periodic tasks from its models, edited in the Django admin.

Nothing here imports Django until it is used.
"""
