from django.core.management.base import BaseCommand, CommandError

from recommender import services


class Command(BaseCommand):
    help = ("Check the FAISS indexes of the active models (one for each registered index kind: the "
            "DESOM-1 kinds under the active DESOM-1, the DESOM-2 kinds under the active DESOM-2) "
            "against the database and rebuild what is missing, stale or corrupt.")

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
        targets = services.active_index_versions()
        if opts["force"]:
            for name, version in targets.items():
                services.store().path_for(version.version_id, name).unlink(missing_ok=True)
            services.reset_store()
        from tqdm import tqdm

        sizes = {}
        for name, version in tqdm(targets.items(), desc="indexes", disable=opts["verbosity"] == 0):
            try:
                sizes[name] = len(services.get_index(name, version, verify=True))
            except services.SearchError as exc:   # e.g. a DESOM-2 with no cell assigned yet
                self.stdout.write(f"{name} index not built: {exc}")
        services.flush_indexes()
        for name, size in sizes.items():
            version = targets[name]
            model = "DESOM-2" if version.kind == ModelVersion.DESOM2 else "DESOM-1"
            self.stdout.write(f"{name} index of {model} {version.version_id}: {size} exposures "
                              f"({services.store().path_for(version.version_id, name)})")
