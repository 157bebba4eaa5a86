"""Simulated ATOM Cams and a mediamtx Control API test double, for tests and ``atomrelay demo``."""
