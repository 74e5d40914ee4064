"""TAP examples (DALI 1.1 section 2.3): the queries this archive is for, as an XHTML document
with RDFa that TOPCAT lists under "Service-provided" examples and taplint runs."""
from __future__ import annotations

from xml.sax.saxutils import escape

# (id, title, what it does, ADQL)
EXAMPLES = [
    ("good-in-cone", "Good exposures in a cone",
     "Exposures whose footprint meets a 2 degree circle and whose DESOM-2 cell is labelled Good.",
     "SELECT obs_id, obs_publisher_did, s_ra, s_dec, t_min, quality_label, label_probability\n"
     "FROM ivoa.obscore\n"
     "WHERE INTERSECTS(s_region, CIRCLE('ICRS', 40.4, -9.6, 2.0)) = 1\n"
     "  AND quality_label = 'Good'"),
    ("flagged-bad-focus", "Exposures flagged bad focus",
     "Exposures whose sources crowd into DESOM-1 prototypes the curators flagged 'bad focus' "
     "(quality_flags lists every flag an exposure carries).",
     "SELECT obs_id, obs_publisher_did, quality_flags, quality_label\n"
     "FROM ivoa.obscore\n"
     "WHERE quality_flags LIKE '%bad focus%'"),
    ("most-like-one", "The exposures most like one",
     "Exposures in the same DESOM-2 cell as a given exposure (the map puts exposures of like content "
     "in one cell); SIA's SIMILAR_TO ranks them by distance.",
     "SELECT other.obs_id, other.obs_publisher_did, other.quality_label, other.desom2_cell\n"
     "FROM ivoa.obscore AS other\n"
     "JOIN ivoa.obscore AS ref ON other.desom2_cell = ref.desom2_cell\n"
     "WHERE ref.obs_id = '3000000' AND other.obs_id <> ref.obs_id"),
    ("labels-by-band", "Quality labels per band",
     "How many exposures carry each quality label, per filter (em_min is the filter's blue edge).",
     "SELECT em_min, quality_label, COUNT(*) AS n\n"
     "FROM ivoa.obscore\n"
     "GROUP BY em_min, quality_label"),
    ("recent-good-r", "Good r-band exposures after a date",
     "Good exposures in r (5.6E-7 m to 6.9E-7 m) taken after MJD 55000, longest first.",
     "SELECT TOP 100 obs_id, t_min, t_exptime, quality_label\n"
     "FROM ivoa.obscore\n"
     "WHERE em_min >= 5.6E-7 AND em_max <= 6.9E-7 AND t_min > 55000 AND quality_label = 'Good'\n"
     "ORDER BY t_exptime DESC"),
]


def examples_xhtml() -> bytes:
    parts = []
    for ident, title, text, query in EXAMPLES:
        parts.append(f'  <div id="{ident}" resource="#{ident}" typeof="example">\n'
                     f'    <h2 property="name">{escape(title)}</h2>\n'
                     f"    <p>{escape(text)}</p>\n"
                     f'    <pre class="dali-example-query" property="query">{escape(query)}</pre>\n'
                     "  </div>\n")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<!DOCTYPE html>\n'
            '<html xmlns="http://www.w3.org/1999/xhtml" lang="en">\n'
            "<head><title>Example queries of the DESOM archive's TAP service</title></head>\n"
            '<body vocab="http://www.ivoa.net/rdf/examples#">\n'
            "  <h1>Example queries</h1>\n" + "".join(parts) + "</body>\n</html>\n").encode()
