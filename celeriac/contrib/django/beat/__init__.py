"""Periodic tasks in the Django database (django-celery-beat's job).

Add ``'celeriac.contrib.django.beat'`` to ``INSTALLED_APPS``, run
``python manage.py migrate``, edit periodic tasks in the Django admin (or with the
models), and run ``celeriac -A proj beat -S django``. Changes are picked up while beat
runs, within ``--max-interval`` (5 s by default). The models keep django-celery-beat's
field names.
"""
