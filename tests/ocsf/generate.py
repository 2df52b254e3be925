#!/usr/bin/env python3
"""Regenerates the vendored OCSF JSON schemas the OCSF test validates against.

Run it by hand when the OCSF version changes (CI never runs it: the test works offline on
the committed files):

    python3 -m venv /tmp/ocsf && /tmp/ocsf/bin/pip install ocsf-json-schema==1.2.0
    /tmp/ocsf/bin/python tests/ocsf/generate.py

`ocsf-json-schema` (PyPI) ships the schema server's own export of each released OCSF
version (`schema.ocsf.io/<version>/export/...`) and turns a class into a self-contained
JSON Schema (draft 2020-12): every object it references under `$defs`, enumerations as
`enum`, `additionalProperties: false`, so a misspelt field or an unknown enum id fails.
"""

import json
import pathlib

from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

VERSION = "1.8.0"
# The profiles the gateway declares in metadata.profiles (disposition, policy).
PROFILES = ["security_control"]
# One file per class entitygate writes (src/audit/ocsf.rs).
CLASSES = [
    "api_activity",
    "authentication",
    "account_change",
    "entity_management",
    "detection_finding",
    "event_log_actvity",  # sic: OCSF's own name for Event Log Activity (1008)
]

# The JSON Schema says which ids exist, not which caption goes with each: captions.json
# keeps, per class, the caption of every id of the enumerations the gateway writes with a
# caption beside them (class_uid/class_name, activity_id/activity_name, ...), so the test
# can hold each caption to its id.
ENUMS = {
    "class_uid": "class_name",
    "category_uid": "category_name",
    "activity_id": "activity_name",
    "type_uid": "type_name",
    "severity_id": "severity",
    "status_id": "status",
    "disposition_id": "disposition",
}

out = pathlib.Path(__file__).parent / VERSION
out.mkdir(exist_ok=True)
export = get_ocsf_schema(VERSION)
schema = OcsfJsonSchemaEmbedded(export)
captions = {}
for name in CLASSES:
    doc = schema.get_class_schema(name, PROFILES)
    (out / f"{name}.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"{out / name}.json")
    attributes = export["classes"][name]["attributes"]
    captions[str(export["classes"][name]["uid"])] = {
        id_field: {
            "caption_field": caption_field,
            "captions": {k: v["caption"] for k, v in attributes[id_field]["enum"].items()},
        }
        for id_field, caption_field in ENUMS.items()
    }
(out / "captions.json").write_text(json.dumps(captions, indent=1, sort_keys=True) + "\n")
