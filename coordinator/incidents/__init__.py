"""Incident records (runbook 004, Step 7): what happened, the timeline the audit log shows, the
measured response and recovery times against the objective of the incident's kind, and the
post-recovery checklist."""
