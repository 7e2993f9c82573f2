"""The schemas of the OpenAPI document (openapi.py): the pydantic models' own, and the answers'
shapes that no model describes."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from sidecar.catalog import ModelInfo, ModelList
from sidecar.http.errors import ERROR_TYPES

STARTUP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"enum": ["started", "starting"]}},
}

MODEL_TRAFFIC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["requests", "errors", "last_error"],
    "properties": {
        "requests": {"type": "integer", "minimum": 0},
        "errors": {"type": "integer", "minimum": 0},  # no answer, a status of 400 or more, or a broken stream
        "last_error": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["status", "message", "at"],
                    "properties": {
                        "status": {"type": ["integer", "null"]},  # null: no answer
                        "message": {"type": "string"},
                        "at": {"type": "number"},  # unix time
                    },
                },
            ]
        },
    },
}

MODEL_FAILING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["kind", "reason", "since", "status", "retries", "next_retry"],
    "properties": {
        "kind": {"enum": ["not_found", "not_allowed", "unavailable"]},
        "reason": {"type": "string"},  # the gateway's words, secrets blanked
        "since": {"type": "number"},  # unix time of the first refusal
        "status": {"type": "integer"},  # the gateway's HTTP status
        "retries": {"type": "integer", "minimum": 0},
        "next_retry": {"type": "number"},  # unix time
    },
}

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["ready", "models", "gateways", "opencode", "reloads", "traffic", "failing", "state_dir"],
    "properties": {
        "ready": {"type": "boolean"},
        "models": {"type": "integer", "minimum": 0},
        "gateways": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": [
                    "models", "catalog_age", "stale", "last_poll_ok", "last_error", "last_success", "shrink_guard", "capped",
                ],
            },
        },
        "opencode": {"type": "object", "required": ["state", "pid", "healthy", "uptime", "restarts", "backoff_until"]},
        "reloads": {"type": "object", "required": ["config_version", "applied_version", "pending_reloads"]},
        # Per gateway, per model (`unknown`: no model named; `other`: past the bound on series).
        "traffic": {
            "type": "object",
            "additionalProperties": {"type": "object", "additionalProperties": MODEL_TRAFFIC_SCHEMA},
        },
        # Per gateway, per listed model it refuses (sidecar/failing.py): only those marked.
        "failing": {
            "type": "object",
            "additionalProperties": {"type": "object", "additionalProperties": MODEL_FAILING_SCHEMA},
        },
        "state_dir": {"type": "object", "required": ["path", "write_error"]},
    },
}


def component_schemas() -> dict[str, Any]:
    """`components.schemas`. The model schemas are the pydantic models' own, so the document
    cannot drift from what the API serves."""
    _, generated = models_json_schema(
        [(ModelList, "serialization"), (ModelInfo, "serialization")], ref_template="#/components/schemas/{model}"
    )
    # Answers are whole model_dump()s: every field is there, defaults included.
    schemas = {name: {**schema, "required": list(schema["properties"])} for name, schema in generated["$defs"].items()}
    # Only on a listed model the gateway refuses (sidecar/failing.py); an ok model has neither.
    schemas["ModelInfo"]["properties"] |= {
        "status": {"const": "failing", "description": "Present only while the gateway refuses the model."},
        "failing": {
            "type": "object",
            "required": ["kind", "reason", "since"],
            "properties": {
                "kind": {"enum": ["not_found", "not_allowed", "unavailable"]},
                "reason": {"type": "string", "description": "The gateway's words."},
                "since": {"type": "number", "description": "Unix time of the first refusal."},
            },
        },
    }
    schemas["Error"] = {
        "description": "An Anthropic API error.",
        "type": "object",
        "required": ["type", "error", "request_id"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {
                    "type": {"enum": sorted({*ERROR_TYPES.values(), "api_error"})},
                    "message": {"type": "string"},
                },
            },
            "request_id": {"type": "string"},
        },
    }
    schemas["Resolution"] = {
        "description": "The model's record, and how opencode names it.",
        "allOf": [
            {"$ref": "#/components/schemas/ModelInfo"},
            {
                "type": "object",
                "required": ["opencode"],
                "properties": {"opencode": {"$ref": "#/components/schemas/OpencodeModel"}},
            },
        ],
    }
    schemas["OpencodeModel"] = {
        "type": "object",
        "required": ["providerID", "modelID"],
        "properties": {"providerID": {"type": "string"}, "modelID": {"type": "string"}},
    }
    schemas["ResolveRequest"] = {
        "type": "object",
        "required": ["model"],
        "properties": {
            "model": {
                "description": "As the agent names it: `name`, `provider/name`, or opencode's pair.",
                "oneOf": [{"type": "string"}, {"$ref": "#/components/schemas/OpencodeModel"}],
            },
            "directory": {"type": "string", "description": "The absolute path the agent works in."},
        },
        "example": {"model": "anthropic/claude-sonnet-4-5", "directory": "/work/project"},
    }
    gateway_poll = {
        "type": "object",
        "required": ["gateway", "ok", "changed", "models", "added", "removed", "error"],
        "properties": {
            "gateway": {"type": "string"}, "ok": {"type": "boolean"}, "changed": {"type": "boolean"},
            "models": {"type": "integer"}, "added": {"type": "array", "items": {"type": "string"}},
            "removed": {"type": "array", "items": {"type": "string"}}, "error": {"type": ["string", "null"]},
        },
    }
    schemas["Refresh"] = {
        "type": "object",
        "required": ["gateways", "applied", "waiting_for_idle"],
        "properties": {
            "gateways": {"type": "array", "items": gateway_poll},
            "applied": {"type": "boolean", "description": "Every directory without a running prompt lists it."},
            "waiting_for_idle": {"type": "array", "items": {"type": "string"}},
        },
    }
    schemas["ModelDeleted"] = {
        "type": "object",
        "required": ["id", "type"],
        "properties": {"id": {"type": "string"}, "type": {"const": "model_deleted"}},
    }
    schemas["Readiness"] = {
        "description": "What readiness depends on; more fields than `ready` may come and go.",
        "type": "object",
        "required": ["ready"],
        "properties": {"ready": {"type": "boolean"}},
    }
    return schemas


# `/v1/catalogs`: the records are Catalog.to_json's, which leaves out fields at their defaults.
CATALOG_INDEX_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["gateway", "version", "models"],
                "properties": {
                    "gateway": {"type": "string"},
                    "version": {"type": ["string", "null"]},
                    "models": {"type": "integer", "minimum": 0},
                },
            },
        }
    },
}
CATALOG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["gateway", "version", "listed", "models", "wildcards"],
    "properties": {
        "gateway": {"type": "string"},
        "version": {"type": "string", "description": "A hash of the content; the ETag"},
        "listed": {"type": "integer", "minimum": 0, "description": "How many the gateway listed, before the cap"},
        "models": {"type": "array", "items": {"type": "object", "required": ["id"]}},
        "wildcards": {"type": "array", "items": {"type": "string"}, "description": "LiteLLM's wildcard routes"},
    },
}
