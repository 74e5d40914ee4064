"""The API's pagination: clients choose the page size up to a hard ceiling, so one request can
never ask the database (and the quality verdicts) for an unbounded page; and the total is counted
only up to a ceiling, since an exact count of a broad filter over a million exposures reads every
matching row (937 ms for label + band at 1M, benchmarks/bench_million.py) to fetch 50 of them."""
from django.conf import settings
from django.core.paginator import Paginator
from django.utils.functional import cached_property
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
DEFAULT_COUNT_CAP = 10_000


def count_cap() -> int:
    return int(getattr(settings, "API_COUNT_CAP", DEFAULT_COUNT_CAP))


class CappedCountPaginator(Paginator):
    """A Paginator whose count stops at count_cap(): the query counts at most cap + 1 rows
    (COUNT over a LIMITed subquery), and `count_exact` says whether the total is the real one.
    Pages past the cap are out of range: a selection that large is narrowed by its filters, or
    fetched through TAP or the manifest."""

    @cached_property
    def count(self) -> int:
        cap = count_cap()
        # Without its ORDER BY: how many of the first cap + 1 rows exist does not depend on their
        # order, and an ordered LIMIT makes PostgreSQL sort every match first (675 ms for a
        # label and a band at 1M) where an unordered one stops at the cap, from an index alone.
        rows = self.object_list.order_by() if hasattr(self.object_list, "order_by") else self.object_list
        counted = rows[:cap + 1].count()
        self.count_exact = counted <= cap
        return min(counted, cap)


class ArchivePagination(PageNumberPagination):
    page_size = DEFAULT_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE
    django_paginator_class = CappedCountPaginator

    def get_page_size(self, request):
        """page_size, when given, is a whole number from 1; anything else (-3, 0, "abc") is refused,
        where DRF would fall back to the default without a word. Above MAX_PAGE_SIZE it is served
        at that size, the pages' `next` links going on from there (as MAXREC in the VO)."""
        text = request.query_params.get(self.page_size_query_param)
        if text is None:
            return self.page_size
        text = text.strip()
        if not (text.isascii() and text.isdigit()) or int(text) < 1:
            raise ValidationError({self.page_size_query_param: [
                f"page_size must be a whole number from 1 (at most {self.max_page_size} are served), not {text!r}"]})
        return min(int(text), self.max_page_size)

    def get_paginated_response(self, data):
        paginator = self.page.paginator
        return Response({"count": paginator.count, "count_exact": paginator.count_exact,
                         "next": self.get_next_link(), "previous": self.get_previous_link(), "results": data})

    def get_paginated_response_schema(self, schema):
        schema = super().get_paginated_response_schema(schema)
        schema["properties"]["count_exact"] = {
            "type": "boolean",
            "description": f"false when more rows match than the count ceiling (API_COUNT_CAP, default "
                           f"{DEFAULT_COUNT_CAP}); count is then that ceiling and later pages are not served"}
        return schema
