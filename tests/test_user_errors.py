"""One user-error base: every error a caller can fix, in the library and the apps, is a
desom.errors.UserError (still a ValueError), and the JSON API answers one that a view lets
through with a 400 in the one error shape, not a 500."""
import pytest
from rest_framework.test import APIRequestFactory

from archive.geometry import GeometryError
from archive.services.quality import QualityError
from archive.services.tokens import TokenError
from config.exceptions import api_exception_handler
from desom.detection import UnknownDetector
from desom.errors import UserError
from recommender.services import SearchError
from recommender.uploads import UploadError
from recommender.vo.datalink import DataLinkError
from recommender.vo.services import SiaError
from recommender.vo.soda import SodaError
from recommender.vo.tap import TapError

USER_ERRORS = [GeometryError, QualityError, TokenError, SearchError, UploadError, DataLinkError, SiaError,
               SodaError, TapError, UnknownDetector]


@pytest.mark.parametrize("error", USER_ERRORS, ids=lambda e: e.__name__)
def test_every_user_facing_error_shares_the_base(error):
    assert issubclass(error, UserError) and issubclass(error, ValueError)


def test_the_api_answers_an_unhandled_user_error_with_400():
    request = APIRequestFactory().get("/api/anything/")
    response = api_exception_handler(QualityError("cell 999 is outside the map"), {"request": request})
    assert response.status_code == 400
    assert response.data["status"] == 400 and response.data["detail"] == "cell 999 is outside the map"
    assert api_exception_handler(RuntimeError("a server fault"), {"request": request}) is None
