"""Patients: the flow state machine, the day's board and the clinic's changes, details lookups."""
