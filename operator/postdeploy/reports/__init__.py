"""Phase 4 documentation: what people record, the deployment report, and where it is kept.

- ``inputs``     annotations people write with ``kubectl postdeploy`` (notes, lessons,
                 customer impact, reruns) and how they are read back;
- ``documents``  pure: a review (spec, status, notes, final review) becomes a
                 ``Report``: summary, action items, post-mortem, remediation table;
- ``markdown``, ``pages`` and ``charts``: the report as Markdown, and as one
                 self-contained HTML page with inline SVG before/after charts;
- ``store``      the ConfigMap ``<review>-report`` owned by the review, and the
                 Prometheus range queries behind the charts;
- ``publishing`` the report check of phase 4: builds and writes the report (an act
                 the registry runs in the check's slot, not a measurement).
"""
