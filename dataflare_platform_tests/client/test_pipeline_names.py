"""The client checks a pipeline name (``scale``) with the pattern the specs accept it by:
the same names pass both, the same names are refused by both."""

import pytest

from dataflare_platform.client.results import SCALABLE_NAME
from dataflare_platform.errors import ConfigError
from dataflare_platform.streams.spec import PipelineSpec

GOOD = ["hot-items", "bid_counts", "Q5", "x", "a" * 101]
BAD = ["", "5q", "_x", "-x", "bad.name", "bad name", "bad/name", "x\n", "a" * 102]


def _spec(name: str) -> dict:
    return {
        "name": name,
        "sources": {"bids": {"path": "data/bids", "columns": ["auction", "date_time"]}},
        "streams": {"out": {"from": "bids", "steps": [{"select": ["auction"]}]}},
        "output": "out",
        "sink": {"discard": {}},
    }


@pytest.mark.parametrize("name", GOOD)
def test_a_name_the_specs_accept_the_client_accepts(name):
    assert PipelineSpec.load(_spec(name)).name == name
    assert SCALABLE_NAME.fullmatch(name)


@pytest.mark.parametrize("name", BAD)
def test_a_name_the_specs_refuse_the_client_refuses(name):
    with pytest.raises(ConfigError, match="name"):
        PipelineSpec.load(_spec(name))
    assert SCALABLE_NAME.fullmatch(name) is None
