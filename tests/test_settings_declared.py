"""Every service setting is declared once (app/settings.py); the README table, the Ansible role
(defaults, env template) and compose.yaml are checked against that declaration here."""

import re
from pathlib import Path

import yaml

from app.settings import DECLARED
from tests.support.helpers import REPO

README = REPO / "README.md"
ROLE = REPO / "roles" / "video_api"
# Settings the role derives rather than exposes as video_api_<name> (with why).
ROLE_DERIVED = {
    "data_dir": "the role's data path (__video_api_data_dir, from video_api_data_root)",
}
# Role defaults that differ from the service's, on purpose.
ROLE_OVERRIDES: dict[str, str] = {
    "tenants_file": "a path under video_api_config_dir; env.j2 names it only while video_api_tenants lists users",
}
TABLE_START, TABLE_END = "<!-- settings table: generated from app/settings.py -->", "<!-- end of settings table -->"


def shown(value) -> str:
    """A default as the README shows it."""
    if value in ("", ()):
        return "(none)"
    if isinstance(value, tuple):
        value = ",".join(str(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def bounds(spec) -> str:
    low, high = spec.metadata["low"], spec.metadata["high"]
    if low is None:
        return ""
    return f" From {shown(low)} to {shown(high)}." if high is not None else f" At least {shown(low)}."


def settings_table() -> str:
    rows = ["| Setting | Default | Meaning |", "| --- | --- | --- |"]
    for spec in DECLARED:
        name = f"`{spec.metadata['env']}`" + (f", `{spec.metadata['env']}_FILE`" if spec.metadata["file"] else "")
        rows.append(f"| {name} | {shown(spec.default)} | {spec.metadata['doc']}{bounds(spec)} |")
    return "\n".join(rows)


def test_the_readme_table_is_the_declaration():
    text = README.read_text()
    section = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert section == settings_table(), "README settings table drifted; paste:\n" + settings_table()


def _same(role_value, service_value) -> bool:
    if isinstance(service_value, tuple):
        return [str(item) for item in role_value or ()] == [str(item) for item in service_value]
    if isinstance(service_value, float):
        return float(role_value) == service_value
    return str(role_value) == str(service_value)


def test_the_role_exposes_every_setting_with_the_service_default():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    for spec in DECLARED:
        if spec.name in ROLE_DERIVED:
            continue
        variable = f"video_api_{spec.name}"
        assert variable in defaults, f"{variable} missing from roles/video_api/defaults/main.yml"
        if spec.name not in ROLE_OVERRIDES:
            assert _same(defaults[variable], spec.default), (variable, defaults[variable], spec.default)


def test_the_role_renders_every_setting_into_the_environment_file():
    rendered = set(re.findall(r"^([A-Z_]+)=", (ROLE / "templates" / "env.j2").read_text(), re.MULTILINE))
    for spec in DECLARED:
        env = spec.metadata["env"]
        assert env in rendered or f"{env}_FILE" in rendered, f"{env} is not in roles/video_api/templates/env.j2"
    declared = {spec.metadata["env"] for spec in DECLARED}
    assert rendered <= declared | {f"{spec.metadata['env']}_FILE" for spec in DECLARED if spec.metadata["file"]}


def test_compose_passes_every_setting_through():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    service = compose["services"]["video-api"]  # the single host; the cluster profile's replicas share its settings
    environment = set(service["environment"])
    # The image fixes where it listens and keeps its data; everything else comes from the user.
    fixed = {"HOST", "PORT", "VIDEO_API_DATA_DIR"}
    expected = {spec.metadata["env"] for spec in DECLARED} - fixed
    expected |= {f"{spec.metadata['env']}_FILE" for spec in DECLARED if spec.metadata["file"]}
    assert environment == expected, environment ^ expected


def test_no_setting_is_read_from_the_environment_outside_the_declaration():
    for path in Path(REPO / "app").rglob("*.py"):
        if path.name != "settings.py":
            assert not re.search(r"os\.environ|getenv\(", path.read_text()), f"{path} reads the environment itself"
