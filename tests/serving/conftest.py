"""An archive with one proprietary exposure of run 26BQ99: `pi` is granted the run, `other`
holds another run, `staff` sees everything."""
import datetime as dt

import pytest
from django.contrib.auth import get_user_model

from archive.models import Exposure, RunAccess

RUN = "26BQ99"
PASSWORD = "a long enough password"


@pytest.fixture
def secret_archive(populated_archive):
    science = Exposure.objects.filter(is_science=True).order_by("expnum")
    secret = science[3]
    Exposure.objects.update(release_date=dt.date(2000, 1, 1))
    Exposure.objects.filter(pk=secret.pk).update(release_date=dt.date.today() + dt.timedelta(days=365), runid=RUN)
    secret.refresh_from_db()
    User = get_user_model()
    users = {"staff": User.objects.create_user("staff", password=PASSWORD, is_staff=True),
             "pi": User.objects.create_user("pi", password=PASSWORD),
             "other": User.objects.create_user("other", password=PASSWORD)}
    RunAccess.objects.create(user=users["pi"], runid=RUN)
    RunAccess.objects.create(user=users["other"], runid="26AQ01")
    return secret, users
