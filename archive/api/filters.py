"""Exposure filters for the API and the search page: DESOM-2 cell, label, flag, band, dates,
exposure time and an RA/Dec cone."""
import django_filters

from .. import geometry
from ..models import Exposure
from ..services import quality

MAX_CONE_RADIUS_DEG = 30.0
MAX_DB_INT = 2 ** 63 - 1


class ExposureFilter(django_filters.FilterSet):
    expnum = django_filters.NumberFilter(field_name="expnum", min_value=0, max_value=MAX_DB_INT)
    cell = django_filters.NumberFilter(method="filter_cell", label="DESOM-2 cell (active model)",
                                       min_value=0, max_value=10_000)
    label = django_filters.CharFilter(method="filter_label", label="quality label of the exposure's cell")
    flag = django_filters.CharFilter(method="filter_flag", label="prototype flag name")
    band = django_filters.CharFilter(field_name="band", lookup_expr="iexact")
    object = django_filters.CharFilter(field_name="object_name", lookup_expr="icontains")
    date_from = django_filters.IsoDateTimeFilter(field_name="date_obs", lookup_expr="gte")
    date_to = django_filters.IsoDateTimeFilter(field_name="date_obs", lookup_expr="lte")
    exptime_min = django_filters.NumberFilter(field_name="exptime", lookup_expr="gte", min_value=-1e9, max_value=1e9)
    exptime_max = django_filters.NumberFilter(field_name="exptime", lookup_expr="lte", min_value=-1e9, max_value=1e9)
    is_science = django_filters.BooleanFilter(field_name="is_science")
    status = django_filters.ChoiceFilter(field_name="status", choices=Exposure.STATUS_CHOICES)
    ra = django_filters.NumberFilter(method="filter_cone", label="cone centre RA (deg), with dec and radius: exposures whose footprint meets the circle",
                                     min_value=-360, max_value=720)
    dec = django_filters.NumberFilter(method="filter_cone", label="cone centre Dec (deg)", min_value=-90, max_value=90)
    radius = django_filters.NumberFilter(method="filter_cone", label="cone radius (deg)", min_value=0,
                                         max_value=MAX_CONE_RADIUS_DEG)

    class Meta:
        model = Exposure
        fields = ["runid", "obstype"]

    def filter_cell(self, queryset, name, value):
        return quality.in_cells(queryset, [value])

    def filter_label(self, queryset, name, value):
        return quality.filter_by_quality_label(queryset, [value])

    def filter_flag(self, queryset, name, value):
        return queryset.filter(flags__flag__name__iexact=value.strip(), flags__flag__is_active=True).distinct()

    def filter_cone(self, queryset, name, value):
        # Applied once, when all three are present; the other two calls pass through.
        data = self.form.cleaned_data
        ra, dec, radius = data.get("ra"), data.get("dec"), data.get("radius")
        if name != "radius" or None in (ra, dec, radius):
            return queryset
        return cone(queryset, float(ra), float(dec), float(radius))

    def is_valid(self):
        valid = super().is_valid()
        # PostgreSQL refuses NUL characters in text; they are never meaningful in a filter.
        values = [v for _, vs in self.data.lists() for v in vs] if hasattr(self.data, "lists") else []
        if any("\x00" in str(v) for v in values):
            self.form.add_error(None, "query parameters must not contain NUL characters")
            return False
        if valid:
            data = self.form.cleaned_data
            for name, check in (("label", quality.check_labels), ("flag", quality.check_flags)):
                if data.get(name):
                    try:
                        check([data[name]], name)
                    except quality.UnknownValue as exc:
                        self.form.add_error(name, str(exc))
                        return False
            given = [data.get(k) is not None for k in ("ra", "dec", "radius")]
            if any(given) and not all(given):
                self.form.add_error(None, "a cone search needs ra, dec and radius together")
                return False
            if all(given):
                if not -90 <= data["dec"] <= 90:
                    self.form.add_error("dec", "dec must lie in [-90, 90]")
                if not 0 < data["radius"] <= MAX_CONE_RADIUS_DEG:
                    self.form.add_error("radius", f"radius must lie in (0, {MAX_CONE_RADIUS_DEG}] degrees")
                return not self.form.errors
        return valid


def cone(queryset, ra: float, dec: float, radius: float):
    """Exposures whose footprint meets the circle of `radius` degrees about (ra, dec): the same
    question, and the same answer, as SIA's POS=CIRCLE (archive.geometry)."""
    return geometry.filter_region(queryset, [geometry.Circle(ra % 360.0, dec, radius)])
