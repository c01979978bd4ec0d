"""Task results in the Django database (django-celery-results' job).

Add ``'celeriac.contrib.django.results'`` to ``INSTALLED_APPS``, run
``python manage.py migrate``, and set ``CELERY_RESULT_BACKEND = 'django-db'`` (or
``'django-cache'`` for Django's cache, which needs no app). The models keep
django-celery-results' field names, so queries on ``TaskResult`` carry over.
"""
