"""The one place that decides which exposures a user may see. Every read path (API, pages,
VO queries, downloads, similar results, cell members, previews) goes through it."""
from __future__ import annotations

from django.db.models import Q, QuerySet
from django.http import Http404
from django.utils import timezone

from .models import Exposure, RunAccess


def is_staff(user) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_staff)


def public_q() -> Q:
    return Q(release_date__isnull=True) | Q(release_date__lte=timezone.now().date())


def visible_exposures(user, queryset: QuerySet | None = None) -> QuerySet:
    """Exposures `user` may see: public ones, all for staff, and the proprietary exposures of
    the runs the user has been granted."""
    queryset = Exposure.objects.all() if queryset is None else queryset
    if is_staff(user):
        return queryset
    if user is not None and user.is_authenticated:
        granted = RunAccess.objects.filter(user=user).values("runid")
        return queryset.filter(public_q() | Q(runid__in=granted))
    return queryset.filter(public_q())


def visible_science_exposures(user) -> QuerySet:
    """What the VO services publish: the visible exposures that are not calibration frames."""
    return visible_exposures(user, Exposure.objects.filter(is_science=True))


def visible_exposure_or_404(user, pk) -> Exposure:
    """The exposure `pk` if `user` may see it. A proprietary exposure gets the same 404 as an
    absent one, so that its existence is not disclosed; DRF answers Django's Http404 as its own."""
    exposure = visible_exposures(user).filter(pk=pk).first()
    if exposure is None:
        raise Http404("no such exposure, or it is still proprietary")
    return exposure
