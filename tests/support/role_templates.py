"""A role's templates rendered as Ansible's template module renders them: trim_blocks, the trailing
newline kept, undefined variables an error, and Ansible's hash filter (the hex digest of the value's
UTF-8 bytes)."""

import hashlib
from pathlib import Path

import jinja2


def environment(role: Path) -> jinja2.Environment:
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(role / "templates"),
        trim_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    templates.filters["hash"] = lambda value, kind="sha1": hashlib.new(kind, str(value).encode()).hexdigest()
    return templates
