"""What the real opencode binary does with what the sidecar writes: its runtime's reserved keys,
and a config of hostile gateway ids and names read back as sent. The same reading, written from
opencode's code and run over arbitrary strings, is tests/unit/test_render_properties.py."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from sidecar.catalog import OPENCODE_RESERVED_KEYS, Catalog, ModelInfo
from sidecar.lists.formats import parse_models
from sidecar.opencode.config import dump_config, render_config, rendered_model_ids
from sidecar.settings import Settings
from tests.support.sidecar_process import OPENCODE_BIN

pytestmark = pytest.mark.integration

# Key custody: the variable the rendered config names is the gateway token's.
KEY_ENV = "OPENCODE_SIDECAR_TOKEN"
KEY = "property-token-" + "t" * 32
SETTINGS = Settings(gateway_url="http://gw:4000", gateway_api_key="sk-secret-1")  # type: ignore[arg-type]
PROVIDER = "litellm"


def openrouter(entries: list[tuple[str, str]]) -> list[ModelInfo]:
    return parse_models("openrouter", {"data": [{"id": model_id, "name": name} for model_id, name in entries]}).models


@pytest.mark.skipif(not OPENCODE_BIN.exists(), reason=f"opencode is not installed at {OPENCODE_BIN}")
def test_the_reserved_keys_are_what_opencodes_own_runtime_lists() -> None:
    # A newer opencode on a newer Bun may add a name to Object.prototype; this says so.
    script = "console.log(JSON.stringify(Object.getOwnPropertyNames(Object.prototype)))"
    done = subprocess.run(
        [str(OPENCODE_BIN), "-e", script], env={"BUN_BE_BUN": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert set(json.loads(done.stdout)) == OPENCODE_RESERVED_KEYS


# Fixed hostile ids, and printable strings drawn once from a seeded generator over all of Unicode.
_draw = random.Random(8)
_PRINTABLE_CHARACTERS = [c for c in map(chr, range(0x20, 0x30000)) if c.isprintable() and c != "*"]
DRAWN = ["".join(_draw.choices(_PRINTABLE_CHARACTERS, k=_draw.randrange(1, 40))) for _ in range(40)]
REAL_IDS = [
    "{env:HOSTILE_SECRET}", "{file:./secret.txt}", "a}{env:HOSTILE_SECRET}{b", "//{file:./secret.txt}",
    "// not a comment", 'quote"back\\slash', "\\u007benv:HOSTILE_SECRET\\u007d", "$HOME ${env:HOME}",
    "__proto__", "constructor", "toString", "emoji \U0001f600", "x" * 256,
    *(text for text in DRAWN if text.strip()),
]


@pytest.mark.skipif(not OPENCODE_BIN.exists(), reason=f"opencode is not installed at {OPENCODE_BIN}")
def test_the_real_opencode_reads_hostile_ids_and_names_as_sent(tmp_path: Path) -> None:
    entries = [(model_id, f"/* {{file:./secret.txt}} */ {model_id}"[:256]) for model_id in REAL_IDS]
    models = openrouter(entries)
    # Every id but those opencode cannot hold as a key, which the parser drops (see catalog.py).
    assert {model.id for model in models} == set(REAL_IDS) - OPENCODE_RESERVED_KEYS
    config = render_config({PROVIDER: Catalog(models)}, SETTINGS, {})
    path = tmp_path / "opencode.json"
    path.write_text(dump_config(config), encoding="utf-8")
    (tmp_path / "secret.txt").write_text("LEAKED-FILE")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        **{f"XDG_{kind}_HOME": str(tmp_path / kind.lower()) for kind in ("CONFIG", "DATA", "CACHE", "STATE")},
        "OPENCODE_CONFIG": str(path),
        "OPENCODE_DISABLE_PROJECT_CONFIG": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "HOSTILE_SECRET": "LEAKED-ENV",
        KEY_ENV: KEY,
    }
    done = subprocess.run(
        [str(OPENCODE_BIN), "debug", "config", "--pure"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LEAKED" not in done.stdout
    seen = json.loads(done.stdout)["provider"][PROVIDER]
    expected = rendered_model_ids(config, [PROVIDER])[PROVIDER]
    assert expected == {model.id for model in models}
    assert {model_id: entry["name"] for model_id, entry in seen["models"].items()} == {
        model.id: model.display_name for model in models if model.id in expected
    }
