"""The database cache's table (throttles and other counters shared by every worker process),
made by `migrate` so a deployment needs no extra step. Nothing is made when CACHE_URL names
another backend; `createcachetable` skips a table that exists."""
from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("archive", "0002_access_tokens")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
