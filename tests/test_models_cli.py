"""`jdct models`: the table and the JSON document (schema, golden document, agreement with the registry)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from jdct_cli.cli import main
from jdct_cli.models import MODELS_FORMAT_VERSION, get_model_info, list_models, model_cost

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "schemas" / "models.v1.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
GOLDEN = REPO / "tests" / "golden" / "models.v1.json"


@pytest.fixture(autouse=True, scope="module")
def private_cache(tmp_path_factory):
    """Point the cache location of earlier versions (which kept counts on disk) at an empty folder,
    so that a test can check nothing is written there any more."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("jdct-cache")
    mp.setenv("JDCT_CACHE_DIR", str(path))
    mp.setenv("XDG_CACHE_HOME", str(path))
    yield path
    mp.undo()


def _invoke(*args):
    return CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)


@pytest.fixture(scope="module")
def zoo_json():
    """`jdct models --json` for the whole zoo, run once (counting is the slow part)."""
    result = _invoke("models", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_schema_is_valid_and_versioned():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["properties"]["format_version"] == {"const": MODELS_FORMAT_VERSION}


def test_golden_document_is_reproduced():
    golden = json.loads(GOLDEN.read_text())
    VALIDATOR.validate(golden)
    names = [m["name"] for m in golden["models"]]
    result = _invoke("models", "--json", *names)
    assert result.exit_code == 0
    assert json.loads(result.output) == golden


def test_json_lists_every_registered_network(zoo_json):
    VALIDATOR.validate(zoo_json)
    assert [m["name"] for m in zoo_json["models"]] == list_models()
    for row in zoo_json["models"]:
        info = get_model_info(row["name"])
        assert row["input_kind"] == info.input_kind and row["paper_fps"] == info.paper_fps
        assert row["params"] == model_cost(row["name"]).params
    # The paper's best DCT network is cheaper than the RGB baseline and the RFA ones are not.
    by_name = {m["name"]: m for m in zoo_json["models"]}
    assert by_name["late_concat_rfa_thinner"]["macs"] < by_name["resnet50_rgb"]["macs"] < by_name["upsampling_rfa"]["macs"]


def test_table_shows_each_network_with_its_figures(zoo_json):
    result = _invoke("models")
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert lines[0].split()[:4] == ["name", "input", "params", "GMACs@224"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == list_models()
    for m in zoo_json["models"]:
        cells = rows[m["name"]]
        assert cells[1] == m["input_kind"] and cells[2] == f"{m['params'] / 1e6:.2f}M"
        assert float(cells[3]) == pytest.approx(m["gmacs"], abs=0.005)
        assert cells[6] == ("-" if m["paper_fps"] is None else f"{m['paper_fps']:.0f}")


def test_size_and_names_options():
    result = _invoke("models", "--json", "--size", "448", "upsampling_rfa")
    doc = json.loads(result.output)
    assert doc["size"] == 448 and [m["name"] for m in doc["models"]] == ["upsampling_rfa"]
    assert doc["models"][0]["macs"] == model_cost("upsampling_rfa", 448).macs
    result = _invoke("models", "--long", "dct_frozen")
    assert "frozen" in result.output.splitlines()[1] and "description" in result.output.splitlines()[0]


@pytest.mark.parametrize("args, message", [
    (["models", "no_such_net"], "unknown model 'no_such_net'; known models: resnet50_rgb"),
    (["models", "--size", "100"], "multiple of 16"),
])
def test_bad_input_is_one_clean_line(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_help_explains_the_columns():
    out = subprocess.run([sys.executable, "-m", "jdct_cli", "models", "--help"], capture_output=True, text=True,
                         timeout=60).stdout
    assert "multiply-accumulates" in out and "--json" in out and "Examples" in out


def test_costs_are_counted_afresh_for_any_registered_network(zoo_json, private_cache, monkeypatch):
    """No on-disk cache (it went stale for networks registered from outside jdct): `jdct models`
    writes nothing, and a network registered at run time is counted like the zoo's own."""
    from jdct_cli.models import registry
    from jdct_cli.models.cost import count_cost, example_inputs, zoo_table
    from jdct_cli.models.resnet import resnet_stage
    from jdct_cli.models.zoo import PixelResNet

    assert list(private_cache.iterdir()) == []  # written by nothing, though the whole zoo was counted
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    monkeypatch.setattr(registry, "_INFOS", dict(registry._INFOS))

    @registry.register_model("external_small_net", input_kind="rgb", description="registered by a user")
    def external_small_net(num_classes: int = 1000):
        return PixelResNet([resnet_stage("res2", 2, 1, blocks=1)], num_classes, "rgb")

    (row,) = zoo_table(224, ["external_small_net"])
    model = registry.create_model("external_small_net", 1000).eval()
    assert row["macs"] == count_cost(model, example_inputs("rgb", 224)) > 0
    assert row["params"] == sum(p.numel() for p in model.parameters())
    result = _invoke("models", "external_small_net")
    assert result.exit_code == 0 and "external_small_net" in result.output
    assert list(private_cache.iterdir()) == []
