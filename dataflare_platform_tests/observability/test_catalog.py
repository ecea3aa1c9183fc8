"""docs/observability.md lists exactly the metrics of the metric list."""

from __future__ import annotations

from dataflare_platform.observability.catalog import METRICS, markdown_table
from dataflare_platform_tests.conftest import REPO_ROOT


def test_the_doc_lists_every_metric():
    doc = (REPO_ROOT / "docs" / "observability.md").read_text()
    begin, end = "<!-- metrics:begin -->\n", "<!-- metrics:end -->"
    listed = doc[doc.index(begin) + len(begin) : doc.index(end)]
    assert listed == markdown_table(), "regenerate it with: dataflare metrics list"
    for m in METRICS:
        assert f"| `{m.name}` | {m.kind} |" in listed
