"""The API's pagination: clients choose the page size up to a hard ceiling, so one request can
never ask the database (and the quality verdicts) for an unbounded page."""
from rest_framework.pagination import PageNumberPagination

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class ArchivePagination(PageNumberPagination):
    page_size = DEFAULT_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE
