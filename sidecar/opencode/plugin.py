"""The plugin the sidecar names in opencode's config: each opencode instance announces its
directory to the sidecar as it boots (http/announce.py), so that a directory loaded by a read
straight on opencode's port is reloaded like one seen through the sidecar.

Measured on opencode 1.18.33: a plain ES module named in the config's `plugin` list by a path
relative to the config file is loaded offline, once per instance boot (a dispose and the next
request boot it again), with that instance's `directory`. A boot (dispose, then
`GET /config/providers`) took 0.26-0.29 s with it, 0.24-0.28 s without (medians of 10, three
interleaved rounds, load average 5-6): ~10 ms, within the noise.
Before opencode loads any plugin it waits for its own `npm install @opencode-ai/plugin` into each
config directory: offline that wait is ~60-70 s per boot (npm's retries). That install is skipped
when the directory has `node_modules/` and a `package-lock.json` whose root names the package, so
the sidecar marks its own config directory so (spawn mode); this plugin imports nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from sidecar.http.announce import ANNOUNCE_PATH
from sidecar.settings import OPENCODE_TOKEN_ENV

PLUGIN_NAME = "opencode-sidecar-instances.js"
# opencode installs this into each of its config directories before it loads a plugin.
OPENCODE_PLUGIN_PACKAGE = "@opencode-ai/plugin"

# Reads no file and needs no package: the token comes from opencode's environment (never written
# here), the sidecar's address is written in. The POST is not awaited: a sidecar that is slow or
# gone must not hold up opencode's boot, and the sidecar learns the directory from clients anyway.
_SOURCE = """\
// Written by opencode-sidecar: opencode announces instance disposals but not loads, so each
// instance tells the sidecar its directory as it boots. Regenerated at every sidecar start.
const ANNOUNCE_URL = %(url)s;
const TOKEN = process.env[%(token_env)s];

export const OpencodeSidecarInstances = async ({ directory }) => {
  if (TOKEN && typeof directory === "string") {
    fetch(ANNOUNCE_URL, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify({ directory }),
      signal: AbortSignal.timeout(5000),
    }).catch(() => {});
  }
  return {};
};
"""


def plugin_source(sidecar_origin: str) -> str:
    return _SOURCE % {"url": json.dumps(sidecar_origin + ANNOUNCE_PATH), "token_env": json.dumps(OPENCODE_TOKEN_ENV)}


def plugin_path(config_path: Path) -> Path:
    """Beside opencode's config: attach mode shares that directory with opencode's container."""
    return config_path.parent / PLUGIN_NAME


def plugin_entry() -> str:
    """How the config names it: relative to the config file, as opencode resolves it, so that
    attach mode works wherever opencode's container mounts the shared directory."""
    return f"./{PLUGIN_NAME}"


def with_plugin(plugins: object) -> list[object]:
    """The operator's own `plugin` entries, then ours (once)."""
    kept = [p for p in plugins if p != plugin_entry()] if isinstance(plugins, list) else []
    return [*kept, plugin_entry()]


def mark_installed(config_dir: Path) -> bool:
    """Make opencode skip its npm install into `config_dir` (see above); True when marked.
    A directory where opencode has installed already (`node_modules` exists) is left alone."""
    modules = config_dir / "node_modules"
    if modules.exists():
        return False
    # Every directory made here is private, parents included (mkdir(parents=True) would make
    # those with the process's umask: 0755), as opencode itself makes them under umask 077.
    missing = [directory for directory in (config_dir, *config_dir.parents) if not directory.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700)
    lock = {"lockfileVersion": 3, "packages": {"": {"dependencies": {OPENCODE_PLUGIN_PACKAGE: "*"}}}}
    (config_dir / "package-lock.json").write_text(json.dumps(lock), encoding="utf-8")
    (config_dir / "package-lock.json").chmod(0o600)
    modules.mkdir(mode=0o700)
    return True
