"""Report writers: JSON (the record), CSV (the same numbers, flat) and a self-contained HTML
page with inline SVG charts that opens without network access."""

from rankserve.loadtest.report.document import build_document
from rankserve.loadtest.report.files import flatten, write_all, write_csv, write_json
from rankserve.loadtest.report.html import render_html

__all__ = ["build_document", "flatten", "render_html", "write_all", "write_csv", "write_json"]
