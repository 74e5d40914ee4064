"""Server-rendered pages: search, exposure, the two maps, nodes and cells (with the experts'
forms), uploads. Thin: every read goes through `archive.selectors`, every change through the
quality services, and every image is rendered once into the figure cache."""
from __future__ import annotations

import random

import numpy as np
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from archive import selectors
from archive.api.filters import ExposureFilter
from archive.models import (MIXED_LABEL, QUALITY_LABELS, CellAssignment, Exposure, ExposureVector, ModelVersion,
                            PrototypeFlag)
from archive.services import coverage, quality, versions
from recommender import services, uploads
from config import throttling

from . import figures
from .forms import CellLabelForm, NodeFlagForm, UploadForm

PAGE_SIZE = 25
SIMILAR_K = 9
SIMILAR_CHOICE_NAMES = {"desom2": "as DESOM-2 sees it", "histo": "by histo-vector"}
MEMBERS_PER_PAGE = 9
NODE_EXPOSURES_K = 12

# Colours of the DESOM-2 map by label (the paper's Figure 10 uses blue for Good, red for RBT).
LABEL_COLOURS = {"Good": "#4f7fd1", "RBT": "#d8413a", "BT": "#f08a3c", "B-Seeing": "#8c5bb8",
                 "BGP": "#e5c22f", "bad focus": "#3aa58d", "low exposure": "#8fb84a"}
EXTRA_COLOURS = ["#c05891", "#6c8596", "#a5773b", "#4fb3c9", "#9b9b2f"]


def _not_yet(request, what: str):
    return render(request, "pages/not_yet.html", {"what": what}, status=200)


def _require_staff(request):
    if not selectors.is_staff(request.user):
        raise PermissionDenied("only staff may change labels and flags")


def _png_response(path, public: bool = True):
    response = FileResponse(open(path, "rb"), content_type="image/png")
    response["Cache-Control"] = "public, max-age=86400" if public else "private, max-age=3600"
    return response


def label_colours(labels) -> dict[str, str]:
    colours, extra = {}, iter(EXTRA_COLOURS * 10)
    for label in sorted(set(labels)):
        colours[label] = LABEL_COLOURS.get(label) or next(extra)
    return colours


# --- search ---------------------------------------------------------------------------------

def search(request):
    """The archive's exposures under the same filters as the API, a page at a time, with each
    row's quality verdict computed for the page in bulk."""
    visible = selectors.visible_exposures(request.user)
    params = request.GET.copy()
    params.pop("page", None)
    filterset = ExposureFilter(params, queryset=visible)
    valid = filterset.is_valid()
    queryset = filterset.qs if valid else visible.none()
    paginator = Paginator(queryset.order_by("expnum"), PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    rows = list(page.object_list)
    verdicts = quality.quality_verdicts(rows)
    active = versions.active_version(ModelVersion.DESOM1)
    query = params.urlencode()
    band = (request.GET.get("band") or "").strip().lower()
    return render(request, "pages/search.html", {
        "form": filterset.form, "valid": valid, "page": page, "rows": list(zip(rows, verdicts)),
        "query": query, "no_model": active is None, "labels": QUALITY_LABELS,
        "flags": PrototypeFlag.objects.filter(is_active=True, model_version=active).values_list("name", flat=True)
        if active else [],
        "coverage_band": band if band in coverage.BANDS else None, "coverage_bands": coverage.BANDS,
    })


# --- one exposure ---------------------------------------------------------------------------

def _vector(exposure, desom1):
    if desom1 is None:
        return None
    row = ExposureVector.objects.filter(exposure=exposure, model_version=desom1).only("histo").first()
    return None if row is None else row.histo_array


def exposure_detail(request, pk):
    exposure = selectors.visible_exposure_or_404(request.user, pk)
    verdict = quality.quality_verdicts([exposure])[0]
    desom1 = versions.active_version(ModelVersion.DESOM1)
    histo = _vector(exposure, desom1)
    similar, similar_error, similar_by = [], "", ""
    asked = request.GET.get("like") or None
    if asked not in (None, *services.PAGE_SIMILAR_INDEXES):
        similar_error = f"'like' must be one of {', '.join(services.PAGE_SIMILAR_INDEXES)}"
    elif desom1 is not None and exposure.is_science:
        try:
            similar_by, similar = services.most_alike(exposure, k=SIMILAR_K, index=asked, user=request.user)
        except services.SearchError as exc:
            similar_by, similar_error = asked or "", str(exc)
    similar_verdicts = quality.quality_verdicts([m.exposure for m in similar]) if similar else []
    return render(request, "pages/exposure.html", {
        "exposure": exposure, "verdict": verdict, "desom1": desom1, "has_vector": histo is not None,
        "top_nodes": _top_nodes(histo, desom1) if histo is not None else [],
        "similar": list(zip(similar, similar_verdicts)), "similar_error": similar_error, "similar_by": similar_by,
        "similar_choices": [(name, SIMILAR_CHOICE_NAMES[name]) for name in services.PAGE_SIMILAR_INDEXES],
        "probabilities": sorted(verdict.probabilities.items(), key=lambda kv: -kv[1]),
    })


def _top_nodes(histo, desom1, n: int = 5):
    total = float(histo.sum())
    if total <= 0:
        return []
    cols = desom1.map_shape[1]
    order = np.argsort(histo)[::-1][:n]
    return [{"node": int(k), "row": int(k) // cols, "col": int(k) % cols, "share": float(histo[k]) / total}
            for k in order if histo[k] > 0]


def _exposure_figure(request, pk, draw):
    exposure = selectors.visible_exposure_or_404(request.user, pk)
    desom1 = versions.active_version(ModelVersion.DESOM1)
    histo = _vector(exposure, desom1)
    if histo is None:
        raise Http404("this exposure has no histo-vector under the active DESOM-1")
    return _png_response(draw(exposure, desom1, histo), public=exposure.is_public)


def density_png(request, pk):
    return _exposure_figure(request, pk, figures.density_map)


def histo_png(request, pk):
    return _exposure_figure(request, pk, figures.histo_plot)


def download_confirm(request, pk):
    """The no-JavaScript step before a download: the exposure's warnings, then the real link."""
    exposure = selectors.visible_exposure_or_404(request.user, pk)
    verdict = quality.quality_verdicts([exposure])[0]
    return render(request, "pages/download_confirm.html", {"exposure": exposure, "verdict": verdict})


# --- DESOM-1 map and nodes ------------------------------------------------------------------

def desom1_map(request):
    desom1 = versions.active_version(ModelVersion.DESOM1)
    if desom1 is None:
        return _not_yet(request, "DESOM-1 map")
    rows, cols = desom1.map_shape
    stats = quality.node_statistics(desom1, exposures=selectors.visible_exposures(request.user))
    flagged = {}
    for flag in PrototypeFlag.objects.filter(model_version=desom1, is_active=True):
        for node in flag.nodes:
            flagged.setdefault(int(node), []).append(flag.name)
    share = stats.get("source_share")
    nodes = [{"node": k, "row": k // cols, "col": k % cols,
              "x": 0 if cols == 1 else 100.0 * (k % cols) / (cols - 1),
              "y": 0 if rows == 1 else 100.0 * (k // cols) / (rows - 1),
              "share": float(share[k]) if share is not None and len(share) else 0.0,
              "flags": flagged.get(k, [])} for k in range(rows * cols)]
    return render(request, "pages/desom1_map.html", {"desom1": desom1, "rows": rows, "cols": cols, "nodes": nodes,
                                                     "exposures": stats.get("exposures", 0)})


def desom1_mosaic_png(request):
    desom1 = versions.active_version(ModelVersion.DESOM1)
    if desom1 is None:
        raise Http404("no DESOM-1 yet")
    return _png_response(figures.prototype_mosaic(desom1))


def _node_or_404(node: int):
    desom1 = versions.active_version(ModelVersion.DESOM1)
    if desom1 is None:
        return None
    rows, cols = desom1.map_shape
    if not 0 <= node < rows * cols:
        raise Http404(f"node {node} is outside the {rows}x{cols} DESOM-1 map")
    return desom1


def node_png(request, node):
    desom1 = _node_or_404(node)
    if desom1 is None:
        raise Http404("no DESOM-1 yet")
    return _png_response(figures.prototype_image(desom1, node))


@require_http_methods(["GET", "POST"])
def node_detail(request, node):
    desom1 = _node_or_404(node)
    if desom1 is None:
        return _not_yet(request, "DESOM-1 node")
    rows, cols = desom1.map_shape
    form = None
    if request.method == "POST":
        _require_staff(request)
        form = NodeFlagForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                flag = quality.save_flag(data["name"], data["nodes"], data["threshold"], mode=data["mode"],
                                         description=data["description"], user=request.user, desom1=desom1)
            except quality.QualityError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Flag '{flag.name}' saved on nodes {flag.nodes}: "
                                          f"{flag.exposures.count()} exposures carry it now.")
                return redirect(reverse("pages:node", args=[node]))
    if form is None and selectors.is_staff(request.user):
        form = NodeFlagForm(initial={"name": f"node {node}", "nodes": str(node), "threshold": 0.2})
    stats = quality.node_statistics(desom1, exposures=selectors.visible_exposures(request.user))
    shapes = figures.prototype_shapes(desom1)
    statistics = {key: float(stats[key][node]) for key in ("source_share", "presence", "p95_share", "concentration")
                  if key in stats and len(stats[key])}
    try:
        richest = services.by_prototypes([node], k=NODE_EXPOSURES_K, user=request.user)
    except services.SearchError:
        richest = []
    richest_verdicts = quality.quality_verdicts([m.exposure for m in richest]) if richest else []
    flags = [f for f in PrototypeFlag.objects.filter(model_version=desom1) if node in [int(n) for n in f.nodes]]
    return render(request, "pages/node.html", {
        "desom1": desom1, "node": node, "row": node // cols, "col": node % cols, "statistics": statistics,
        "exposures_count": stats.get("exposures", 0),
        "elongation": float(shapes["elongation"][node]), "central_hole": float(shapes["central_hole"][node]),
        "richest": list(zip(richest, richest_verdicts)), "flags": flags, "form": form,
        "neighbours": _neighbours(node, rows, cols),
    })


def _neighbours(node, rows, cols):
    r, c = divmod(node, cols)
    out = []
    for dr, dc, name in ((-1, 0, "up"), (1, 0, "down"), (0, -1, "left"), (0, 1, "right")):
        if 0 <= r + dr < rows and 0 <= c + dc < cols:
            out.append({"node": (r + dr) * cols + c + dc, "name": name})
    return out


# --- DESOM-2 map and cells ------------------------------------------------------------------

def _member_counts(request, desom2) -> dict[int, int]:
    """Members per cell among the exposures this user may see (proprietary ones are not counted)."""
    visible = selectors.visible_exposures(request.user).values("pk")
    return dict(CellAssignment.objects.filter(model_version=desom2, exposure__in=visible)
                .values("cell").annotate(n=Count("id")).values_list("cell", "n"))


def desom2_map(request):
    desom2 = versions.active_version(ModelVersion.DESOM2)
    if desom2 is None:
        return _not_yet(request, "DESOM-2 map")
    rows, cols = desom2.map_shape
    labels = quality.current_cell_labels(desom2)
    counts = _member_counts(request, desom2)
    named = {cell: row.label for cell, row in labels.items() if row.label != MIXED_LABEL}
    colours = label_colours(named.values())
    cells = [{"cell": k, "row": k // cols, "col": k % cols, "count": counts.get(k, 0),
              "label": labels[k].label if k in labels else "", "colour": colours.get(named.get(k), "#ffffff")}
             for k in range(rows * cols)]
    legend = sorted(colours.items())
    return render(request, "pages/desom2_map.html", {"desom2": desom2, "rows": rows, "cols": cols, "cells": cells,
                                                     "legend": legend, "total": sum(counts.values()),
                                                     "labelled": len(named)})


@require_http_methods(["GET", "POST"])
def cell_detail(request, cell):
    desom2 = versions.active_version(ModelVersion.DESOM2)
    if desom2 is None:
        return _not_yet(request, "DESOM-2 cell")
    rows, cols = desom2.map_shape
    if not 0 <= cell < rows * cols:
        raise Http404(f"cell {cell} is outside the {rows}x{cols} DESOM-2 map")
    form = None
    if request.method == "POST":
        _require_staff(request)
        form = CellLabelForm(request.POST)
        if form.is_valid():
            try:
                row = quality.label_cell(cell, form.cleaned_data["chosen"], user=request.user,
                                         note=form.cleaned_data["note"], desom2=desom2)
            except quality.QualityError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Cell {cell} labelled '{row.label}'.")
                return redirect(reverse("pages:cell", args=[cell]))
    if form is None and selectors.is_staff(request.user):
        form = CellLabelForm()
    members = quality.in_cells(selectors.visible_exposures(request.user), [cell], desom2)
    ids = sorted(members.values_list("pk", flat=True))
    # Nine at random, reproducibly: the seed travels in the "more" link so page 2 is the next nine.
    try:
        seed = int(request.GET.get("seed", ""))
    except ValueError:
        seed = random.randrange(1, 10 ** 6)
    try:
        page = max(1, int(request.GET.get("page", 1)))
    except ValueError:
        page = 1
    random.Random(seed).shuffle(ids)
    shown_ids = ids[(page - 1) * MEMBERS_PER_PAGE: page * MEMBERS_PER_PAGE]
    by_id = {e.pk: e for e in Exposure.objects.filter(pk__in=shown_ids)}
    shown = [by_id[i] for i in shown_ids]
    verdicts = quality.quality_verdicts(shown)
    history = quality.label_history(cell, desom2)
    current = history[0] if history else None
    classes, probabilities = quality.label_probabilities(desom2)
    guess = []
    if len(classes) and probabilities is not None and len(probabilities):
        guess = sorted(((c, float(p)) for c, p in zip(classes, probabilities[cell]) if p > 0), key=lambda kv: -kv[1])
    return render(request, "pages/cell.html", {
        "desom2": desom2, "cell": cell, "row": cell // cols, "col": cell % cols, "n_members": len(ids),
        "members": list(zip(shown, verdicts)), "seed": seed, "page": page,
        "has_more": page * MEMBERS_PER_PAGE < len(ids), "history": history, "current": current,
        "guess": guess, "form": form, "search_url": reverse("pages:search") + f"?cell={cell}",
    })


# --- uploads --------------------------------------------------------------------------------

_login = auth_views.LoginView.as_view(template_name="registration/login.html", next_page="/")


def login(request):
    """Django's login page, with the password checks rate-limited per client address (the same
    budget as the token endpoint's)."""
    if request.method == "POST":
        refused = throttling.check(request, throttling.LoginThrottle)
        if refused is not None:
            return refused
    return _login(request)


@require_http_methods(["GET", "POST"])
def upload(request):
    """Find exposures like an uploaded source cutout or a whole exposure. Throttled with the
    upload API (one budget per client, config.throttling), bounded like it (the same service
    path), and the file is looked at only after the form's cheap fields are valid."""
    if versions.active_version(ModelVersion.DESOM1) is None:
        return _not_yet(request, "search by upload")
    if request.method == "POST":
        refused = throttling.check(request, throttling.UploadThrottle)
        if refused is not None:
            return refused
    info, matches, error = None, [], ""
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        upload_file = data["file"]
        try:
            if data["kind"] == UploadForm.CUTOUT:
                info, matches = uploads.search_by_cutout(upload_file, k=data["k"], user=request.user)
                info = {"kind": "cutout", **info}
            else:
                # as DESOM-2 places it where the archive has one that can (services.upload_index)
                info, matches = uploads.search_by_exposure(upload_file, k=data["k"], user=request.user, index=None)
                info = {"kind": "exposure", **info}
        except services.SearchError as exc:
            # An exposure's messages speak of "the upload"; the page names the file.
            error = str(exc) if data["kind"] == UploadForm.CUTOUT else f"{upload_file.name}: {exc}"
    elif request.method == "POST":
        error = "; ".join(str(e) for errors in form.errors.values() for e in errors)
    verdicts = quality.quality_verdicts([m.exposure for m in matches]) if matches else []
    return render(request, "pages/upload.html", {
        "form": form, "info": info, "matches": list(zip(matches, verdicts)), "error": error,
        "cutout_limit": uploads.CUTOUT_MAX_BYTES, "exposure_limit": settings.ARCHIVE_MAX_UPLOAD_BYTES,
    }, status=400 if error else 200)
