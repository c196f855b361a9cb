"""The organisational facts no run can know (controller, DPO, purposes, lawful basis, ...), from a TOML file.

A documented example ships as ``simulation/reports/templates/org.example.toml``. A fact that is missing
stays visibly unfilled in the document as ``[TO BE COMPLETED: <field>]``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from .document import DPIAError, todo

__all__ = ["ORG_FIELDS", "load_org", "org_text", "org_list"]

# Organisational facts: key -> (type, description). Types: "str" or "list" (of strings).
ORG_FIELDS: dict[str, tuple[str, str]] = {
    "controller": ("str", "legal name of the controller (or lead joint controller)"),
    "controller_contact": ("str", "address / e-mail of the controller"),
    "joint_controllers": ("list", "other controllers (the participating hospitals), Art. 26 arrangement"),
    "processors": ("list", "processors (e.g. the party operating the coordinator), Art. 28 contracts"),
    "dpo": ("str", "name of the data protection officer"),
    "dpo_contact": ("str", "contact of the DPO"),
    "project": ("str", "name of the project or study"),
    "purposes": ("list", "specified, explicit purposes (Art. 5(1)(b))"),
    "lawful_basis": ("str", "Art. 6(1) lawful basis, e.g. 'Art. 6(1)(e) public interest task'"),
    "art9_condition": ("str", "Art. 9(2) condition for health data, e.g. 'Art. 9(2)(j) scientific research'"),
    "national_law": ("str", "Member-State law relied on (Art. 9(4), Art. 89 safeguards)"),
    "data_subjects": ("str", "who the data subjects are, e.g. 'adult patients who had a brain MRI'"),
    "data_categories": ("list", "categories of personal data at the sites"),
    "data_sources": ("str", "where the scans come from (PACS, research cohort, ...)"),
    "recipients": ("list", "recipients of the trained model and of results"),
    "retention": ("str", "retention of the scans, the model updates, the model and the run directory"),
    "international_transfers": ("str", "transfers outside the EEA and their Chapter V safeguard, or 'none'"),
    "information_of_subjects": ("str", "how data subjects are informed (Art. 13/14)"),
    "data_subject_rights": ("str", "how rights are exercised (access, objection, erasure: model implications)"),
    "views_of_data_subjects": ("str", "Art. 35(9): views of data subjects or their representatives"),
    "security_measures": ("list", "organisational and site security measures beyond this software"),
    "assessor": ("str", "who carried out this assessment"),
    "dpo_advice": ("str", "the DPO's advice (Art. 35(2)) and whether it was followed"),
    "approver": ("str", "who approves the residual risk on behalf of the controller"),
    "approval_date": ("str", "date of approval"),
    "review_date": ("str", "date of the next review (Art. 35(11))"),
    "prior_consultation": ("str", "Art. 36 prior consultation of the supervisory authority: needed or not, why"),
}



def load_org(path) -> dict:
    """Read and validate the organisation TOML; unknown keys and wrong types raise :class:`DPIAError`."""
    if path is None:
        return {}
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO or device would block or never end
        raise DPIAError(f"organisation file {path} is not a regular file")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise DPIAError(f"organisation file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DPIAError(f"cannot read organisation file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DPIAError(f"organisation file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(ORG_FIELDS))
    if unknown:
        raise DPIAError(f"organisation file {path}: unknown key(s) {', '.join(unknown)}; "
                        f"known keys: {', '.join(ORG_FIELDS)}")
    out = {}
    for key, value in data.items():
        kind = ORG_FIELDS[key][0]
        if kind == "str":
            if not isinstance(value, str):
                raise DPIAError(f"organisation file {path}: {key} must be a string; got {type(value).__name__}")
            value = value.strip()
        else:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DPIAError(f"organisation file {path}: {key} must be a list of strings; got "
                                f"{type(value).__name__}")
            value = [v.strip() for v in value if v.strip()]
        if value:
            out[key] = value
    return out



def org_text(org: dict, key: str) -> str:
    value = org.get(key)
    if value is None:
        return todo(key)
    return "; ".join(value) if isinstance(value, list) else value


def org_list(org: dict, key: str) -> list[str]:
    value = org.get(key)
    if value is None:
        return [todo(key)]
    return list(value) if isinstance(value, list) else [value]
