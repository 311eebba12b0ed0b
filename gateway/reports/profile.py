"""Report profiles: the layout of a report file, declared in a TOML file, not in code.

The seeds ask for "standard ESI report headers and footers" without defining them, so
which HEADER fields, data columns and TRAILER fields a report carries, and in which
order, is a *profile* (docs/decisions.md D34): a small TOML file that an operator can
copy and change (``[reports] profile = "/etc/poa-gateway/esi.toml"``) when the DNOs agree
on a layout, with no release of the gateway. Two profiles are built in:

- ``dno`` (the default): what a Network Operator needs, keyed on the MPAN and the
  distributor; the Supplier's identity, its DUIS request id and counter are left out
  (they stay in the DSP's own suppression log, and ``dsp`` shows them);
- ``dsp``: every column, for the DSP's own reconciliation.

A profile file::

    name = "dno"                        # written in the HEADER's "profile" field
    description = "..."                 # optional, for people
    header_tag = "HEADER"               # first field of line 1
    trailer_tag = "TRAILER"             # first field of the last line
    header = ["report_name", "report_id", "period_start", "period_end", ...]
    columns = ["alert_id", "alert_code", "mpan", ...]
    trailer = ["records", "sha256", "records_without_mpan"]

Every name must be one of :data:`HEADER_FIELDS`, :data:`COLUMN_FIELDS` or
:data:`TRAILER_FIELDS` (docs/reports.md says what each holds); the HEADER must hold
``report_id``, ``period_start`` and ``period_end``, the TRAILER ``records`` and
``sha256``, the columns ``alert_id``; no name twice. A profile that breaks a rule is
refused at start-up naming the key (``columns[3]: 'mpna' is not a report column``).

What a profile cannot change, so that every report stays checkable the same way: one
HEADER line, one line of column names, the data records, one TRAILER line; CSV as
RFC 4180 with CRLF; times as ISO 8601 UTC with milliseconds; the TRAILER's digest over
the data records' bytes.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Final

import msgspec

from gateway.errors import GatewayError

__all__ = [
    "BUILTIN_PROFILES",
    "COLUMN_FIELDS",
    "DEFAULT_PROFILE_NAME",
    "HEADER_FIELDS",
    "TRAILER_FIELDS",
    "ProfileError",
    "ReportProfile",
    "builtin_profile",
    "load_profile",
]

HEADER_FIELDS: Final = {
    "report_name": "the file name without .csv",
    "report_id": "the period's length, the part and, for a distributor's file, its id "
    "(PT1H-001, PT1H-001-D10)",
    "period_start": "start of the period, inclusive",
    "period_end": "end of the period, exclusive",
    "generator": "the software that wrote the file",
    "version": "its version",
    "profile": "the profile's name",
    "scope": "'all', or the two-digit distributor id of a distributor's file",
    "scope_name": "'all distributors', or the distributor's area and operator",
    "guid_list_sha256": "SHA-256 of the Landis+Gyr GUID list file in force (empty: none)",
    "window": "the suppression window's length in force (ISO 8601 duration)",
    "lead": "the tolerance before an execution time in force (ISO 8601 duration)",
}
"""The fields a HEADER may hold, with what each says."""

COLUMN_FIELDS: Final = {
    "alert_id": "the DCC alert identifier",
    "alert_code": "the DCC alert code (AD1)",
    "mpan": "the 13-digit MPAN core of the meter point (empty: not in the inventory)",
    "distributor_id": "the MPAN core's first two digits (empty without an MPAN)",
    "distributor": "that distribution area and its operator, e.g. 'Eastern (UKPN)'",
    "chf_id": "the Communications Hub Function that raised the AD1",
    "esme_id": "the electricity meter whose firmware activation opened the window",
    "raised_at": "when the CHF raised the alert",
    "received_at": "when the gateway received (and judged) it",
    "window_start": "start of the suppression window it fell into",
    "window_end": "end of that window",
    "activation": "on-demand or future-dated",
    "request_id": "the DUIS request id of the CS06 (empty when none)",
    "originator": "the Supplier that sent the CS06",
    "originator_counter": "the CS06's originator counter (decimal)",
}
"""The columns a report may have, with what each holds."""

TRAILER_FIELDS: Final = {
    "records": "number of data records",
    "sha256": "SHA-256 of the data records' bytes, lowercase hex",
    "records_without_mpan": "data records whose meter has no MPAN in the inventory",
}
"""The fields a TRAILER may hold, with what each says."""

_REQUIRED: Final = {
    "header": ("report_id", "period_start", "period_end"),
    "columns": ("alert_id",),
    "trailer": ("records", "sha256"),
}
_KNOWN: Final = {"header": HEADER_FIELDS, "columns": COLUMN_FIELDS, "trailer": TRAILER_FIELDS}

BUILTIN_PROFILES: Final = ("dno", "dsp")
"""Profiles shipped with the gateway (gateway/reports/profiles/NAME.toml)."""

DEFAULT_PROFILE_NAME: Final = "dno"


class ProfileError(GatewayError):
    """A profile that cannot be used; ``key`` names the key at fault ("" for the file)."""

    def __init__(self, source: str, key: str, detail: str) -> None:
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {detail}")
        self.source = source
        self.key = key
        self.detail = detail


class ReportProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Which HEADER fields, columns and TRAILER fields a report has, in order.

    Build one with :func:`load_profile` or :func:`builtin_profile`, which check it.
    """

    name: str
    """Written in the HEADER's ``profile`` field; 1-40 letters, digits, '.', '_', '-'."""
    description: str = ""
    header_tag: str = "HEADER"
    trailer_tag: str = "TRAILER"
    header: tuple[str, ...]
    columns: tuple[str, ...]
    trailer: tuple[str, ...]


def _check(profile: ReportProfile, source: str) -> ReportProfile:
    name = profile.name
    plain = all(c.isascii() and (c.isalnum() or c in "._-") for c in name)
    if not (1 <= len(name) <= 40 and plain):
        raise ProfileError(source, "name", f"{name!r}: use 1-40 letters, digits, '.', '_', '-'")
    tags = {"header_tag": profile.header_tag, "trailer_tag": profile.trailer_tag}
    for key, tag in tags.items():
        if not (1 <= len(tag) <= 40 and tag.isprintable() and tag.strip() == tag):
            raise ProfileError(source, key, f"{tag!r}: use 1-40 printable characters")
    if profile.header_tag == profile.trailer_tag:
        raise ProfileError(source, "trailer_tag", "must differ from header_tag")
    for section, known in _KNOWN.items():
        names: tuple[str, ...] = getattr(profile, section)
        seen: set[str] = set()
        for index, field in enumerate(names):
            if field not in known:
                raise ProfileError(
                    source,
                    f"{section}[{index}]",
                    f"{field!r} is not a {_what(section)}; known: {', '.join(known)}",
                )
            if field in seen:
                raise ProfileError(source, f"{section}[{index}]", f"{field!r} appears twice")
            seen.add(field)
        for field in _REQUIRED[section]:
            if field not in seen:
                raise ProfileError(source, section, f"must include {field!r}")
    if profile.columns[0] in (profile.header_tag, profile.trailer_tag):
        # Never the case for the known names, which are lowercase; said for clarity.
        raise ProfileError(source, "columns[0]", "must differ from the tags")
    return profile


def _what(section: str) -> str:
    return {"header": "HEADER field", "columns": "report column", "trailer": "TRAILER field"}[
        section
    ]


def _from_toml(data: bytes, source: str) -> ReportProfile:
    try:
        raw: dict[str, Any] = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProfileError(source, "", f"not UTF-8 text: {exc.reason}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(source, "", f"invalid TOML: {exc}") from None
    try:
        profile = msgspec.convert(raw, ReportProfile)
    except msgspec.ValidationError as exc:
        # "Object contains unknown field `colums`" / "Expected `str`, got `int` - at `$.header[2]`"
        text = str(exc)
        message, _, path = text.partition(" - at `$")
        key = path.rstrip("`").removeprefix(".")
        unknown = message.removeprefix("Object contains unknown field `")
        if unknown != message:
            raise ProfileError(source, unknown.rstrip("`"), "unknown key") from None
        missing = message.removeprefix("Object missing required field `")
        if missing != message:
            raise ProfileError(source, missing.rstrip("`"), "missing") from None
        raise ProfileError(source, key, message.replace("`", "'")) from None
    return _check(profile, source)


def builtin_profile(name: str) -> ReportProfile:
    """The built-in profile ``name`` (one of :data:`BUILTIN_PROFILES`).

    Raises:
        ProfileError: no such built-in profile.
    """
    if name not in BUILTIN_PROFILES:
        raise ProfileError(
            name, "", f"not a built-in profile ({', '.join(BUILTIN_PROFILES)}) nor a .toml file"
        )
    data = resources.files("gateway.reports").joinpath("profiles", f"{name}.toml").read_bytes()
    return _from_toml(data, f"built-in profile {name!r}")


def load_profile(spec: str, base: Path | None = None) -> ReportProfile:
    """The profile ``spec`` names: a built-in name (``dno``, ``dsp``) or the path of a
    TOML file (relative paths from ``base``, the config file's folder).

    Raises:
        ProfileError: the file cannot be read, is not TOML, or breaks a rule; the message
            names the file and the key.
    """
    if spec in BUILTIN_PROFILES:
        return builtin_profile(spec)
    if not spec.endswith(".toml"):
        raise ProfileError(
            spec, "", f"not a built-in profile ({', '.join(BUILTIN_PROFILES)}) nor a .toml file"
        )
    path = Path(spec) if base is None else base / spec
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProfileError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    return _from_toml(data, str(path))
