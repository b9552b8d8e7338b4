"""``netlab report``: the same scenario through the no-mesh baseline, node-routing and in-pod.

For each design the runner stands a lab up, runs the scenario (requests, a bulk transfer, one
captured and one traced connection), reads the kernel objects of every netns, measures a live
enrollment, and tears the lab down. Everything measured goes into one typed :class:`Report`
(``report.json``, with a schema version); Markdown, HTML (inline SVG and CSS, no script, no
fetch) and the side-by-side comparison are rendered from it through jinja2 templates. The report
only reads a lab; the labs it stands up are its own and are gone when it returns.
"""
