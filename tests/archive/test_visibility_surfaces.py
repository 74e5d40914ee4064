"""One access rule, one answer: every route that shows one exposure answers a proprietary
exposure exactly as it answers one that does not exist, and shows it to those entitled.
Built from rows (tests.factories), no trained model needed."""
import datetime as dt

import pytest
from django.test import Client

from archive.models import Exposure, RunAccess
from tests import factories

FUTURE = dt.date.today() + dt.timedelta(days=365)
# Pages and files (Django) and the API (DRF) that look one exposure up by its id.
ONE_EXPOSURE_ROUTES = ["/exposures/{pk}/", "/exposures/{pk}/download/", "/exposures/{pk}/download/confirm/",
                       "/exposures/{pk}/preview.png", "/exposures/{pk}/density.png",
                       "/api/exposures/{pk}/similar/"]


@pytest.fixture
def hidden(db):
    return factories.exposure(release_date=FUTURE, runid="26BQ99")


@pytest.mark.parametrize("route", ONE_EXPOSURE_ROUTES)
def test_hidden_exposure_is_answered_like_an_absent_one(hidden, route):
    absent_pk = Exposure.objects.order_by("-pk").first().pk + 1000
    hidden_path, absent_path = route.format(pk=hidden.pk), route.format(pk=absent_pk)
    hidden_answer, absent_answer = Client().get(hidden_path), Client().get(absent_path)
    assert hidden_answer.status_code == absent_answer.status_code == 404
    # The same body but for the path an error page may echo.
    assert hidden_answer.content.replace(hidden_path.encode(), b"") == \
        absent_answer.content.replace(absent_path.encode(), b"")


def test_a_run_member_sees_the_hidden_exposure_page(hidden):
    member = factories.user()
    RunAccess.objects.create(user=member, runid=hidden.runid)
    client = Client()
    client.force_login(member)
    assert client.get(f"/exposures/{hidden.pk}/").status_code == 200
    assert Client().get(f"/exposures/{hidden.pk}/").status_code == 404
