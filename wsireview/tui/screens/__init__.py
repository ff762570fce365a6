"""Screens of the review app: slides (start), triage, summary, model versions, help, retrain."""
