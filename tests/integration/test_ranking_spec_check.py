"""The ranking server checks its feature spec against the served model's signature at start:
a spec the model cannot take stops the start and names the input; a fitting one serves."""

from __future__ import annotations

import pytest

from rankserve.ranker.spec import SpecError
from rankserve.server.ranking import RankerSettings, RankingApp
from tests.integration import modelserver_support as support
from tests.support.catalog import make_catalog, write_spec

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    with support.serving_test_model(tmp_path_factory, "ranker") as proc:
        yield proc


@pytest.fixture
def catalog(tmp_path):
    # The test model takes context [1, 4] and candidates [?, 6]: embedding 2 + user 1 + found.
    return make_catalog(tmp_path / "c", num_items=300, num_features=support.F, dim=2,
                        user_dim=1)


def settings(catalog, model_server, **kw) -> RankerSettings:
    return RankerSettings(catalog_dir=str(catalog), model_target=model_server.address, port=0,
                          metrics_port=0, grace_s=0.1, **kw)


async def test_a_fitting_spec_serves(catalog, model_server) -> None:
    app = RankingApp(settings(catalog, model_server))
    try:
        assert await app.start() > 0
    finally:
        await app.stop()


async def test_a_spec_the_model_cannot_take_stops_the_start(catalog, model_server, tmp_path):
    # The stores can fill it, the model cannot take it: float64 candidates, a tiled context.
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(write_spec(tmp_path, support.F, support.C).read_text()
                     .replace("dtype: float32, shape: [6]", "dtype: float64, shape: [6]")
                     .replace("per: request,", "per: request, broadcast: client,"))
    app = RankingApp(settings(catalog, model_server, spec=str(wrong)))
    try:
        with pytest.raises(SpecError) as info:
            await app.start()
    finally:
        await app.stop()
    message = str(info.value)
    assert f"does not fit model ranker@latest at {model_server.address}" in message
    assert "input 'candidates'" in message and "float64" in message
    assert "input 'context'" in message and "leading dim is fixed at 1" in message


async def test_a_model_that_cannot_be_asked_is_logged_not_fatal(catalog, caplog) -> None:
    from tests.support.predict_server import NumpyModel, PredictServer

    async with PredictServer(NumpyModel()) as numpy_model:  # no GetModelMetadata
        app = RankingApp(RankerSettings(catalog_dir=str(catalog), port=0, metrics_port=0,
                                        model_target=numpy_model.target, grace_s=0.1))
        try:
            assert await app.start() > 0
        finally:
            await app.stop()
    assert "could not check spec" in caplog.text
