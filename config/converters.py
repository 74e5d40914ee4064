"""URL converters that refuse values the database cannot hold, so an absurd id is a 404,
never an overflow inside the database driver."""
from django.urls import register_converter


class DatabaseIdConverter:
    regex = "[0-9]{1,18}"  # below 2**63: fits a bigint on SQLite and PostgreSQL

    def to_python(self, value):
        return int(value)

    def to_url(self, value):
        return str(int(value))


def register():
    register_converter(DatabaseIdConverter, "dbid")
