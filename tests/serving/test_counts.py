"""Every count shown to a user counts only what that user may see (flags, maps, nodes, model
and ingest summaries, page totals), and experts' user names are shown to staff only."""
import re

from django.test import Client

from archive.models import ExposureVector, ModelVersion
from archive.services import quality

from tests.factories import PASSWORD
from tests import factories


def clients(users):
    out = {"anonymous": Client()}
    for name in ("pi", "staff"):
        out[name] = Client()
        assert out[name].login(username=name, password=PASSWORD)
    return out


def test_counts_leave_out_proprietary_exposures_for_those_not_entitled(secret_archive):
    secret, users = secret_archive
    desom1 = ModelVersion.objects.get(kind="desom1", is_active=True)
    n_vectors = ExposureVector.objects.filter(model_version=desom1, exposure__is_science=True).count()
    histo = ExposureVector.objects.get(model_version=desom1, exposure=secret).histo_array
    node = int(histo.argmax())
    quality.save_flag("crowded here", [node], 1e-6)    # every exposure with a source there
    carriers = quality.recompute_flags(desom1=desom1)["crowded here"]
    assert carriers >= 1
    for who, client in clients(users).items():
        hidden = 0 if who in ("pi", "staff") else 1
        flags = client.get("/api/flags/").json()["results"]
        assert next(f for f in flags if f["name"] == "crowded here")["n_exposures"] == carriers - hidden, who
        page = client.get("/maps/desom1/").content.decode()
        assert f"{n_vectors - hidden} exposures have histo-vectors" in page, who
        node_page = client.get(f"/maps/desom1/nodes/{node}/").content.decode()
        assert f"share of the {n_vectors - hidden} exposures" in node_page, who
        total = client.get("/api/exposures/").json()["count"]
        assert re.search(rf"\b{total} exposures?\b", client.get("/").content.decode()), who
        assert client.get("/maps/desom2/").status_code == 200


def test_model_and_ingest_summaries_hide_counts_from_the_public(secret_archive):
    secret, users = secret_archive
    # What train_desom1/train_desom2 record (the fixture's checkpoints carry no metrics).
    ModelVersion.objects.filter(kind="desom2").update(metrics={"train_exposures": 33, "train_seconds": 1.5,
                                                                "normaliser": "hellinger"})
    ModelVersion.objects.filter(kind="desom1").update(metrics={"exposures": 33, "train_cutouts": 900,
                                                                "quantization_error": 0.1})
    answers = {who: (c.get("/api/models/").json()["results"], c.get("/api/ingest-runs/").json()["results"])
               for who, c in clients(users).items()}
    staff_models, staff_runs = answers["staff"]
    assert {m["kind"]: m["metrics"].get("train_exposures", m["metrics"].get("exposures")) for m in staff_models} \
        == {"desom1": 33, "desom2": 33}
    assert staff_runs[0]["n_ingested"] > 0
    for who in ("anonymous", "pi"):
        models, runs = answers[who]
        assert {m["kind"]: sorted(m["metrics"]) for m in models} == {
            "desom1": ["quantization_error"], "desom2": ["normaliser", "train_seconds"]}, who
        assert runs[0]["progress"] == 1.0 and "n_ingested" not in runs[0] and "n_files" not in runs[0], who


def test_experts_names_are_shown_to_staff_only(secret_archive):

    secret, users = secret_archive
    desom2 = ModelVersion.objects.get(kind="desom2", is_active=True)
    expert = factories.user("anna_expert", staff=True, password=PASSWORD)
    quality.label_cell(0, "Good", user=expert, desom2=desom2)
    for who, client in clients(users).items():
        history = client.get("/api/desom2/cells/0/").json()["results"]["history"]
        page = client.get("/maps/desom2/cells/0/").content.decode()
        shown = who == "staff"
        assert history[0]["labelled_by"] == ("anna_expert" if shown else None), who
        assert ("anna_expert" in page) is shown, who
        assert shown or "<td>staff</td>" in page, who
