#!/usr/bin/env bash
# The alert rules as the role installs them: templates/video_api_alerts.yml.j2 rendered with the role's
# defaults, checked by promtool; every alert with a severity, a summary and a description, listed in
# ALERTS.md and tested; then promtool's unit tests (video_api_alerts_test.yml, descriptions left out).
# Run from the repository root by `make lint`; needs promtool (Debian: prometheus).
set -euo pipefail
role=roles/monitoring
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

.venv/bin/ansible localhost -c local -i localhost, -e ansible_python_interpreter="$PWD/.venv/bin/python" \
  -e @"$role/defaults/main/alerts.yml" -m ansible.builtin.template \
  -a "src=$role/templates/video_api_alerts.yml.j2 dest=$tmp/rendered.yml variable_start_string=[[ variable_end_string=]]" \
  >"$tmp/ansible.log" 2>&1 || { cat "$tmp/ansible.log"; exit 1; }
promtool check rules "$tmp/rendered.yml"

.venv/bin/python - "$tmp/rendered.yml" "$role/ALERTS.md" "$role/tests/video_api_alerts_test.yml" "$tmp/video_api_alerts.yml" <<'PY'
import re
import sys

import yaml

rendered, alerts_md, tests, stripped = sys.argv[1:]
rules = yaml.safe_load(open(rendered))
documented = set(re.findall(r"^\| `(\w+)` \|", open(alerts_md).read(), re.M))
tested = {t["alertname"] for case in yaml.safe_load(open(tests))["tests"] for t in case.get("alert_rule_test", [])}
errors, names = [], set()
for group in rules["groups"]:
    for rule in (r for r in group["rules"] if "alert" in r):
        name = rule["alert"]
        names.add(name)
        if rule.get("labels", {}).get("severity") not in ("critical", "warning"):
            errors.append(f"{name}: labels.severity is neither critical nor warning")
        for key in ("summary", "description"):
            if not rule.get("annotations", {}).get(key):
                errors.append(f"{name}: no annotations.{key}")
        errors += [f"{name}: not in {alerts_md}"] * (name not in documented)
        errors += [f"{name}: no test in {tests}"] * (name not in tested)
        rule["annotations"].pop("description", None)
errors += [f"{alerts_md}: {name} is no alert of the rules" for name in sorted(documented - names)]
if errors:
    sys.exit("\n".join(errors))
yaml.safe_dump(rules, open(stripped, "w"), sort_keys=False)
print(f"{len(names)} alerts: each with severity, summary and description, in ALERTS.md, tested")
PY

cp "$role/tests/video_api_alerts_test.yml" "$tmp/"
promtool test rules "$tmp/video_api_alerts_test.yml"
