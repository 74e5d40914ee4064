from django.core.management.base import BaseCommand, CommandError

from recommender import services
from recommender.indexes import index_kinds


class Command(BaseCommand):
    help = ("Check the FAISS indexes of the active DESOM-1 (one for each registered index kind) against "
            "the database and rebuild what is missing, stale or corrupt.")

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="delete the index files first")
        parser.add_argument("--if-model", action="store_true",
                            help="with no active DESOM-1, say so and succeed (for deployment scripts)")

    def handle(self, *args, **opts):
        from archive.models import ModelVersion
        from archive.services import versions

        desom1 = versions.active_version(ModelVersion.DESOM1)
        if desom1 is None and opts["if_model"]:
            self.stdout.write("no active DESOM-1 yet: no index to build")
            return
        if desom1 is None:
            raise CommandError("no active DESOM-1: train one first (manage.py train_desom1)")
        if opts["force"]:
            for kind in index_kinds():
                services.store().path_for(desom1.version_id, kind.name).unlink(missing_ok=True)
            services.reset_store()
        from tqdm import tqdm

        sizes = {}
        for kind in tqdm(index_kinds(), desc="indexes", disable=opts["verbosity"] == 0):
            sizes[kind.name] = len(services.get_index(kind, desom1, verify=True))
        services.flush_indexes()
        for kind, size in sizes.items():
            self.stdout.write(f"{kind} index of DESOM-1 {desom1.version_id}: {size} exposures "
                              f"({services.store().path_for(desom1.version_id, kind)})")
