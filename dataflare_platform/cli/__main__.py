"""``python -m dataflare_platform.cli``: the ``dataflare`` command."""

from dataflare_platform.cli.main import app

app(prog_name="dataflare")
