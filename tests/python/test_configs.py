"""Every example config parses, and the key table in configs/README.md lists exactly the keys
the C++ reader accepts."""
import json
import pathlib
import re

import numpy as np
import pytest

import qdrift as qd

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "quantizers").glob("*.json")), ids=lambda p: p.name)
def test_quantizer_configs_parse_and_run(path):
    q = qd.Quantizer(**json.loads(path.read_text()))
    x = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    if json.loads(q.spec_json())["mode"] == "static" and json.loads(q.spec_json())["format"] == "int":
        q.observe(x)
    assert np.isfinite(q.fake_quant(x)).all()


def test_readme_documents_every_key():
    table = (ROOT / "configs" / "README.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", table, flags=re.M))
    accepted = set(json.loads(qd.Quantizer().spec_json()))
    assert documented == accepted
