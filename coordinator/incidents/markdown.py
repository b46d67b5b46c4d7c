"""An incident record as Markdown: runbook 004's recovery log (date, issue, root cause, actions
taken, outcome, lessons learned), then the timeline, the measured times against the objective,
the notes and the post-recovery checklist."""

from __future__ import annotations

from typing import Any

from coordinator.incidents.model import KIND_DESCRIPTIONS, IncidentKind


def duration(seconds: float | None) -> str:
    """`95.2` -> `1 min 35 s`; None -> `not measured`."""
    if seconds is None:
        return "not measured"
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f} s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours} h " if hours else "") + f"{minutes} min {secs} s"


def verdict(measurement: dict[str, Any]) -> str:
    met = measurement.get("objective_met")
    objective = duration(measurement["objective_seconds"])
    if met is None:
        waiting = ", ".join(measurement.get("bots_not_back") or []) or "no bots recorded"
        return f"not measured: not recovered yet (waiting for {waiting}); objective {objective}"
    took = duration(measurement["recover_seconds"])
    return f"{'MET' if met else 'MISSED'}: recovered in {took} (objective {objective})"


def to_markdown(record: dict[str, Any]) -> str:
    kind = IncidentKind(record["kind"])
    m = record["measurement"]
    title = f"# Incident #{record['id']}{' (drill)' if record['drill'] else ''}: {record['issue']}"
    actions = record["actions_taken"]
    closed = ""
    if record["closed_at"]:
        closed = f" at {record['closed_at']} by {record['closed_by']}"
    lines = [
        title,
        "",
        f"- **Date:** {record['detected_at']}",
        f"- **Kind:** {kind.value} ({KIND_DESCRIPTIONS[kind]}, objective "
        f"{duration(record['objective_seconds'])})",
        f"- **Status:** {record['status']}{closed}",
        f"- **Opened:** {record['opened_at']} by {record['opened_by']}"
        + (f" ({record['source']})" if record["source"] else ""),
        f"- **Bots affected:** {', '.join(record['bots']) or 'none recorded'}",
        f"- **Issue:** {record['issue']}",
        f"- **Root cause:** {record['root_cause'] or '(not yet known)'}",
        "- **Actions taken:**" + ("" if actions else " (none recorded)"),
        *[f"  - {action}" for action in actions],
        f"- **Outcome:** {record['outcome'] or '(open)'}",
        f"- **Lessons learned:** {record['lessons_learned'] or '(none recorded)'}",
        "",
        "## Timeline",
        "",
        "| milestone | at | audit entry | what |",
        "|---|---|---|---|",
        *[
            f"| {ms['name'].replace('_', ' ')} | {ms['at']} | "
            f"{'#' + str(ms['audit_id']) if ms['audit_id'] is not None else ''} | {ms['what']} |"
            for ms in m["milestones"]
        ],
        "",
        "## Recovery time",
        "",
        f"- **Time to respond** (detected to kill switch): {duration(m['respond_seconds'])}",
        f"- **Time to recover** (detected to all bots back): {duration(m['recover_seconds'])}",
        f"- **Objective:** {verdict(m)}",
        "",
        "## Notes",
        "",
        *([f"- {n['at']} {n['author']} ({n['kind']}): {n['text']}" for n in record["notes"]]
          or ["(none)"]),
        "",
        "## Post-recovery checklist (runbook 004)",
        "",
        *[
            f"- [{'x' if item['ticked'] else ' '}] {item['item']} (`{item['key']}`)"
            + (f", {item['by']} at {item['at']}" if item["ticked"] else "")
            for item in record["checklist_items"]
        ],
        "",
    ]
    return "\n".join(lines)
