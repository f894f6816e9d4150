"""Pydantic models of every request and response body mservices accepts or sends."""
