"""Incident drills: rehearsals of failures against local fakes of the venues."""
